"""The real ``council`` CLI on claim reconciliation: ``--source``, ``feedback`` and ``graph --format prov-json``.

Every invocation is a fresh Python process talking to a scripted server in this process over loopback.
They run in two concurrent waves (the runs first, then the commands that read them), so the module costs
about two process start-ups. Clustering uses the default embedder (wordllama, shipped in its wheel).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import GREAT_WALL, panel_config, panel_script, to_toml
from council import Store
from support import Proc, cli_env, run_all

ROOT = Path(__file__).resolve().parents[1]
EVEREST = "Mount Everest is the highest mountain above sea level on Earth."
ISS = ("Astronauts aboard the International Space Station report that the Great Wall is not visible "
       "to the naked eye from low Earth orbit.")
WIDTH = "The wall is mostly about 6 m wide, far narrower than the highways and airports seen from orbit."




def _claim(text: str, confidence: float, cites: list[tuple[str, str]] = ()) -> dict:
    return {"text": text, "confidence": confidence, "citations": [{"source_id": s, "quote": q} for s, q in cites]}


def _script() -> dict:
    """Members answer the Great Wall question citing S1/S2, and label the Everest claim 2 to 1."""
    def member(ask: dict, check: dict) -> dict:
        return {"latency": 0.02, "answers": [{"match": "Claim to check:", "content": check}, {"content": ask}]}

    def check(label: str, text: str) -> dict:
        return {"answer": f"{label}.", "label": label, "confidence": 0.9, "claims": [_claim(text, 0.9)]}

    ruling = {"answer": "No: it is not visible to the naked eye.", "confidence": 0.8, "supported": ["C1"],
              "contradicted": [], "rationale": "scripted"}
    return panel_script(**{
        "m-a": member({"answer": "No, it is not visible.", "claims": [
            _claim("The Great Wall is not visible to the naked eye from low Earth orbit.", 0.9,
                   [("S1", "the great wall is NOT visible to the naked eye")]),
            _claim("The wall is only about 6 m wide.", 0.8, [("S2", "mostly about 6 m wide")])]},
            check("SUPPORTED", EVEREST)),
        "m-b": member({"answer": "No.", "claims": [
            _claim("It cannot be seen with the naked eye from low Earth orbit.", 0.85,
                   [("S1", "the Great Wall is never visible to the naked eye")])]},
            check("SUPPORTED", "Everest is the highest mountain on Earth above sea level.")),
        "m-c": member({"answer": "Yes.", "claims": [
            _claim("The Great Wall is visible to the naked eye from low Earth orbit.", 0.6,
                   [("S1", "far narrower than the highways and airports")])]},
            check("REFUTED", "Mount Everest is not the highest mountain above sea level on Earth.")),
        "judge": {"latency": 0.02, "answers": [
            {"match": "Statement to check:", "content": {**ruling, "answer": "SUPPORTED.", "label": "SUPPORTED"}},
            {"content": ruling}]},
    })


@dataclass
class Cli:
    db: Path
    prov_out: Path
    runs: dict[str, Proc]
    ask_id: str | None
    check_id: str | None


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory, scripted_module: Any) -> Iterator[Cli]:
    tmp = tmp_path_factory.mktemp("cli-reconcile")
    env = cli_env(tmp / "default.db")
    server = scripted_module(_script())
    cfg = tmp / "council.toml"
    cfg.write_text(to_toml(panel_config(server.base_url)), encoding="utf-8")  # embedding: default (auto)
    report = tmp / "report.txt"
    report.write_text(f"{ISS}\n\n{WIDTH}\n", encoding="utf-8")
    atlas = tmp / "atlas.txt"
    atlas.write_text("Mount Everest rises 8,849 m above sea level, more than any other mountain.\n", encoding="utf-8")
    db = tmp / "council.db"
    common = ["--config", str(cfg), "--db", str(db)]
    runs = run_all({
        "ask": ["ask", GREAT_WALL, *common, "--source", str(report)],
        "check": ["check-one", EVEREST, *common, "--source", str(atlas), "--json"],
    }, env)
    m = re.search(r"^run ([0-9a-f]{32}) · total cost", runs["ask"].out, re.M)
    ask_id = m.group(1) if m else None
    try:
        check_id = json.loads(runs["check"].out)["run_id"]
    except (ValueError, KeyError):
        check_id = None
    prov_out = tmp / "run.prov.json"
    wave2: dict[str, list[str]] = {}
    if check_id:
        wave2["feedback"] = ["feedback", check_id[:10], "supported", "--db", str(db), "--note", "atlas"]
        wave2["feedback_bad"] = ["feedback", check_id, "MAYBE", "--db", str(db)]
    if ask_id:
        wave2["prov"] = ["graph", ask_id, "--format", "prov-json", "--out", str(prov_out), "--db", str(db)]
    runs |= run_all(wave2, env)
    yield Cli(db, prov_out, runs, ask_id, check_id)


def _rows(out: str, title: str) -> list[list[str]]:
    """The body rows of the rich table titled ``title`` (the header row is drawn with heavy bars)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("└"):
            break
        if line.startswith("│"):
            rows.append([c.strip() for c in line.strip().strip("│").split("│")])
    return rows


def test_ask_with_source_prints_clusters_and_evidence_marks(cli: Cli) -> None:
    p = cli.runs["ask"]
    assert p.code == 0, p.err[-3000:]
    assert cli.ask_id is not None
    run = Store(f"sqlite:///{cli.db}").load_run(cli.ask_id)
    assert [x.passage_id for x in run.passages] == ["S1", "S2"]

    claims = {r[0]: r for r in _rows(p.out, "claims")}
    evidence = {text[:20]: row[-1] for text, row in claims.items()}
    assert evidence == {
        "The Great Wall is no": "S1 ✓",
        "The wall is only abo": "S2 ✓",
        "It cannot be seen wi": "S1 ✗",
        "The Great Wall is vi": "S1 ✗",
    }
    clusters = _rows(p.out, "clusters")
    assert [r[0] for r in clusters] == [k.label for k in run.clusters] == ["K1", "K2", "K3"]
    for row, k in zip(clusters, run.clusters):
        assert row[1:5] == [k.status, k.settled_by, f"{k.support:.2f}", ",".join(k.member_labels)]
    # each claim row names its cluster
    assert {row[5] for row in claims.values()} == {"K1", "K2", "K3"}
    v = run.verdict
    assert (f"{v.clusters_total} claim clusters: {len(v.settled_by_vote)} settled by vote, "
            f"{len(v.settled_by_adjudicator)} by the adjudicator, {len(v.unresolved)} unresolved") in p.out
    assert "plain majority: No, it is not visible." in p.out


def test_check_one_with_source_is_stored(cli: Cli) -> None:
    p = cli.runs["check"]
    assert p.code == 0, p.err[-3000:]
    payload = json.loads(p.out)
    assert payload["verdict"]["label"] == "SUPPORTED"
    assert payload["verdict"]["decided_by"] == "adjudicator"
    assert [x["passage_id"] for x in payload["passages"]] == ["S1"]
    assert {k["status"] for k in payload["clusters"]} == {"unresolved"}


def test_feedback_records_the_label(cli: Cli) -> None:
    p = cli.runs["feedback"]
    assert p.code == 0, p.err
    assert p.out.strip() == f"recorded SUPPORTED for run {cli.check_id}"
    store = Store(f"sqlite:///{cli.db}")
    assert store.load_run(cli.check_id).feedback_label == "SUPPORTED"
    # the feedback (the same label as the verdict here) counts A and B as right, C as wrong
    rel = {m: (r.agree, r.total) for m, r in store.reliabilities(0.7, 4.0).items()}
    assert rel == {"m-a": (1, 1), "m-b": (1, 1), "m-c": (0, 1)}


def test_feedback_with_a_bad_label_is_one_error_line(cli: Cli) -> None:
    line = cli.runs["feedback_bad"].error_line(code=1)
    assert "'MAYBE'" in line and "must be SUPPORTED, REFUTED or NOT_ENOUGH_INFO" in line


def test_graph_prov_json_is_read_back_by_prov(cli: Cli) -> None:
    from prov.model import ProvActivity, ProvDocument, ProvEntity

    p = cli.runs["prov"]
    assert p.code == 0, p.err
    assert p.out == ""
    doc = ProvDocument.deserialize(source=str(cli.prov_out), format="json")
    n_records = len(list(doc.get_records()))
    assert re.fullmatch(rf"wrote {n_records} PROV records to {re.escape(str(cli.prov_out))}\n", p.err)
    run = Store(f"sqlite:///{cli.db}").load_run(cli.ask_id)
    kinds = [str(t) for e in doc.get_records(ProvEntity) for t in e.get_asserted_types()]
    assert kinds.count("council:Claim") == sum(len(a.claims) for a in run.answers) == 4
    assert kinds.count("council:Passage") == 2
    assert kinds.count("council:Cluster") == len(run.clusters)
    calls = [a for a in doc.get_records(ProvActivity) if "council:Call" in {str(t) for t in a.get_asserted_types()}]
    assert len(calls) == len(run.calls)
