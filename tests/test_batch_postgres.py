"""Batches on the real PostgreSQL server (127.0.0.1:5432, user postgres; ``.ci/run`` starts it): the
same batch and resume as on SQLite, and two ``council check`` processes sharing one database and one
input, splitting the claims between them through atomic leases, with no claim checked twice.

Each test gets a database of its own, ``council_test_<hex>``, dropped afterwards, so developers running
the suite at the same time do not collide."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import text

from conftest import to_toml
from council.batch.runner import check_many
from council.store.db import Store
from support import (DISPUTED, assert_one_record_per_call, batch_config, claims, cli_env, finish, members_script, start,
                     write_jsonl)

def _count(url: str, sql: str) -> int:
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())
    finally:
        store.engine.dispose()


def test_batch_and_rerun_on_postgres(scripted, tmp_path: Path, pg_url: str) -> None:
    server = scripted(members_script())
    path = write_jsonl(tmp_path / "claims.jsonl", claims(10) + [{"id": "d", "claim": f"{DISPUTED} claim."}, "{bad"])
    cfg = batch_config(server.base_url)
    report = check_many(path, config=cfg, db=pg_url, concurrency=8, budget_usd=1.0, out=tmp_path / "out.jsonl")
    assert report.counts == {"full": 10, "degraded": 1, "invalid": 1} and report.contested == 1
    assert report.database.startswith("postgresql+psycopg://postgres@127.0.0.1:5432/council_test_")
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["status"] for x in lines] == ["full"] * 10 + ["degraded", "invalid"]
    assert report.total_cost_usd == pytest.approx(sum(x["cost_usd"] for x in lines))
    assert_one_record_per_call(pg_url, server)
    before = server.stats()["total_requests"]
    again = check_many(path, config=cfg, db=pg_url, concurrency=8)
    assert again.checked == 0 and server.stats()["total_requests"] == before
    assert _count(pg_url, "SELECT COUNT(*) FROM runs") == 11


def test_two_processes_share_one_batch_without_duplicate_work(scripted, tmp_path: Path, pg_url: str) -> None:
    server = scripted(members_script(latency=0.25))
    cfg = tmp_path / "council.toml"
    cfg.write_text(to_toml(batch_config(server.base_url)), encoding="utf-8")
    n = 48
    path = write_jsonl(tmp_path / "claims.jsonl", claims(n))
    Store(pg_url).engine.dispose()  # create the schema first, as a user's first command would
    procs = [start(["check", str(path), "-c", str(cfg), "--db", pg_url, "-j", "4", "-q"], cli_env(tmp_path / "default.db"))
             for _ in range(2)]
    outs = [finish(p).result() for p in procs]
    checked = []
    for code, out, err in outs:
        assert code == 0, err
        checked.append(int(re.search(r"checked (\d+) claims", out).group(1)))  # type: ignore[union-attr]
    assert sum(checked) == n and min(checked) > 0, checked  # both worked, together exactly once per claim
    assert _count(pg_url, "SELECT COUNT(*) FROM batch_items WHERE status = 'full'") == n
    assert _count(pg_url, "SELECT COUNT(*) FROM batch_items WHERE leases != 1") == 0  # no claim taken twice
    assert _count(pg_url, "SELECT COUNT(*) FROM runs") == n
    assert _count(pg_url, "SELECT COUNT(*) FROM calls") == server.stats()["total_requests"] == 3 * n
