"""The eval harness end to end, against scripted members of known accuracy over loopback HTTP: accuracies
recovered within the harness's own intervals, shared member calls, costs equal to the stored call records,
the HTML report, the paired comparison as a release gate (CLI exit codes), bad input, budget, and a
``kill -9`` in the middle of an eval followed by a rerun that finishes it."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import to_toml
from council.eval import evaluate
from council.testing import ScriptedServer
from council.testing.simulated import SimulatedPanel, simulated_panel

ROOT = Path(__file__).resolve().parents[1]
N = 24
ACC = {"m90": 0.9, "m75": 0.75, "m60": 0.6, "m55": 0.55, "m50": 0.5}
PANEL = ["m90", "m75", "m60"]


@pytest.fixture(scope="module")
def sim() -> SimulatedPanel:
    return simulated_panel(N, ACC, seed=5)


@pytest.fixture(scope="module")
def server(sim: SimulatedPanel) -> Iterator[ScriptedServer]:
    srv = ScriptedServer(sim.script).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def golden(sim: SimulatedPanel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sim.write_golden(tmp_path_factory.mktemp("golden") / "golden.jsonl")


@pytest.fixture(scope="module")
def first(sim: SimulatedPanel, server: ScriptedServer, golden: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Any, str, Path]:
    """One eval of every kind of arm, run once for the tests below."""
    tmp = tmp_path_factory.mktemp("first")
    db = f"sqlite:///{tmp / 'eval.db'}"
    server.reset()
    report = evaluate(golden, task="check", arms="single:m90,single:m75,single:m60,single:m55,majority,council",
                      config=sim.config(server.base_url, panel=PANEL), db=db, concurrency=6, out=tmp / "report.html")
    return report, db, tmp


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", COLUMNS="240", NO_COLOR="1", COUNCIL_DB=str(tmp / "default.db"))
    env.pop("COUNCIL_CONFIG", None)
    return env


def _council(args: list[str], tmp: Path, timeout: float = 240) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "council", *args], cwd=ROOT, env=_env(tmp), text=True,
                          capture_output=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.returncode, proc.stdout, proc.stderr


def test_accuracies_recovered_within_the_harness_intervals(first: tuple[Any, str, Path], sim: SimulatedPanel) -> None:
    report = first[0]
    for m in ["m90", "m75", "m60", "m55"]:
        s = report.arm(f"single:{m}")
        realized = sum(sim.right[m]) / N
        assert s.scored == N and s.failed == 0
        assert s.accuracy == pytest.approx(realized)          # exactly what the members were scripted to do
        assert s.ci_low is not None and s.ci_high is not None
        assert s.ci_low <= ACC[m] <= s.ci_high, (m, s.ci_low, s.ci_high)  # the true rate inside the interval
        assert s.abstention_rate == 0.0
    panel_right = [sum(sim.right[m][i] for m in PANEL) >= 2 for i in range(N)]
    assert report.arm("majority").accuracy == pytest.approx(sum(panel_right) / N)
    council = report.arm("council")
    assert council.scored == N and council.escalation_rate is not None
    assert report.arm("single:m90").escalation_rate is None
    risk = {t.tag: t for t in report.tags if t.arm == "single:m90"}
    assert risk["risk=high"].scored == N // 2 and risk["risk=low"].scored == N // 2


def test_single_and_majority_share_the_panel_calls(first: tuple[Any, str, Path], server: ScriptedServer) -> None:
    report = first[0]
    by = {(o.item_id, o.arm): o for o in report.outcomes}
    for item in {o.item_id for o in report.outcomes}:
        panel_run = by[(item, "council")].run_id
        assert by[(item, "majority")].run_id == panel_run
        assert by[(item, "single:m90")].run_id == panel_run
        assert by[(item, "single:m55")].run_id != panel_run  # not on the panel: runs of its own
    sent = Counter(r.model for r in server.requests)
    assert all(sent[m] == N for m in [*PANEL, "m55"]), sent  # one call per member and item, whatever the arms
    assert sent["m50"] == 0


def test_costs_equal_the_stored_call_records(first: tuple[Any, str, Path]) -> None:
    report, db, _ = first
    con = sqlite3.connect(db.removeprefix("sqlite:///"))
    cost = dict(con.execute("SELECT call_id, cost_usd FROM calls").fetchall())
    run_of = dict(con.execute("SELECT call_id, run_id FROM calls").fetchall())
    assert all(v > 0 for v in cost.values())
    for o in report.outcomes:
        assert o.call_ids and o.cost_usd == pytest.approx(sum(cost[c] for c in o.call_ids), abs=1e-12)
        assert {run_of[c] for c in o.call_ids} == {o.run_id}
        if o.arm == "council":
            assert set(o.call_ids) == {c for c, r in run_of.items() if r == o.run_id}
    for a in report.arms:
        assert a.cost_usd == pytest.approx(sum(o.cost_usd for o in report.outcomes if o.arm == a.arm), abs=1e-12)
    assert report.spent_usd == pytest.approx(sum(cost.values()), abs=1e-12)  # the eval is all this database holds
    stored = con.execute("SELECT COUNT(*), SUM(cost_usd) FROM eval_outcomes").fetchone()
    assert stored[0] == N * 6 and stored[1] == pytest.approx(report.as_if_alone_usd)
    # Sharing saved the shared arms' member calls: the eval cost less than its arms run one by one.
    assert report.spent_usd < report.as_if_alone_usd


def test_html_and_json_reports(first: tuple[Any, str, Path]) -> None:
    report, _, tmp = first
    page = (tmp / "report.html").read_text(encoding="utf-8")
    assert len(re.findall(r'<img alt="(reliability|frontier)" src="data:image/png;base64,[A-Za-z0-9+/=]{200,}"', page)) == 2
    assert "http://" not in page and "https://" not in page  # offline: nothing to fetch
    assert report.info.eval_id in page and "single:m55" in page
    frame = report.arms_frame()
    assert list(frame.index) == ["single:m90", "single:m75", "single:m60", "single:m55", "majority", "council"]
    assert len(report.outcomes_frame()) == N * 6
    from council.eval import read_report, write_report

    write_report(report, tmp / "report.json")
    again = read_report(tmp / "report.json")
    assert again.arm("council").accuracy == report.arm("council").accuracy


def test_compare_gates_a_degraded_policy_and_passes_an_equal_one(
        first: tuple[Any, str, Path], sim: SimulatedPanel, server: ScriptedServer, golden: Path) -> None:
    report, db, tmp = first
    base = sim.config(server.base_url, panel=PANEL)
    degraded = sim.config(server.base_url, panel=["m60", "m55", "m50"])
    worse = evaluate(golden, task="check", arms="majority,council", config=degraded, db=db, concurrency=6)
    equal_cfg = json.loads(json.dumps(base))
    equal_cfg["policies"]["fact_check"]["description"] = "the same panel under a new policy version"
    equal = evaluate(golden, task="check", arms="majority,council", config=equal_cfg, db=db, concurrency=6,
                     out=tmp / "equal.json")
    assert equal.info.policies != report.info.policies and equal.info.eval_id != report.info.eval_id
    a = report.info.eval_id
    code, out, err = _council(["eval", "compare", a, worse.info.eval_id, "--db", db], tmp)
    assert code == 1, out + err
    assert "REGRESSION: accuracy dropped" in out
    code, out, err = _council(["eval", "compare", a[:8], str(tmp / "equal.json"), "--db", db, "--arm", "majority",
                               "--json"], tmp)
    assert code == 0, out + err
    [row] = json.loads(out)
    assert row["arm"] == "majority" and row["paired"] == N and row["p_value"] == 1.0 and not row["regression"]
    code, out, err = _council(["evals", "--db", db, "--json"], tmp)
    assert code == 0
    listed = {e["eval_id"]: e for e in json.loads(out)}
    assert {a, worse.info.eval_id, equal.info.eval_id} <= set(listed)
    assert listed[a]["golden_hash"] == report.info.golden_hash and listed[a]["status"] == "done"
    code, out, err = _council(["eval", "compare", a, "nope", "--db", db], tmp)
    assert code == 2 and "no eval with id 'nope'" in err


def test_cli_bad_rows_unknown_arms_and_too_small_sets(sim: SimulatedPanel, server: ScriptedServer, tmp_path: Path) -> None:
    cfg = tmp_path / "council.toml"
    cfg.write_text(to_toml(sim.config(server.base_url, panel=PANEL)), encoding="utf-8")
    rows = [json.dumps(r) for r in sim.golden[:5]] + ['{"id": "x", "claim": "no label"}', "not json",
                                                       json.dumps(sim.golden[0])]
    golden = tmp_path / "small.jsonl"
    golden.write_text("\n".join(rows) + "\n", encoding="utf-8")
    db = str(tmp_path / "e.db")
    code, out, err = _council(["eval", str(golden), "--arms", "single:m90,majority", "-c", str(cfg), "--db", db], tmp_path)
    assert code == 0, out + err
    assert "line 6: no expected 'label'" in err and "line 7: invalid JSON" in err
    assert "line 8: duplicate id 's0000' (first on line 1)" in err
    assert "no interval: 5 scored items, at least 10 needed" in out
    assert re.search(r"single:m90\s+│\s+\d/5", out)
    code, out, err = _council(["eval", str(golden), "--arms", "single:gpt-9", "-c", str(cfg), "--db", db], tmp_path)
    assert code == 2 and "no model 'gpt-9' in the catalog" in err
    code, out, err = _council(["eval", str(golden), "--arms", "council,debate", "-c", str(cfg), "--db", db], tmp_path)
    assert code == 2 and "arm 'debate': unknown recipe 'debate': the recipes are cascade, council, review" in err


def test_budget_caps_the_eval_and_a_rerun_finishes_it(sim: SimulatedPanel, server: ScriptedServer, golden: Path,
                                                      tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'b.db'}"
    cfg = sim.config(server.base_url, panel=PANEL)
    capped = evaluate(golden, task="check", arms="single:m90,majority,council", config=cfg, db=db, concurrency=2,
                      budget_usd=0.02)
    assert capped.budget_exhausted and capped.spent_usd <= 0.02 + 1e-9
    skipped = capped.arm("council").skipped_budget
    assert 0 < skipped < N and capped.arm("council").scored == N - skipped
    assert capped.info.status == "budget"
    done = evaluate(golden, task="check", arms="single:m90,majority,council", config=cfg, db=db, concurrency=4,
                    budget_usd=1.0)
    assert not done.budget_exhausted and done.info.eval_id == capped.info.eval_id
    assert all(a.skipped_budget == 0 and a.scored == N for a in done.arms)
    assert done.spent_usd <= 1.0 and done.spent_now_usd == pytest.approx(done.spent_usd - capped.spent_usd, abs=1e-9)


def test_resume_after_kill_9(tmp_path: Path) -> None:
    n = 10
    slow = simulated_panel(n, {"m90": 0.9, "m75": 0.75, "m60": 0.6}, seed=9, latency=0.4)
    with ScriptedServer(slow.script) as srv:
        cfg = tmp_path / "council.toml"
        cfg.write_text(to_toml(slow.config(srv.base_url)), encoding="utf-8")
        golden = slow.write_golden(tmp_path / "golden.jsonl")
        db = tmp_path / "e.db"
        args = [sys.executable, "-m", "council", "eval", str(golden), "--arms", "single:m90,majority,council",
                "-c", str(cfg), "--db", str(db), "-j", "2"]
        proc = subprocess.Popen(args, cwd=ROOT, env=_env(tmp_path), text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 180
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            try:
                with sqlite3.connect(db) as con:
                    done = con.execute("SELECT COUNT(DISTINCT item_id) FROM eval_outcomes").fetchone()[0]
                    pending = con.execute("SELECT COUNT(*) FROM calls WHERE status = 'pending'").fetchone()[0]
            except sqlite3.OperationalError:
                continue
            if done >= 2 and pending:
                break
        assert proc.poll() is None, "the eval finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert 2 <= done < n
        code, out, err = _council(args[3:], tmp_path)
        assert code == 0, out + err
        with sqlite3.connect(db) as con:
            rows = con.execute("SELECT arm, status, run_id FROM eval_outcomes").fetchall()
            assert len(rows) == 3 * n and {r[1] for r in rows} == {"ok"}
            assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == n  # resumed, not started again
            interrupted = con.execute("SELECT COUNT(*) FROM calls WHERE status = 'interrupted'").fetchone()[0]
            assert interrupted >= 1
            ok = con.execute("SELECT run_id, member_label, COUNT(*) FROM calls WHERE node = 'member' AND status = 'ok' "
                             "GROUP BY run_id, member_label").fetchall()
            assert len(ok) == 3 * n and all(c == 1 for _, _, c in ok)  # no answer paid for twice
            records = con.execute("SELECT COUNT(*) FROM calls WHERE node = 'member'").fetchone()[0]
        sent = srv.stats()["requests"]
        received = sum(sent.get(m, 0) for m in ("m90", "m75", "m60"))
        # Every request the server received has its record; a record beyond that can only be an interrupted
        # one whose request was written ahead and then cut off by the kill before it reached the server.
        assert received <= records <= received + interrupted
        assert "single:m90" in out and f"/{n}" in out


def test_ask_task_scores_short_answers_against_aliases(scripted: Any, tmp_path: Path, db_url: str) -> None:
    from conftest import answer, panel_config, ruling

    qa = [("capital of Australia", "Canberra is the capital of Australia.", "Sydney is the capital of Australia."),
          ("wrote Middlemarch", "Middlemarch was written by Mary Ann Evans.", "Middlemarch was written by Charles Dickens."),
          ("planets", "There are eight planets in the Solar System.", "There are nine planets in the Solar System.")]

    def says(right: bool) -> list[dict[str, Any]]:
        return [{"match": m, "content": answer(r if right else w, [(r if right else w, 0.8)])} for m, r, w in qa]

    srv = scripted({"seed": 1, "models": {
        "m-a": {"answers": says(True)}, "m-b": {"answers": says(True)}, "m-c": {"answers": says(False)},
        "judge": {"answers": [{"match": m, "content": ruling(r, ["C1"])} for m, r, _ in qa]}}})
    tables = panel_config(srv.base_url, research={"allowed_models": ["m-a", "m-b", "m-c"], "fallback": "none"})
    tables["embedding"] = "lexical"
    golden = tmp_path / "ask.jsonl"
    golden.write_text("\n".join(json.dumps(r) for r in [
        {"id": "q1", "question": "What is the capital of Australia?", "answer": "Canberra"},
        {"id": "q2", "question": "Who wrote Middlemarch?", "answer": "George Eliot", "aliases": ["Mary Ann Evans"]},
        {"id": "q3", "question": "How many planets are in the Solar System?", "answer": "8"},
    ]) + "\n", encoding="utf-8")
    report = evaluate(golden, task="ask", arms="single:m-a,single:m-c,majority,council", config=tables, db=db_url)
    assert (report.arm("single:m-a").correct, report.arm("single:m-c").correct) == (3, 0)
    assert report.arm("majority").correct == 3 and report.arm("council").correct == 3
    assert report.arm("council").abstention_rate == 0.0
    predictions = {o.item_id: o.prediction for o in report.outcomes if o.arm == "single:m-c"}
    assert predictions["q1"] == "Sydney is the capital of Australia."
    assert all(a.ci_low is None and "at least 10 needed" in (a.ci_note or "") for a in report.arms)
