"""Tests of council.store: migrations, the write/read round trip, run ids, errors, and no secret stored.

The round-trip tests run on SQLite and, when a driver is installed and the server answers, on PostgreSQL at
127.0.0.1:5432 (in a fresh database of their own, dropped afterwards).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text

from council.store import db as store_module
from council.calls.answers import Citation, Claim, MemberAnswer, MemberFailure
from council.config.catalog import ModelEntry
from council.errors import RunNotFound, StoreError
from council.config.policy import TaskPolicy
from council.calls.records import CallRecord
from council.store.db import Store
from council.deliberation.verdict import FailedMember, Verdict

from conftest import GREAT_WALL, panel_config, panel_script

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def opened() -> Iterator[list[Store]]:
    """Stores opened by a test; their connection pools are closed at teardown."""
    stores: list[Store] = []
    yield stores
    for s in stores:
        s.engine.dispose()


@pytest.fixture
def store(url: str, opened: list[Store]) -> Store:
    s = Store(url)
    opened.append(s)
    return s


# ------------------------------------------------------------------------------------------ records


MEMBER_POLICY = TaskPolicy(name="research", panel_size=2, quorum=2, timeout_s=5.0)
ADJ_POLICY = TaskPolicy(name="adjudication", panel_size=1, quorum=1)
MODELS = [
    ModelEntry(name="m-a", model="openai/m-a", api_base="http://127.0.0.1:9/v1", api_key_env="A_KEY",
               provider="prov-a", capabilities=frozenset({"text", "json_schema"}), quality=80,
               input_usd_per_mtok=1.0, output_usd_per_mtok=2.0, context_window=8000),
    ModelEntry(name="m-b", model="openai/m-b", provider="prov-b", quality=70, local=True,
               input_usd_per_mtok=0.0, output_usd_per_mtok=0.0, capabilities=frozenset({"text", "local"})),
]


def _call(run_id: str, n: int, *, model: str = "m-a", status: str = "ok", cost: float = 0.001,
          member: str = "A", **kw: Any) -> CallRecord:
    fields: dict[str, Any] = dict(
        call_id=f"{run_id}-call-{n}", run_id=run_id, node="member", member_label=member, model_requested="m-a",
        model=model, model_reported=model, provider="prov-a", policy_name=MEMBER_POLICY.name,
        policy_version=MEMBER_POLICY.version, template_name="member.j2", template_hash="abcdef012345",
        attempt=n, status=status, prompt_tokens=100 * n, completion_tokens=10 * n, cost_usd=cost,
        cost_source="catalog", latency_s=0.25, request_id=f"chatcmpl-{n}",
        started_at=T0 + timedelta(seconds=n), finished_at=T0 + timedelta(seconds=n, milliseconds=250),
    )
    fields.update(kw)
    return CallRecord(**fields)


def _answer(run_id: str, call_id: str) -> MemberAnswer:
    answer_id = f"{run_id}-ans-A"
    claims = [
        Claim(claim_id=f"{run_id}-c1", run_id=run_id, answer_id=answer_id, member_label="A", model="m-a",
              text="The wall is not visible to the naked eye.", confidence=0.9,
              citations=[Citation(source_id="S1", quote="cannot be seen")]),
        Claim(claim_id=f"{run_id}-c2", run_id=run_id, answer_id=answer_id, member_label="A", model="m-a",
              text="It is about 6 m wide.", confidence=0.75),
    ]
    return MemberAnswer(answer_id=answer_id, run_id=run_id, member_label="A", model="m-a", call_id=call_id,
                        answer="No.", label=None, claims=claims, raw_text='{"answer": "No.", "claims": [...]}')


def _failure(run_id: str, call_ids: list[str]) -> MemberFailure:
    return MemberFailure(run_id=run_id, member_label="B", model_requested="m-b", error_kind="rate_limit",
                         reason="m-b: RateLimitError: rate limit reached", call_ids=call_ids,
                         raw_text=None)


def _verdict(run_id: str, support: list[str]) -> Verdict:
    return Verdict(
        verdict_id=f"{run_id}-verdict", run_id=run_id, answer="No, it is not visible.", confidence=0.8,
        agreement=1.0, support=support, contradicted=[], rationale="scripted", decided_by="adjudicator",
        adjudicator_call_id=f"{run_id}-call-9", members_total=2, members_answered=1, quorum=2, quorum_met=False,
        degraded=True, degraded_reasons=["member B (m-b) failed: rate_limit"],
        failed_members=[FailedMember(member_label="B", model="m-b", error_kind="rate_limit", reason="429")],
    )


def _start(s: Store, run_id: str, created_at: datetime = T0, question: str = GREAT_WALL) -> None:
    s.start_run(
        run_id=run_id, task="ask", question=question, recipe="council", member_policy=MEMBER_POLICY,
        adjudication_policy=ADJ_POLICY,
        panel=[{"label": "A", "chain": ["m-a", "m-b"]}, {"label": "B", "chain": ["m-b", "m-a"]}],
        models=MODELS, created_at=created_at,
    )


# ------------------------------------------------------------------------------------------ migrations


def _migration_rows(s: Store) -> list[tuple[str, Any]]:
    with s.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT name, applied_at FROM council_migrations ORDER BY name"))]


def test_migrations_are_recorded_once_and_reopening_applies_nothing(url: str, opened: list[Store]):
    first = Store(url)
    opened.append(first)
    rows = _migration_rows(first)
    assert [name for name, _ in rows] == sorted(name for name, _ in store_module.MIGRATIONS)
    assert len({name for name, _ in rows}) == len(rows)

    second = Store(url)
    opened.append(second)
    assert second.migrate() == []
    assert _migration_rows(second) == rows  # same rows, same applied_at

    tables = set(inspect(second.engine).get_table_names())
    assert {"council_migrations", "runs", "policies", "run_models", "calls", "answers", "claims",
            "member_failures", "verdicts"} <= tables


def test_a_new_migration_is_applied_exactly_once(url: str, opened: list[Store], monkeypatch: pytest.MonkeyPatch):
    opened.append(Store(url))  # the database as released
    runs: list[str] = []

    def _m9999_note(conn: Any) -> None:
        runs.append("ran")
        conn.execute(text("CREATE TABLE test_note (id INTEGER PRIMARY KEY)"))

    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, ("9999_note", _m9999_note)])
    upgraded = Store(url)
    opened.append(upgraded)
    again = Store(url)
    opened.append(again)
    assert again.migrate() == []
    assert runs == ["ran"]
    assert "9999_note" in [n for n, _ in _migration_rows(again)]
    assert "test_note" in inspect(again.engine).get_table_names()


def test_a_failing_migration_is_a_store_error_and_is_not_recorded(tmp_path: Path, opened: list[Store],
                                                                   monkeypatch: pytest.MonkeyPatch):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    opened.append(Store(url))

    def _m9998_broken(conn: Any) -> None:
        conn.execute(text("ALTER TABLE no_such_table ADD COLUMN x INTEGER"))

    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, ("9998_broken", _m9998_broken)])
    with pytest.raises(StoreError, match="cannot open database"):
        Store(url)
    monkeypatch.undo()
    fine = Store(url)
    opened.append(fine)
    assert "9998_broken" not in [n for n, _ in _migration_rows(fine)]


# ------------------------------------------------------------------------------------------ round trip


def test_run_round_trip_gives_equal_records(store: Store):
    run_id = "run-" + uuid.uuid4().hex
    _start(store, run_id)
    failed = _call(run_id, 1, model="m-b", member="B", status="failed", cost=0.0, cost_source="none",
                   error_kind="rate_limit", error_message="RateLimitError: 429", prompt_tokens=0, completion_tokens=0,
                   request_id=None, model_reported=None, provider="prov-b", model_requested="m-b")
    ok = _call(run_id, 2, cost=0.00012)
    judge = _call(run_id, 9, node="adjudicate", member="adjudicator", policy_name=ADJ_POLICY.name,
                  policy_version=ADJ_POLICY.version, template_name="adjudicator.j2", cost=0.0031)
    for rec in (failed, ok, judge):
        store.add_call(rec)
    answer = _answer(run_id, ok.call_id)
    store.add_answer(answer)
    failure = _failure(run_id, [failed.call_id])
    store.add_failure(failure)
    verdict = _verdict(run_id, [c.claim_id for c in answer.claims])
    total = store.finish_run(run_id, verdict, "degraded")
    assert total == pytest.approx(0.00012 + 0.0031)

    run = store.load_run(run_id)
    assert run.run_id == run_id
    assert run.created_at == T0
    assert run.finished_at is not None and run.finished_at > T0
    assert (run.task, run.question, run.status, run.recipe) == ("ask", GREAT_WALL, "degraded", "council")
    assert run.member_policy == MEMBER_POLICY
    assert run.member_policy.version == MEMBER_POLICY.version
    assert run.adjudication_policy == ADJ_POLICY
    assert run.panel == [{"label": "A", "chain": ["m-a", "m-b"]}, {"label": "B", "chain": ["m-b", "m-a"]}]
    assert sorted(run.models, key=lambda m: m.name) == MODELS
    assert run.calls == [failed, ok, judge]  # in the order they started
    assert run.answers == [answer]
    assert run.answers[0].claims[0].citations == [Citation(source_id="S1", quote="cannot be seen")]
    assert run.failures == [failure]
    assert run.verdict == verdict
    assert run.total_cost_usd == pytest.approx(total)


def test_add_call_is_idempotent_on_call_id(store: Store):
    run_id = "run-" + uuid.uuid4().hex
    _start(store, run_id)
    rec = _call(run_id, 1, cost=0.002)
    store.add_call(rec)
    store.add_call(rec)
    store.add_call(rec.model_copy())
    with store.engine.connect() as conn:
        n = conn.execute(text("SELECT COUNT(*) FROM calls WHERE call_id = :c"), {"c": rec.call_id}).scalar_one()
    assert n == 1
    assert store.load_run(run_id).calls == [rec]
    assert store.finish_run(run_id, None, "done") == pytest.approx(0.002)  # charged once


def test_total_cost_is_the_sum_of_the_call_records(store: Store):
    run_id = "run-" + uuid.uuid4().hex
    other = "run-" + uuid.uuid4().hex
    _start(store, run_id)
    _start(store, other)
    costs = [0.0011, 0.0, 0.0234, 0.5, 1e-6]
    for i, cost in enumerate(costs, start=1):
        store.add_call(_call(run_id, i, cost=cost))
    store.add_call(_call(other, 1, cost=7.0))  # another run's call never counts
    assert store.finish_run(run_id, None, "done") == pytest.approx(sum(costs))
    run = store.load_run(run_id)
    assert run.total_cost_usd == pytest.approx(sum(costs))
    assert run.total_cost_usd == pytest.approx(sum(c.cost_usd for c in run.calls))
    assert run.verdict is None and run.status == "done"
    summary = {r.run_id: r for r in store.list_runs()}[run_id]
    assert summary.total_cost_usd == pytest.approx(sum(costs))


def test_finish_run_of_an_unknown_run_is_run_not_found(store: Store):
    with pytest.raises(RunNotFound, match="no run nope"):
        store.finish_run("nope", None, "done")


def test_list_runs_is_newest_first_and_limited(store: Store):
    ids = [f"run-{i}-" + uuid.uuid4().hex[:8] for i in range(4)]
    for i in (2, 0, 3, 1):  # written out of order
        _start(store, ids[i], created_at=T0 + timedelta(minutes=i), question=f"question {i}?")
    store.finish_run(ids[3], _verdict(ids[3], []), "degraded")
    runs = store.list_runs()
    assert [r.run_id for r in runs] == [ids[3], ids[2], ids[1], ids[0]]
    assert [r.question for r in runs] == ["question 3?", "question 2?", "question 1?", "question 0?"]
    assert runs[0].status == "degraded" and runs[0].verdict == "No, it is not visible." and runs[0].degraded
    assert runs[1].status == "running" and runs[1].verdict is None
    assert [r.run_id for r in store.list_runs(limit=2)] == [ids[3], ids[2]]


def test_resolve_run_id_by_prefix(store: Store):
    _start(store, "abc123aaaa")
    _start(store, "abd456bbbb")
    assert store.resolve_run_id("abc123aaaa") == "abc123aaaa"
    assert store.resolve_run_id("abc") == "abc123aaaa"
    assert store.resolve_run_id("abd4") == "abd456bbbb"
    assert store.load_run("abd").run_id == "abd456bbbb"
    with pytest.raises(RunNotFound, match="ambiguous"):
        store.resolve_run_id("ab")
    with pytest.raises(RunNotFound) as err:
        store.resolve_run_id("zzz")
    assert "no run with id 'zzz'" in str(err.value)
    assert isinstance(err.value, StoreError)
    with pytest.raises(RunNotFound):
        store.load_run("abc123aaaaX")


def test_like_wildcards_in_a_prefix_match_only_themselves(store: Store):
    _start(store, "abc123aaaa")
    for wildcard in ("%", "_bc", "a%"):
        with pytest.raises(RunNotFound, match="no run with id"):
            store.resolve_run_id(wildcard)


# ------------------------------------------------------------------------------------------ errors


def test_unwritable_path_is_a_store_error(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError) as err:
        Store(f"sqlite:///{blocker / 'sub' / 'council.db'}")
    assert "cannot open database" in str(err.value)
    assert str(blocker) in str(err.value)


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path):
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not an sqlite database, just some text that is long enough " * 20)
    with pytest.raises(StoreError, match="cannot open database"):
        Store(f"sqlite:///{bogus}")


def test_unreachable_server_is_a_store_error_without_the_password():
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError) as err:
        Store("postgresql+psycopg://council:hunter2secret@127.0.0.1:1/council?connect_timeout=2")
    assert "cannot open database" in str(err.value)
    assert "hunter2secret" not in str(err.value)


def test_unknown_dialect_is_a_store_error():
    with pytest.raises(StoreError) as err:
        Store("mysql+nosuchdriver_xyz://u@127.0.0.1/db")
    assert str(err.value).startswith("cannot open database mysql+nosuchdriver_xyz://u@127.0.0.1/db: ")


def test_missing_driver_is_a_store_error_naming_it():
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("psycopg2 is installed here")
    with pytest.raises(StoreError, match=r"driver missing \(psycopg2\)"):
        Store("postgresql+psycopg2://u@127.0.0.1:1/db")


# ------------------------------------------------------------------------------------------ secrets


def _dump_every_table(s: Store) -> str:
    parts: list[str] = []
    with s.engine.connect() as conn:
        for table in inspect(s.engine).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                parts.extend(str(v) for v in row)
    return "\n".join(parts)


def test_no_api_key_value_is_ever_stored(scripted, db_url: str, monkeypatch: pytest.MonkeyPatch):
    import council

    secret = "cncl-" + uuid.uuid4().hex + "-topsecret"
    monkeypatch.setenv("COUNCIL_TEST_PROVIDER_KEY", secret)
    script = panel_script(**{"m-b": {"latency": 0.05, "answers": [{"content": "not json at all"}],
                                     "faults": [{"kind": "500", "attempts": [1]}]}})
    srv = scripted(script)
    config = panel_config(srv.base_url)
    for entry in config["models"].values():
        entry["api_key_env"] = "COUNCIL_TEST_PROVIDER_KEY"
    result = council.Council(config, db=db_url).ask(GREAT_WALL)

    # The run really happened, with failed and invalid calls whose error messages were stored.
    assert len(result.calls) >= 4
    assert {r.status for r in result.calls} >= {"ok", "failed"}
    s = Store(db_url)
    try:
        dump = _dump_every_table(s)
    finally:
        s.engine.dispose()
    assert GREAT_WALL in dump
    assert "COUNCIL_TEST_PROVIDER_KEY" in dump  # the env var *name* is kept with each model entry
    assert secret not in dump
    assert secret[5:25] not in dump  # not even a fragment


# ------------------------------------------------------------------------------------------ naming a database

def test_one_resolver_takes_urls_and_plain_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from council.config.settings import config_from_dict
    from council.store.db import resolve_db_url

    monkeypatch.chdir(tmp_path)
    assert resolve_db_url(str(tmp_path / "a.db")) == f"sqlite:///{tmp_path / 'a.db'}"
    assert resolve_db_url(tmp_path / "a.db") == f"sqlite:///{tmp_path / 'a.db'}"  # a Path too
    assert resolve_db_url("rel.db") == f"sqlite:///{tmp_path / 'rel.db'}"  # relative to the working directory
    assert resolve_db_url("postgresql://u@127.0.0.1/db") == "postgresql://u@127.0.0.1/db"
    assert resolve_db_url(":memory:") == "sqlite:///:memory:"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_db_url("~/home.db") == f"sqlite:///{tmp_path / 'home.db'}"
    # the config's database: a relative path is relative to the config file, and --db wins over it
    (tmp_path / "conf").mkdir()
    cfg = config_from_dict({"database": "in-conf.db"}, source=str(tmp_path / "conf" / "council.toml"))
    assert resolve_db_url(None, config=cfg) == f"sqlite:///{tmp_path / 'conf' / 'in-conf.db'}"
    assert resolve_db_url("other.db", config=cfg) == f"sqlite:///{tmp_path / 'other.db'}"
    # then COUNCIL_DB (a path or a URL), then the user data directory
    monkeypatch.setenv("COUNCIL_DB", "env.db")
    assert resolve_db_url(None) == f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.delenv("COUNCIL_DB")
    assert resolve_db_url(None).endswith("/council/council.db")


@pytest.mark.parametrize("name", ["missing-dir/council.db", "sqlite:///{tmp}/missing-dir/council.db"])
def test_a_database_in_a_missing_directory_is_an_error_and_creates_nothing(tmp_path: Path, name: str) -> None:
    from council.store.db import resolve_db_url

    name = name.replace("{tmp}", str(tmp_path)) if "://" in name else str(tmp_path / name)
    with pytest.raises(StoreError, match=r"cannot open database .*missing-dir/council.db: the directory .*missing-dir "
                                         r"does not exist \(create it first\)"):
        resolve_db_url(name)
    with pytest.raises(StoreError, match="does not exist"):
        Store(name)
    with pytest.raises(StoreError, match="is a directory"):
        Store(str(tmp_path))
    assert not (tmp_path / "missing-dir").exists()


def test_a_lazy_store_creates_its_file_on_first_use(tmp_path: Path) -> None:
    path = tmp_path / "lazy.db"
    lazy = Store(str(path), lazy=True)
    assert not path.exists()
    assert lazy.list_runs() == [] and path.exists()
    assert [n for n, _ in _migration_rows(lazy)] == sorted(n for n, _ in store_module.MIGRATIONS)
