"""Recipes from the command line, as real subprocesses against the scripted server in this process:
``council recipes``, ``--recipe`` on ask and check, bad recipes refused with one error line and nothing
written, and a ``kill -9`` in the middle of a review or cascade batch followed by a rerun that finishes it
with one call record per request and no completed call paid twice."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import GREAT_WALL, to_toml
from support import (DISPUTED, batch_config, cascade_config, claims, cli_env, db_rows, finish, members_script,
                     review_script, revision, start, write_jsonl)

REVIEW_ALL_ACCURATE = {"match": "Review these responses", "content": {
    "judgements": [{"claim": "C1", "verdict": "accurate", "reason": "ok"}, {"claim": "C2", "verdict": "accurate"}],
    "ranking": ["Response 1", "Response 2"]}}


def test_recipes_lists_stages_and_policies(tmp_path: Path) -> None:
    code, out, err = finish(_start(["recipes", "--json"], tmp_path)).result()
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert sorted(rows) == ["cascade", "council", "review", "revise"]
    assert [s["stage"] for s in rows["review"]["stages"]] == ["answer", "review", "adjudicate", "decide", "record"]
    review = next(s for s in rows["review"]["stages"] if s["stage"] == "review")
    assert len(review["policies"]) == 1 and review["policies"][0].startswith("peer_review@")
    escalate = next(s for s in rows["cascade"]["stages"] if s["stage"] == "escalate")
    assert escalate["policies"][0].startswith("escalation@")
    revise = next(s for s in rows["revise"]["stages"] if s["stage"] == "revise")
    assert revise["policies"][0].startswith("revision@")
    assert rows["council"]["default"] is True


def test_ask_with_review_recipe_prints_stages_and_json(scripted, tmp_path: Path) -> None:
    srv = scripted(review_script())
    cfg = tmp_path / "c.toml"
    cfg.write_text(to_toml(panel_cfg(srv.base_url)), encoding="utf-8")
    db = tmp_path / "r.db"
    code, out, err = finish(_start(["ask", GREAT_WALL, "-c", str(cfg), "--db", str(db), "--recipe", "review",
                                     "--json"], tmp_path)).result()
    assert code == 0, err
    payload = json.loads(out)
    assert payload["recipe"] == "review" and len(payload["reviews"]) == 3
    assert payload["verdict"]["borda"] == {"A": 1.0, "B": 0.5, "C": 0.0}
    stages = {s["stage"]: s for s in payload["stages"]}
    assert stages["answer"]["calls"] == 3 and stages["review"]["calls"] == 3 and "adjudicate" not in stages
    assert sum(s["cost_usd"] for s in stages.values()) == pytest.approx(payload["total_cost_usd"])
    assert db_rows(db, "SELECT COUNT(*) FROM reviews WHERE status = 'ok'") == [(3,)]
    assert db_rows(db, "SELECT COUNT(*) FROM review_judgements") == [(8,)]  # A judges 2 claims, B and C 3 each
    code, out, err = finish(_start(["show", payload["run_id"][:10], "--db", str(db)], tmp_path)).result()
    assert code == 0, err
    assert "peer reviews" in out and "Borda (normalized): A 1.00, B 0.50, C 0.00" in out
    assert "stages of recipe review" in out


def panel_cfg(base_url: str, **policies: dict[str, Any]) -> dict[str, Any]:
    from conftest import panel_config

    return panel_config(base_url, **policies)


def _bad_recipe_file(tmp_path: Path) -> Path:
    p = tmp_path / "mine.toml"
    p.write_text('[recipe]\nname = "mine"\nstages = ["answer", "review", "decide", "record"]\n'
                 '[recipe.tasks.ask]\nmember_policy = "research"\nmember_template = "member.j2"\n'
                 '[recipe.adjudication]\npolicy = "adjudication"\ntemplate = "adjudicator.j2"\n'
                 '[recipe.review]\npolicy = "nope"\n', encoding="utf-8")
    return p


@pytest.mark.parametrize("case", ["unknown", "missing_policy", "too_few_members", "no_strong_tier", "revise_one_member"])
def test_bad_recipes_are_one_error_line_and_write_nothing(scripted, tmp_path: Path, case: str) -> None:
    srv = scripted(review_script())
    tables = panel_cfg(srv.base_url)
    recipe = {"unknown": "nope", "missing_policy": str(_bad_recipe_file(tmp_path)), "too_few_members": "review",
              "no_strong_tier": "cascade", "revise_one_member": "revise"}[case]
    if case in ("too_few_members", "revise_one_member"):
        tables["policies"]["research"]["allowed_models"] = ["m-a"]
    if case == "no_strong_tier":
        tables["policies"]["escalation"] = {"min_quality": 99.0}
        tables["policies"]["research_cheap"] = {"allowed_models": ["m-a", "m-b"], "max_fallbacks": 0}
    cfg = tmp_path / "c.toml"
    cfg.write_text(to_toml(tables), encoding="utf-8")
    db = tmp_path / "bad.db"
    code, out, err = finish(_start(["ask", GREAT_WALL, "-c", str(cfg), "--db", str(db), "--recipe", recipe], tmp_path)).result()
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    expected = {
        "unknown": "unknown recipe 'nope': the recipes are cascade, council, review, revise",
        "missing_policy": "stage 'review' names policy 'nope', which is neither in graphs/policies.toml nor in the config",
        "too_few_members": "recipe 'review' needs at least 2 members to review each other, but only 1 qualified for "
                           "policy 'research' (the rest: m-b: not in the allowed models",
        "no_strong_tier": "no model qualifies for policy 'escalation'",
        "revise_one_member": "recipe 'revise' needs at least 2 members to revise against each other, but only 1 "
                             "qualified for policy 'research' (the rest: m-b: not in the allowed models",
    }[case]
    assert expected in lines[0]
    assert srv.stats()["total_requests"] == 0
    if db.exists():
        assert db_rows(db, "SELECT COUNT(*) FROM runs") == [(0,)]
        assert db_rows(db, "SELECT COUNT(*) FROM calls") == [(0,)]


def _kill_when(proc: Any, db: Path, node: str, server: Any, min_done: int) -> None:
    """SIGKILL the batch while calls of ``node`` are in flight, at a moment when every pending record's
    request has reached the server (a record is written before its request goes out)."""
    deadline = time.monotonic() + 120
    try:
        while True:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the batch never reached the point to kill it"
            if db.exists():
                try:
                    pending = db_rows(db, "SELECT COUNT(*) FROM calls WHERE status = 'pending' AND node = :n", n=node)[0][0]
                    every = db_rows(db, "SELECT COUNT(*) FROM calls WHERE status = 'pending'")[0][0]
                    done = db_rows(db, "SELECT COUNT(*) FROM batch_items WHERE status IN ('full', 'degraded')")[0][0]
                except Exception:  # the tables are being created
                    pending = every = done = 0
                if pending and done >= min_done and every == server.stats()["in_flight"]:
                    break
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("recipe", ["review", "cascade", "revise"])
def test_kill_9_mid_recipe_then_rerun_pays_each_call_once(scripted, tmp_path: Path, recipe: str) -> None:
    if recipe == "review":
        script = members_script(latency=0.3)
        for name in ("m-a", "m-b", "m-c"):
            script["models"][name]["answers"].insert(0, REVIEW_ALL_ACCURATE)
        rows, node, tables = claims(8), "review", batch_config("")
    elif recipe == "revise":  # the members split on every claim and each holds in the one revision round
        script = members_script(latency=0.3)
        for name in ("m-a", "m-b", "m-c"):
            script["models"][name]["answers"].insert(0, {"match": "Revision round", "content": revision("hold")})
        rows, node, tables = [{"id": f"d{i}", "claim": f"{DISPUTED} claim {i}."} for i in range(8)], "revise", batch_config("")
    else:
        script = members_script(latency=0.3)
        script["models"]["strong-x"] = {"latency": 0.6, "answers": [{"match": "Items in doubt", "content": {
            "rulings": [], "label": "SUPPORTED"}}]}
        rows, node, tables = [{"id": f"d{i}", "claim": f"{DISPUTED} claim {i}."} for i in range(16)], "escalate", None
    server = scripted(script)
    if tables is None:
        tables = cascade_config(server.base_url)
        tables["embedding"] = "lexical"
    else:
        tables = batch_config(server.base_url)
    cfg = tmp_path / "council.toml"
    cfg.write_text(to_toml(tables), encoding="utf-8")
    path = write_jsonl(tmp_path / "claims.jsonl", rows)
    db = tmp_path / "batch.db"
    args = ["check", str(path), "-c", str(cfg), "--db", str(db), "-j", "4", "--recipe", recipe, "-q",
            "--out", str(tmp_path / "out.jsonl")]
    # In the cascade, the first councils' escalations teach the store that m-a is right on these claims, so
    # later councils settle by vote alone: kill during the first wave.
    _kill_when(_start(args, tmp_path), db, node, server, min_done=1 if recipe == "review" else 0)
    assert db_rows(db, "SELECT COUNT(*) FROM calls WHERE status = 'pending'")[0][0] >= 1

    code, out, err = finish(_start(args, tmp_path)).result()
    assert code in (0, 1), err
    results = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["id"] for r in results) == sorted(r["id"] for r in rows)
    assert {r["status"] for r in results} <= {"full", "degraded"}
    # One record per request the server saw; none left pending.
    assert db_rows(db, "SELECT COUNT(*) FROM calls WHERE status != 'skipped'")[0][0] == server.stats()["total_requests"]
    assert db_rows(db, "SELECT COUNT(*) FROM calls WHERE status = 'pending'") == [(0,)]
    # Nothing that completed was asked (and paid for) again.
    assert not db_rows(db, "SELECT run_id, node, member_label FROM calls WHERE status = 'ok' "
                         "GROUP BY run_id, node, member_label HAVING COUNT(*) > 1")
    if recipe == "review":
        assert db_rows(db, "SELECT COUNT(*), COUNT(DISTINCT run_id) FROM reviews WHERE status = 'ok'") == [(24, 8)]
    elif recipe == "revise":
        # Every member of every council answered once and revised once; the first answers are superseded.
        assert db_rows(db, "SELECT round, COUNT(*), COUNT(superseded_by), COUNT(DISTINCT run_id) FROM answers "
                           "GROUP BY round ORDER BY round") == [(1, 24, 24, 8), (2, 24, 0, 8)]
        stops = {json.loads(b)["revision_stop"] for (b,) in db_rows(db, "SELECT body_json FROM verdicts")}
        assert stops == {"converged: every member held its answer in round 2"}
    else:
        escalated = db_rows(db, "SELECT COUNT(DISTINCT run_id) FROM calls WHERE node = 'escalate' AND status = 'ok'")[0][0]
        assert escalated >= 1
        assert db_rows(db, "SELECT COUNT(*) FROM escalations WHERE target = 'label' AND body_json LIKE '%\"settled\"%'") \
            == [(escalated,)]
        assert {r["label"] for r in results} == {"SUPPORTED"}


def _start(args: list[str], tmp: Path) -> Any:
    return start(args, cli_env(tmp / "default.db", columns=200))
