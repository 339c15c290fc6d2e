"""``council review`` as a real user runs it: subprocesses against a database filled by ``council check``
(scripted server over loopback), the interactive walk through a pseudo-terminal (pexpect), decide,
export/import round trip with bad rows, ``council show`` with the human verdict beside the council's,
``council stats --json``, and ``council check --require-review`` gating on unreviewed flags."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pexpect

from conftest import answer, to_toml
from support import DISPUTED, batch_config, db_rows, members_script, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
HARBOUR = "The Harbour bridge opened in 1932."
CONTEXT = "The Harbour bridge opened in 1932 after eight years of work."


def _script() -> dict[str, Any]:
    """The batch members' script, plus a claim with a source that members cite (one quote is wrong)."""
    script = members_script(judge_faults=[])

    def cited(label: str, quote: str) -> dict[str, Any]:
        a = answer(f"It is {label.lower()}.", [(f"The bridge opened in 1932, says {label}.", 0.8)], label)
        a["claims"][0]["citations"] = [{"source_id": "S1", "quote": quote}]
        return {"match": "Harbour", "content": a}

    for name, label, quote in (("m-a", "SUPPORTED", "opened in 1932"), ("m-b", "REFUTED", "opened in 1931"),
                               ("m-c", "REFUTED", "opened in 1931")):
        script["models"][name]["answers"].insert(0, cited(label, quote))
    return script


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("COUNCIL_CONFIG", None)
    env.pop("COUNCIL_REVIEWER", None)
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", COLUMNS="220", NO_COLOR="1", COUNCIL_DB=str(tmp / "default.db"),
               **extra)
    return env


def _run(args: list[str], tmp: Path, **env: str) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "council", *args], cwd=ROOT, env=_env(tmp, **env), text=True,
                          capture_output=True, timeout=180)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.returncode, proc.stdout, proc.stderr


def _setup(scripted: Any, tmp: Path) -> tuple[Path, Path, list[str], dict[str, str]]:
    server = scripted(_script())
    cfg = tmp / "council.toml"
    cfg.write_text(to_toml(batch_config(server.base_url)), encoding="utf-8")
    rows = [{"id": "c0", "claim": "Bridge 0 opened in 1900."},
            {"id": "c1", "claim": "Bridge 1 opened in 1901.", "tags": {"risk": "high"}},
            {"id": "d0", "claim": f"{DISPUTED} claim zero."},
            {"id": "h0", "claim": HARBOUR, "context": CONTEXT}]
    claims = write_jsonl(tmp / "claims.jsonl", rows)
    db = tmp / "review.db"
    check = ["check", str(claims), "-c", str(cfg), "--db", str(db), "--batch-id", "b1", "-q"]
    code, out, err = _run([*check, "--out", str(tmp / "out.csv"), "--require-review"], tmp)
    assert code == 3, (out, err)  # clean, but three flagged claims await a person
    with (tmp / "out.csv").open(newline="", encoding="utf-8") as fh:
        results = {r["id"]: r for r in csv.DictReader(fh)}
    assert {k: (r["needs_review"], r["review_label"]) for k, r in results.items()} == {
        "c0": ("False", ""), "c1": ("True", ""), "d0": ("True", ""), "h0": ("True", "")}
    assert "needs review" in out and "3 not yet reviewed" in out
    runs = {k: r["run_id"] for k, r in results.items()}
    return db, claims, check, runs


def test_walk_through_the_queue_in_a_pseudo_terminal(scripted, tmp_path: Path) -> None:
    db, _, _, runs = _setup(scripted, tmp_path)
    code, out, _ = _run(["review", "list", "--db", str(db), "--json"], tmp_path)
    order = [i["run_id"] for i in json.loads(out)]
    assert sorted(order) == sorted([runs["c1"], runs["d0"], runs["h0"]])
    # the Harbour claim first, so the walk shows its cited passages
    first = {runs["h0"]: "h0"}
    child = pexpect.spawn(sys.executable, ["-m", "council", "review", "walk", "--db", str(db), "--condition",
                                           "contested", "--reviewer", "ana"],
                          cwd=str(ROOT), env=_env(tmp_path, TERM="dumb"), encoding="utf-8", timeout=60,
                          dimensions=(50, 220))
    try:
        shown: dict[str, str] = {}
        for n in (1, 2):
            child.expect(rf"review {n} of 2 · run (\w{{12}})")
            run = next(r for r in runs.values() if r.startswith(child.match.group(1)))
            shown[run] = child.before + child.after
            child.expect(r"decision \[SUPPORTED/REFUTED/NOT_ENOUGH_INFO/skip/quit\]")
            shown[run] += child.before
            if run in first:
                child.sendline("maybe")  # not a choice: asked again
                child.expect("Please select one of the available options")
                child.expect("decision")
                child.sendline("refuted")
                child.expect("note")
                child.sendline("the 1932 opening is documented")
                child.expect(r"recorded REFUTED for run \w{12} \(overturns the council\)")
            else:
                child.sendline("skip")
        child.expect(r"1 decided, 1 skipped · reviewer ana")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    harbour = shown[runs["h0"]]
    assert HARBOUR in harbour and "council: SUPPORTED" in harbour and "contested (the weighted vote" in harbour
    assert "members" in harbour and "m-a" in harbour and "REFUTED" in harbour and "0.80" in harbour
    assert "cited passages" in harbour and "opened in 1931" in harbour and "no" in harbour and "after eight years" in harbour
    rows = db_rows(f"sqlite:///{db}", "SELECT run_id, reviewer, label, note, solicited, latest FROM review_decisions")
    assert [tuple(r) for r in rows] == [(runs["h0"], "ana", "REFUTED", "the 1932 opening is documented", 1, 1)]

    # quitting at once records nothing more; no reviewer at all is refused before anything is shown
    code, _, err = _run(["review", "walk", "--db", str(db)], tmp_path)
    assert code == 1 and err.strip() == "error: no reviewer: pass --reviewer NAME or set COUNCIL_REVIEWER"


def test_decide_export_import_show_stats_and_the_gate(scripted, tmp_path: Path) -> None:
    db, _, check, runs = _setup(scripted, tmp_path)
    base = ["--db", str(db)]
    code, out, err = _run(["review", *base], tmp_path)  # no subcommand: the queue
    assert code == 0 and "review queue (3 runs)" in out and "tag" in out and "risk=high" in out
    code, out, err = _run(["review", "list", "--tag", "risk=high", "--json", *base], tmp_path)
    assert [i["run_id"] for i in json.loads(out)] == [runs["c1"]]
    code, out, err = _run(["review", "list", "--tag", "risk", *base], tmp_path)
    assert code == 1 and "tag 'risk' must be KEY=VALUE" in err

    # decide: reviewer from the environment; bad input gives one clear line
    code, out, err = _run(["review", "decide", runs["d0"][:8], "refuted", "--note", "checked", *base], tmp_path,
                          COUNCIL_REVIEWER="ana")
    assert code == 0 and f"recorded REFUTED by ana for run {runs['d0']} (council: SUPPORTED; overturned)" in out
    code, out, err = _run(["review", "decide", runs["c0"], "REFUTED", "--reviewer", "bo", *base], tmp_path)
    assert code == 1 and "was not flagged for review: pass --force" in err
    code, out, err = _run(["review", "decide", runs["c0"], "REFUTED", "--reviewer", "bo", "--force", *base], tmp_path)
    assert code == 0 and "unsolicited" in out
    code, out, err = _run(["review", "decide", "zzzz", "REFUTED", "--reviewer", "bo", *base], tmp_path)
    assert code == 1 and "no run with id 'zzzz'" in err

    # export the batch's queue, decide in a spreadsheet, import back with bad rows
    sheet = tmp_path / "queue.csv"
    code, out, err = _run(["review", "export", "--batch", "b1", "--out", str(sheet), *base], tmp_path)
    assert code == 0 and f"wrote 2 runs to {sheet}" in err
    with sheet.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["item_id"] for r in rows) == ["c1", "h0"]
    assert {r["item_id"]: r["tags"] for r in rows}["c1"] == "risk=high"
    for r in rows:
        r["label"] = {"c1": "SUPPORTED", "h0": "NOT_ENOUGH_INFO"}[r["item_id"]]
    fields = list(rows[0])
    rows += [dict(rows[0], run_id="no-such-run", label="REFUTED"), dict(rows[0], label="MAYBE"),
             dict(rows[0], run_id=runs["c0"], label="SUPPORTED"), dict(rows[0], label="")]
    with sheet.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    before = db_rows(f"sqlite:///{db}", "SELECT COUNT(*) FROM review_decisions")[0][0]
    code, out, err = _run(["review", "import", str(sheet), "--reviewer", "cy", *base], tmp_path)
    assert code == 1
    assert err.splitlines() == [
        "error: line 4: no run with id 'no-such-run' in sqlite:///" + str(db),
        "error: line 5: label 'MAYBE' is not a label of a fact check: use SUPPORTED, REFUTED, NOT_ENOUGH_INFO",
        f"error: line 6: run {runs['c0']} was not flagged for review: pass --force to record an unsolicited review",
    ]
    assert "recorded 2 decisions, 3 bad rows, 1 rows left undecided" in out
    decided = db_rows(f"sqlite:///{db}", "SELECT run_id, label, reviewer FROM review_decisions WHERE latest ORDER BY decided_at")
    assert db_rows(f"sqlite:///{db}", "SELECT COUNT(*) FROM review_decisions")[0][0] == before + 2
    assert {(r[0], r[1], r[2]) for r in decided[-2:]} == {(runs["c1"], "SUPPORTED", "cy"), (runs["h0"], "NOT_ENOUGH_INFO", "cy")}

    # show: the human verdict beside the council's
    code, out, err = _run(["show", runs["d0"], *base], tmp_path)
    assert code == 0 and "SUPPORTED:" in out and "human verdict: REFUTED by ana" in out and "overturns the council" in out
    code, out, err = _run(["show", runs["d0"], "--json", *base], tmp_path)
    shown = json.loads(out)
    assert shown["verdict"]["label"] == "SUPPORTED" and [d["label"] for d in shown["decisions"]] == ["REFUTED"]
    assert [r["condition"] for r in shown["verdict"]["review_reasons"]] == ["contested", "low_agreement", "overruled_vote"]
    assert shown["verdict"]["overruled_vote"]["applied"] is True and shown["verdict"]["vote_label"] == "REFUTED"

    # stats: the review figures per policy
    code, out, err = _run(["stats", "--json", *base], tmp_path)
    (review,) = json.loads(out)["review"]
    assert (review["policy"], review["runs"], review["flagged"], review["decided"], review["pending"]) == ("fact_check", 4, 3, 4, 0)
    assert (review["overturned"], review["unsolicited"], review["missed"]) == (3, 1, 1)  # d0, c0, h0 (NOT_ENOUGH_INFO)
    code, out, err = _run(["stats", *base], tmp_path)
    assert "human review by policy" in out and "fact_check" in out

    # the gate opens once every flagged claim is decided; the results carry the human labels
    code, out, err = _run([*check, "--require-review", "--out", str(tmp_path / "again.jsonl")], tmp_path)
    assert code == 0, (out, err)
    again = {r["id"]: r for r in map(json.loads, (tmp_path / "again.jsonl").read_text(encoding="utf-8").splitlines())}
    assert {k: r["review_label"] for k, r in again.items()} == {"c0": "REFUTED", "c1": "SUPPORTED", "d0": "REFUTED",
                                                                "h0": "NOT_ENOUGH_INFO"}

    # the provenance export names the reviewer as a PROV person
    code, out, err = _run(["graph", runs["d0"], "--format", "prov-json", *base], tmp_path)
    assert code == 0 and json.loads(out)["agent"]["council:person-ana"]["prov:type"]["$"] == "prov:Person"
