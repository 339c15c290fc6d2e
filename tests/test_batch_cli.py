"""``council check FILE`` (and ``python -m council.batch``) as real subprocesses against the scripted
server in this process: results files, exit codes, bad rows on stderr, and a ``kill -9`` in the middle of
a batch followed by a rerun that finishes it with exactly one call record per model call made."""

from __future__ import annotations

import csv
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from conftest import to_toml
from support import DISPUTED, batch_config, claims, cli_env, db_rows, finish, members_script, start, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def _start(args: list[str], tmp: Path, module: str = "council") -> Any:
    return start(args, cli_env(tmp / "default.db", columns=200), module)


def test_exit_codes_results_files_bad_rows_and_module_entry(scripted, tmp_path: Path) -> None:
    server = scripted(members_script())
    cfg = tmp_path / "council.toml"
    cfg.write_text(to_toml(batch_config(server.base_url)), encoding="utf-8")
    contested = write_jsonl(tmp_path / "contested.jsonl", claims(3) + [{"id": "d", "claim": f"{DISPUTED} claim."}])
    bad = tmp_path / "bad.csv"
    bad.write_text("claim,id\nThe bridge opened in 1932.,b1\n,b2\nThe tower is 300 m tall.,b3,extra\n" + "y" * 300 + ",b4\n",
                   encoding="utf-8")
    common = ["-c", str(cfg), "-q"]
    procs = {
        "contested": _start(["check", str(contested), "--db", str(tmp_path / "a.db"), "--out", str(tmp_path / "a.csv"), *common], tmp_path),
        "module": _start([str(bad), "--db", str(tmp_path / "b.db"), "--out", "-", "-j", "2", "--exit-zero",
                          "--max-claim-chars", "200", *common], tmp_path, module="council.batch"),
        "missing": _start(["check", str(tmp_path / "nope.jsonl"), "--db", str(tmp_path / "d.db"), *common], tmp_path),
    }
    done = {name: finish(p).result() for name, p in procs.items()}

    code, out, err = done["contested"]
    assert code == 1, err
    with (tmp_path / "a.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["id"], r["status"], r["contested"]) for r in rows] == [
        ("c0", "full", "False"), ("c1", "full", "False"), ("c2", "full", "False"), ("d", "degraded", "True")]
    assert all(r["run_id"] and float(r["cost_usd"]) > 0 for r in rows)
    assert "contested" in out and "claims needing attention" in out and f"wrote 4 results to {tmp_path / 'a.csv'}" in err

    code, out, err = done["module"]  # python -m council.batch: bad rows skipped with their line numbers
    assert code == 0, err  # --exit-zero
    assert "warning: line 3: empty claim (skipped)" in err
    assert "warning: line 4: expected 2 columns (claim, id), got 3 (skipped)" in err
    assert "warning: line 5: claim is 300 characters, over the limit of 200 (skipped)" in err
    results = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert [(r["line"], r["id"], r["status"], r["label"]) for r in results] == [
        (2, "b1", "full", "SUPPORTED"), (3, "b2", "invalid", None), (4, "", "invalid", None), (5, "b4", "invalid", None)]
    assert "batch" in err and "invalid" in err  # the summary goes to stderr when the results go to stdout

    code, out, err = done["missing"]
    assert code == 2 and err.strip().splitlines() == [f"error: cannot read {tmp_path / 'nope.jsonl'}: No such file or directory"]

    # contested claims accepted on request; the finished batch is not run again
    code, out, err = finish(_start(["check", str(contested), "--db", str(tmp_path / "a.db"), "--allow-contested", *common], tmp_path)).result()
    assert code == 0, err
    assert "checked 0 claims" in out


def test_kill_9_mid_batch_then_rerun_finishes_with_one_record_per_call(scripted, tmp_path: Path) -> None:
    # Members answer after 0.5 s; four councils at once make 12 requests in flight. The batch is killed
    # when 12 are in flight after some claims finished: every request then in flight was sent (its
    # pending record written first), and no other request is about to be.
    server = scripted(members_script(latency=0.5))
    cfg = tmp_path / "council.toml"
    cfg.write_text(to_toml(batch_config(server.base_url)), encoding="utf-8")
    n = 24
    path = write_jsonl(tmp_path / "claims.jsonl", claims(n))
    db = tmp_path / "batch.db"
    args = ["check", str(path), "-c", str(cfg), "--db", str(db), "-j", "4", "--out", str(tmp_path / "out.jsonl"), "-q"]
    proc = _start(args, tmp_path)
    deadline = time.monotonic() + 90
    try:
        while True:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the batch never reached the point to kill it"
            if server.stats()["in_flight"] == 12 and db.exists():
                finished = db_rows(db, "SELECT COUNT(*) FROM batch_items WHERE status = 'full'")[0][0]
                if finished >= 4:
                    break
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "out.jsonl").exists()
    pending = db_rows(db, "SELECT COUNT(*) FROM calls WHERE status = 'pending'")[0][0]
    assert pending == 12  # written before each request went out
    assert db_rows(db, "SELECT COUNT(*) FROM batch_items WHERE status = 'running'")[0][0] == 4

    code, out, err = finish(_start(args, tmp_path)).result()
    assert code == 0, err
    results = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["id"] for r in results) == sorted(c["id"] for c in claims(n))  # each claim exactly once
    assert {r["status"] for r in results} == {"full"}
    assert db_rows(db, "SELECT COUNT(*), COUNT(DISTINCT run_id) FROM runs") == [(n, n)]
    assert db_rows(db, "SELECT COUNT(*) FROM verdicts") == [(n,)]
    assert not db_rows(db, "SELECT run_id, member_label FROM answers GROUP BY run_id, member_label HAVING COUNT(*) > 1")
    # every request the server saw has exactly one record, and every record one request
    assert db_rows(db, "SELECT COUNT(*) FROM calls WHERE status != 'skipped'")[0][0] == server.stats()["total_requests"]
    assert db_rows(db, "SELECT COUNT(*) FROM calls WHERE status = 'interrupted'")[0][0] == 12
    assert db_rows(db, "SELECT COUNT(*) FROM calls WHERE status = 'pending'")[0][0] == 0
    # attempts continue after the interrupted one: 1 (interrupted), 2 (answered)
    assert db_rows(db, "SELECT DISTINCT attempt FROM calls WHERE status = 'interrupted'") == [(1,)]
    assert sorted(db_rows(db, "SELECT attempt, COUNT(*) FROM calls WHERE status = 'ok' GROUP BY attempt")) == [(1, 3 * n - 12), (2, 12)]
    costs = {r["run_id"]: r["cost_usd"] for r in results}
    for run_id, total in db_rows(db, "SELECT run_id, SUM(cost_usd) FROM calls GROUP BY run_id"):
        assert abs(costs[run_id] - total) < 1e-12


def test_processes_split_the_batch_and_the_budget(scripted, tmp_path: Path) -> None:
    # long enough that the helper, which imports litellm after the parent has, still gets claims to check
    server = scripted(members_script(latency=0.5))
    cfg = tmp_path / "council.toml"
    cfg.write_text(to_toml(batch_config(server.base_url)), encoding="utf-8")
    n = 60
    path = write_jsonl(tmp_path / "claims.jsonl", claims(n))
    db = tmp_path / "batch.db"
    code, out, err = finish(_start(["check", str(path), "-c", str(cfg), "--db", str(db), "-j", "8", "-p", "2",
                                     "--budget-usd", "1.0", "--json"], tmp_path)).result()
    assert code == 0, err
    summary = json.loads(out)
    assert summary["counts"] == {"full": n} and summary["checked"] == n
    assert db_rows(db, "SELECT COUNT(*), COUNT(DISTINCT run_id) FROM runs") == [(n, n)]
    assert db_rows(db, "SELECT COUNT(*) FROM batch_items WHERE leases != 1") == [(0,)]
    assert db_rows(db, "SELECT COUNT(*) FROM calls")[0][0] == server.stats()["total_requests"] == 3 * n
    owners = {o.split(":")[1] for (o,) in db_rows(db, "SELECT DISTINCT finished_by FROM batch_items")}
    assert len(owners) == 2  # both processes checked claims
    assert summary["spent_usd"] == summary["total_cost_usd"] <= 1.0
    # a budget too small for the batch: split between the processes, never exceeded in total
    tight = write_jsonl(tmp_path / "tight.jsonl", claims(n, prefix="t"))
    code, out, err = finish(_start(["check", str(tight), "-c", str(cfg), "--db", str(db), "-j", "8", "-p", "2",
                                     "--budget-usd", "0.02", "--json"], tmp_path)).result()
    assert code == 1, err
    summary = json.loads(out)
    assert summary["counts"].get("skipped_budget", 0) > 0 and summary["budget_exhausted"]
    spent = db_rows(db, "SELECT SUM(c.cost_usd) FROM calls c JOIN batch_items i ON i.run_id = c.run_id "
                      "WHERE i.batch_id = :b", b=summary["batch_id"])[0][0]
    assert 0 < spent <= 0.02 and abs(summary["total_cost_usd"] - spent) < 1e-9
    assert db_rows(db, "SELECT COUNT(*) FROM calls WHERE status != 'skipped'")[0][0] == server.stats()["total_requests"]
