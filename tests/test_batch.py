"""Batch fact checks through the Python API (``council.check_many`` / ``acheck_many``), in this process,
against the scripted server over loopback: results and honest statuses, bad rows with line numbers, resume
after an interrupted run, a budget shared by 64 councils, and 30% of calls failing."""

from __future__ import annotations

import asyncio
import csv
from datetime import UTC, datetime
import json
from pathlib import Path

import pytest

import council
from support import (DISPUTED, assert_one_record_per_call, batch_config, claims, db_rows, members_script, sent_records,
                     write_jsonl)
from council.batch.runner import acheck_many, check_many, write_results
from council.batch.input import read_claims
from council.calls.budget import Budget
from council.errors import BudgetExceeded, InputError
from council.store.db import Store

# ------------------------------------------------------------------------------------------- reading input

def test_jsonl_bad_rows_are_reported_with_their_line_numbers(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [
        {"id": "a", "claim": "Water boils at 100 C at sea level."},
        "{not json",
        "",
        {"id": "b", "claim": "   "},
        {"id": "c", "text": "no claim field"},
        {"id": "d", "claim": "x" * 50},
        {"id": "a", "claim": "Same id again."},
        "[1, 2]",
        {"claim": "Water boils at 100 C at sea level."},
        {"claim": "Water boils at 100 C at sea level."},
        {"id": "e", "claim": "Ok.", "sources": [3]},
    ])
    batch = read_claims(path, max_claim_chars=40)
    assert [(i.line, i.key) for i in batch.items] == [(1, "id:a"), (9, batch.items[1].key)]
    assert batch.items[1].key.startswith("sha:") and batch.items[1].claim_id is None
    reasons = {b.line: b.reason for b in batch.bad_rows}
    assert sorted(reasons) == [2, 4, 5, 6, 7, 8, 10, 11]
    assert reasons[2].startswith("invalid JSON")
    assert reasons[4] == "empty claim"
    assert reasons[5] == "missing 'claim'"
    assert "over the limit of 40" in reasons[6]
    assert reasons[7] == "duplicate id 'a' (first on line 1)"
    assert "expected a JSON object" in reasons[8]
    assert reasons[10] == "duplicate claim (first on line 9)"
    assert "'sources'" in reasons[11]
    # the batch id is the content's: the same file gives the same id, another file another one
    assert read_claims(path, max_claim_chars=40).batch_id == batch.batch_id
    assert read_claims(write_jsonl(tmp_path / "other.jsonl", claims(2))).batch_id != batch.batch_id


def test_csv_needs_a_claim_column_and_reports_short_rows(tmp_path: Path) -> None:
    (tmp_path / "doc.txt").write_text("The bridge opened in 1932.", encoding="utf-8")
    path = tmp_path / "in.csv"
    path.write_text('id,claim,sources\n1,"Multi-line\nclaim text",doc.txt\n2,too,few,fields\n3,,\n4,Fine.,"[""doc.txt"", ""inline text""]"\n',
                    encoding="utf-8")
    batch = read_claims(path)
    assert [(i.line, i.claim_id) for i in batch.items] == [(2, "1"), (6, "4")]  # row 1 spans lines 2-3
    assert batch.items[0].claim == "Multi-line\nclaim text"
    assert batch.items[0].sources == [str(tmp_path / "doc.txt")]  # relative to the input file
    assert batch.items[1].sources == [str(tmp_path / "doc.txt"), "inline text"]
    assert [(b.line, b.reason) for b in batch.bad_rows] == [(4, "expected 3 columns (id, claim, sources), got 4"),
                                                            (5, "empty claim")]
    no_col = tmp_path / "nocol.csv"
    no_col.write_text("id,text\n1,hello\n", encoding="utf-8")
    with pytest.raises(InputError, match="no 'claim' column"):
        read_claims(no_col)
    with pytest.raises(InputError, match="unknown batch format"):
        read_claims(tmp_path / "claims.txt")


@pytest.mark.parametrize("stray", [2, 3, 11, 21])
def test_a_stray_csv_quote_loses_no_line(tmp_path: Path, stray: int) -> None:
    """A 21-line file (header + 20 rows) with one unbalanced quote on line ``stray``: that line is a bad row
    naming what it would have swallowed, and every other row is still read (the last line included)."""
    lines = ["id,claim"] + [f"c{n},Bridge number {n} opened in {1900 + n}." for n in range(2, 22)]
    lines[stray - 1] = lines[stray - 1].replace(",Bridge", ',"Bridge')
    path = tmp_path / "claims.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    batch = read_claims(path)
    assert [i.line for i in batch.items] == [n for n in range(2, 22) if n != stray]
    assert [i.claim_id for i in batch.items] == [f"c{n}" for n in range(2, 22) if n != stray]
    [bad] = batch.bad_rows
    assert bad.line == stray and "a quote opened on this line is never closed" in bad.reason
    if stray < 21:
        assert f"swallowing lines {stray}-21" in bad.reason and "the lines after it read as rows of their own" in bad.reason
    # every line is accounted for: the header, a parsed row or the bad row
    assert sorted([1, bad.line, *(i.line for i in batch.items)]) == list(range(1, 22))


def test_a_quote_that_closes_lines_later_is_one_bad_row_and_the_lines_between_are_read(tmp_path: Path) -> None:
    path = tmp_path / "claims.csv"
    path.write_text('id,claim\n1,"Claim one.\n2,Claim two.\n3,Claim "three" here.\n4,Four.\n5,"Legit\nmulti-line"\n',
                    encoding="utf-8")
    batch = read_claims(path)
    assert [(i.line, i.claim) for i in batch.items] == [(3, "Claim two."), (4, 'Claim "three" here.'), (5, "Four."),
                                                       (6, "Legit\nmulti-line")]
    [bad] = batch.bad_rows
    assert bad.line == 2 and "spans lines 2-4" in bad.reason


def test_a_stray_quote_batch_reports_every_row(scripted, tmp_path: Path, db_url: str) -> None:
    """End to end: the report, the results file and the summary count all 20 rows."""
    server = scripted(members_script())
    lines = ["id,claim"] + [f"c{n},Bridge number {n} opened in {1900 + n}." for n in range(2, 22)]
    lines[2] = lines[2].replace(",Bridge", ',"Bridge')
    path = tmp_path / "claims.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = check_many(path, config=batch_config(server.base_url), db=db_url, out=tmp_path / "out.jsonl")
    assert report.counts == {"full": 19, "invalid": 1}
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in out] == list(range(2, 22))
    assert out[1]["status"] == "invalid" and out[1]["error"].startswith("line 3: a quote opened")


@pytest.mark.parametrize("name, content, why", [
    ("empty.jsonl", "", "the file is empty"), ("blank.jsonl", "\n\n", "the file is empty"),
    ("empty.csv", "", "the file is empty"), ("header.csv", "id,claim\n", "only a header row"),
])
def test_an_empty_batch_says_no_claims(tmp_path: Path, name: str, content: str, why: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=f"no claims.*{why}"):
        read_claims(path)
    with pytest.raises(InputError, match="no claims"):
        read_claims([])


# ------------------------------------------------------------------------------------------- running

def test_check_many_writes_results_with_honest_statuses(scripted, tmp_path: Path, db_url: str) -> None:
    server = scripted(members_script())
    rows = claims(6) + [{"id": "d1", "claim": f"{DISPUTED}: the moon is made of cheese."}, "{broken", {"id": "e"}]
    path = write_jsonl(tmp_path / "claims.jsonl", rows)
    report = check_many(path, config=batch_config(server.base_url), db=db_url, concurrency=4,
                        out=tmp_path / "results.csv")
    assert report.counts == {"full": 6, "degraded": 1, "invalid": 2}
    assert report.contested == 1 and report.checked == 7
    assert report.exit_code() == 1 and report.exit_code(allow_contested=True) == 1  # the invalid rows
    by_id = {r.id: r for r in report.results}
    assert by_id["c0"].status == "full" and by_id["c0"].label == "SUPPORTED" and by_id["c0"].agreement == 1.0
    assert by_id["c0"].cost_usd > 0 and by_id["c0"].run_id and not by_id["c0"].contested
    d1 = by_id["d1"]
    assert d1.status == "degraded" and d1.contested and d1.degraded and "adjudicator failed" in (d1.error or "")
    invalid = [r for r in report.results if r.status == "invalid"]
    assert [(r.line, r.error) for r in invalid] == [(8, invalid[0].error), (9, "line 9: missing 'claim'")]
    assert invalid[0].error.startswith("line 8: invalid JSON")
    # the results file: one row per input row, in input order
    with (tmp_path / "results.csv").open(newline="", encoding="utf-8") as fh:
        out = list(csv.DictReader(fh))
    assert [r["line"] for r in out] == [str(n) for n in range(1, 10)]
    assert out[0]["status"] == "full" and out[0]["run_id"] == by_id["c0"].run_id
    assert float(out[0]["cost_usd"]) == pytest.approx(by_id["c0"].cost_usd)
    # every claim's run is in the store, its cost the sum of its call records
    run = Store(db_url).load_run(d1.run_id)
    assert run.verdict is not None and run.verdict.degraded and run.total_cost_usd == pytest.approx(d1.cost_usd)
    assert report.total_cost_usd == pytest.approx(sum(c.cost_usd for c in
                                                      db_rows(db_url, "SELECT cost_usd FROM calls")))
    assert_one_record_per_call(db_url, server)
    # JSONL output, and the lazily exported API
    again = council.check_many(path, config=batch_config(server.base_url), db=db_url, out=tmp_path / "r.jsonl")
    assert again.checked == 0  # everything was done already
    lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["status"] for x in lines] == ["full"] * 6 + ["degraded", "invalid", "invalid"]


def test_rerun_skips_finished_claims_and_resumes_interrupted_ones(scripted, tmp_path: Path, db_url: str) -> None:
    script = members_script()
    for name, latency in (("m-a", 0.05), ("m-b", 0.4), ("m-c", 0.4)):
        script["models"][name]["latency"] = latency
    server = scripted(script)
    path = write_jsonl(tmp_path / "claims.jsonl", claims(16))
    cfg = batch_config(server.base_url)

    async def interrupted() -> None:
        checked = [0]
        task = asyncio.ensure_future(acheck_many(path, config=cfg, db=db_url, concurrency=4,
                                                 on_progress=lambda p: checked.__setitem__(0, p.checked)))
        # Stop (as Ctrl-C would) once 4 claims are done and the next councils wait for m-b and m-c, m-a
        # having answered: those answers must be kept, the calls cut short recorded and redone.
        def m_a_answered_again() -> bool:
            stats = server.stats()
            return checked[0] >= 4 and stats["requests"].get("m-a", 0) >= 8 and stats["in_flight"] == 8

        def m_a_answers_stored() -> bool:  # the in-flight councils' m-a answers are in the store
            return db_rows(db_url, "SELECT COUNT(*) FROM answers a JOIN runs r ON r.run_id = a.run_id "
                                   "WHERE r.status = 'running' AND a.model = 'm-a'")[0][0] >= 4

        while not (m_a_answered_again() and m_a_answers_stored()) and not task.done():
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    council._sync.run_sync(interrupted())
    done = db_rows(db_url, "SELECT item_key FROM batch_items WHERE status = 'full'")
    assert 4 <= len(done) < 16
    assert not db_rows(db_url, "SELECT item_key FROM batch_items WHERE status = 'running'")  # leases given back
    interrupted_calls = db_rows(db_url, "SELECT run_id, member_label, attempt FROM calls WHERE status = 'interrupted'")
    assert interrupted_calls, "the cancelled councils had calls in flight"
    requests_before = server.stats()["total_requests"]

    kept = db_rows(db_url, "SELECT a.call_id FROM answers a JOIN runs r ON r.run_id = a.run_id WHERE r.status = 'failed'")
    assert kept, "m-a had answered in the interrupted councils"
    report = check_many(path, config=cfg, db=db_url, concurrency=4)
    assert report.counts == {"full": 16} and report.checked == 16 - len(done)
    # finished claims were not asked again, nor members that had answered: fewer than 3 calls per claim
    assert server.stats()["total_requests"] - requests_before == 3 * (16 - len(done)) - len(kept)
    assert {c for (c,) in db_rows(db_url, "SELECT call_id FROM answers")} >= {c for (c,) in kept}
    # every claim has exactly one run and one verdict; no call id was reused
    assert db_rows(db_url, "SELECT COUNT(*), COUNT(DISTINCT run_id) FROM runs")[0] == (16, 16)
    assert db_rows(db_url, "SELECT COUNT(*) FROM verdicts")[0][0] == 16
    assert not db_rows(db_url, "SELECT run_id, member_label FROM answers GROUP BY run_id, member_label HAVING COUNT(*) > 1")
    for run_id, label, attempt in interrupted_calls:
        # the interrupted attempt kept its record; the member was asked again with the next attempt number
        attempts = [a for (a,) in db_rows(db_url, "SELECT attempt FROM calls WHERE run_id = :r AND member_label = :m "
                                                  "ORDER BY attempt", r=run_id, m=label)]
        assert attempts == list(range(1, len(attempts) + 1)) and attempt in attempts and len(attempts) >= 2
    # a cancelled request may not have reached the server; every request that did has its record
    sent, interrupted_n = sent_records(db_url), len(interrupted_calls)
    assert sent - interrupted_n <= server.stats()["total_requests"] <= sent
    assert report.results[0].cost_usd == pytest.approx(Store(db_url).load_run(report.results[0].run_id).total_cost_usd)


def test_budget_holds_with_64_councils_in_flight_and_a_rerun_finishes(scripted, tmp_path: Path, db_url: str) -> None:
    server = scripted(members_script(latency=0.05))
    path = write_jsonl(tmp_path / "claims.jsonl", claims(100))
    cfg = batch_config(server.base_url)
    budget = 0.02
    report = check_many(path, config=cfg, db=db_url, concurrency=64, budget_usd=budget)
    spent = db_rows(db_url, "SELECT COALESCE(SUM(cost_usd), 0) FROM calls")[0][0]
    assert 0 < spent <= budget
    assert report.budget_exhausted and report.counts.get("skipped_budget", 0) > 0
    assert report.counts.get("full", 0) > 0 and "failed" not in report.counts
    assert report.total_cost_usd == pytest.approx(spent) and report.spent_usd <= budget
    skipped = [r for r in report.results if r.status == "skipped_budget"]
    assert all("budget" in (r.error or "") for r in skipped)
    # a claim without a verdict carries no label, confidence or agreement, in the report and in --out
    assert all(r.label is None and r.confidence is None and r.agreement is None for r in skipped)
    write_results(tmp_path / "out.csv", report.results)
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as fh:
        out_rows = [r for r in csv.DictReader(fh) if r["status"] == "skipped_budget"]
    assert len(out_rows) == len(skipped) and all(r["label"] == r["confidence"] == "" for r in out_rows)
    assert report.exit_code() == 1
    assert_one_record_per_call(db_url, server)
    # the same budget again: what the first run spent counts, so the total still stays within it
    again = check_many(path, config=cfg, db=db_url, concurrency=64, budget_usd=budget)
    assert db_rows(db_url, "SELECT SUM(cost_usd) FROM calls")[0][0] <= budget
    assert again.counts.get("full", 0) >= report.counts["full"]
    # a larger budget finishes the batch, counting what was already spent
    final = check_many(path, config=cfg, db=db_url, concurrency=64, budget_usd=1.0)
    assert final.counts == {"full": 100} and final.exit_code() == 0
    total = db_rows(db_url, "SELECT SUM(cost_usd) FROM calls")[0][0]
    assert total <= 1.0 and final.total_cost_usd == pytest.approx(total)
    assert_one_record_per_call(db_url, server)


def test_thirty_percent_faults_every_claim_ends_with_an_honest_status(scripted, tmp_path: Path, db_url: str) -> None:
    faults = [{"kind": "429", "rate": 0.08, "retry_after": 1}, {"kind": "500", "rate": 0.08},
              {"kind": "timeout", "rate": 0.07}, {"kind": "malformed_json", "rate": 0.07}]
    script = members_script(latency=0.02, judge_faults=faults, faults=faults, timeout_sleep=2.0)
    server = scripted(script)
    rows = claims(30) + [{"id": f"d{i}", "claim": f"{DISPUTED} claim {i}."} for i in range(6)]
    path = write_jsonl(tmp_path / "claims.jsonl", rows)
    cfg = batch_config(server.base_url, fact_check={"timeout_s": 1.0}, adjudication={"timeout_s": 1.0})
    report = check_many(path, config=cfg, db=db_url, concurrency=16)
    assert sum(report.counts.values()) == 36 and set(report.counts) <= {"full", "degraded", "failed"}
    kinds = {k for (k,) in db_rows(db_url, "SELECT DISTINCT error_kind FROM calls WHERE status != 'ok'")}
    assert {"rate_limit", "server_error", "timeout", "invalid_answer"} <= kinds, kinds
    store = Store(db_url)
    for r in report.results:
        run = store.load_run(r.run_id)
        v = run.verdict
        assert v is not None
        if r.status == "full":
            assert not v.degraded and v.members_answered == v.members_total and not run.failures
        elif r.status == "degraded":
            assert v.degraded and v.degraded_reasons
        else:
            assert v.decided_by == "none" and r.error
        assert r.cost_usd == pytest.approx(run.total_cost_usd)
    assert report.counts.get("degraded", 0) > 0
    assert_one_record_per_call(db_url, server)


def test_budget_draws_from_its_parent_and_never_overspends() -> None:
    batch = Budget(1.0)
    run = Budget(0.6, parent=batch)
    held = run.reserve(0.5)
    assert batch.remaining_usd == pytest.approx(0.5)
    with pytest.raises(BudgetExceeded):
        run.reserve(0.2)  # over the run's own limit
    other = batch.reserve(0.5)
    assert other.amount == 0.5
    with pytest.raises(BudgetExceeded):
        Budget(1.0, parent=batch).reserve(0.01)  # the batch is fully held
    run.settle(held, 0.1)
    assert batch.spent_usd == pytest.approx(0.1) and batch.remaining_usd == pytest.approx(0.4)
    with pytest.raises(BudgetExceeded):
        Budget(1.0, spent_usd=0.9).reserve(0.2)


def test_leases_are_atomic_and_expired_or_orphaned_ones_are_taken_over(db_url: str, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    from council.store.queue import BatchStore, new_owner

    bs = BatchStore(Store(db_url))
    batch = read_claims(write_jsonl(tmp_path / "c.jsonl", claims(4)))
    bs.register(batch.batch_id, "check", batch.source, batch.items)
    bs.register(batch.batch_id, "check", batch.source, batch.items)  # idempotent
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = new_owner().split(":")[0]  # host name and PID namespace
    expired = bs.lease(batch.batch_id, "elsewhere:1:a", lease_s=0.05)
    orphaned = bs.lease(batch.batch_id, f"{host}:{gone.pid}:b", lease_s=60)  # its process has exited
    alive = bs.lease(batch.batch_id, f"{host}:{os.getpid()}:c", lease_s=60)
    remote = bs.lease(batch.batch_id, "elsewhere:2:d", lease_s=60)
    assert [x.line for x in (expired, orphaned, alive, remote) if x] == [1, 2, 3, 4]
    assert not any(x.resume for x in (expired, orphaned, alive, remote) if x)
    assert bs.lease(batch.batch_id, "late:1:e", lease_s=60) is None  # nothing pending: no item is taken twice
    deadline = time.monotonic() + 10  # wait (polled) until the 0.05 s lease has expired
    while not db_rows(db_url, "SELECT 1 FROM batch_items WHERE lease_owner = 'elsewhere:1:a' AND lease_until < :now",
                      now=datetime.now(UTC).replace(tzinfo=None)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bs.reclaim(batch.batch_id) == 2  # the expired lease and the dead process's; not the live ones
    again = [bs.lease(batch.batch_id, "next:1:f", lease_s=60) for _ in range(3)]
    assert [(x.line, x.resume) for x in again if x] == [(1, True), (2, True)]
    assert again[0].run_id == expired.run_id  # type: ignore[union-attr]  # the same run is resumed
    held, cost = bs.finish(batch.batch_id, again[0].key, "someone-else", run_cost=False, status="full")  # type: ignore[union-attr]
    assert not held and cost is None  # only the lease holder records the outcome
