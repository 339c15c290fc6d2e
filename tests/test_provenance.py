"""The provenance graph of a stored run: paths from every claim to the call, model and policy behind it.

One run is made through ``Council`` against the scripted server, with an invalid first answer (member A),
a member that fails on its whole chain (member C) and a successful adjudicator, and its graph is rebuilt
from the database by a fresh ``Store``, as for a run from yesterday.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from conftest import GREAT_WALL, panel_config, panel_script, ruling
from council import Council, RunResult, Store, build_graph, export_graph
from council.testing import ScriptedServer


class Built:
    def __init__(self, result: RunResult, url: str, graph: Any, tmp: Path) -> None:
        self.result, self.url, self.graph, self.tmp = result, url, graph, tmp


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    base = panel_script()["models"]
    always_500 = [{"kind": "500", "rate": 1.0}]
    script = panel_script(**{
        "m-a": {**base["m-a"], "faults": [{"kind": "malformed_json", "attempts": [1]}]},
        "m-c": {**base["m-c"], "faults": always_500},
        "m-spare": {**base["m-spare"], "faults": always_500},
        "judge": {"answers": [{"content": ruling("Not visible to the naked eye.", ["C1", "C2"], ["C3"], 0.9)}]},
    })
    tmp = tmp_path_factory.mktemp("provenance")
    url = f"sqlite:///{tmp / 'prov.db'}"
    with ScriptedServer(script) as server:
        config = panel_config(server.base_url, research={
            "max_fallbacks": 1, "max_input_usd_per_mtok": None, "max_output_usd_per_mtok": None, "max_call_usd": None})
        # m-spare has no price at all (a self-hosted model litellm does not know): its node lacks prices.
        for key in ("input_usd_per_mtok", "output_usd_per_mtok"):
            del config["models"]["m-spare"][key]
        result = Council(config, db=url).ask(GREAT_WALL)
    # "A run from yesterday": a new Store object on the same URL, nothing shared with the Council above.
    graph = build_graph(Store(url).load_run(result.run_id))
    yield Built(result, url, graph, tmp)


def out(g: Any, node: str, relation: str) -> list[str]:
    """Targets of ``node``'s out-edges whose relation attribute is ``relation``."""
    return [v for _, v, rel in g.out_edges(node, data="relation") if rel == relation]


def only(g: Any, node: str, relation: str) -> str:
    targets = out(g, node, relation)
    assert len(targets) == 1, (node, relation, targets)
    return targets[0]


def nodes_of(g: Any, kind: str) -> list[str]:
    return [n for n, k in g.nodes(data="kind") if k == kind]


def test_the_run_is_what_the_graph_describes(built: Built) -> None:
    r = built.result
    # A answered after an invalid first reply, B answered, C failed on m-c and then m-spare.
    assert [(c.member_label, c.model, c.status) for c in sorted(r.calls, key=lambda c: (c.member_label, c.attempt))] == [
        ("A", "m-a", "invalid"), ("A", "m-a", "ok"), ("B", "m-b", "ok"),
        ("C", "m-c", "failed"), ("C", "m-spare", "failed"), ("adjudicator", "judge", "ok"),
    ]
    g = built.graph
    assert isinstance(g, nx.MultiDiGraph)
    counts = Counter(k for _, k in g.nodes(data="kind"))
    assert counts == {"Run": 1, "Policy": 2, "Model": 5, "Call": 6, "Answer": 2, "Claim": 3, "Failure": 1, "Verdict": 1}


def test_every_claim_reaches_answer_call_model_and_policy(built: Built) -> None:
    g = built.graph
    claims = nodes_of(g, "Claim")
    assert sorted(g.nodes[c]["claim_id"] for c in claims) == sorted(c.claim_id for c in built.result.claims)
    for claim in claims:
        answer = only(g, claim, "stated_in")
        assert g.nodes[answer]["kind"] == "Answer"
        assert g.nodes[answer]["member_label"] == g.nodes[claim]["member_label"]
        call = only(g, answer, "generated_by")
        assert g.nodes[call]["kind"] == "Call" and g.nodes[call]["status"] == "ok"
        assert g.nodes[call]["member_label"] == g.nodes[claim]["member_label"]
        model = only(g, call, "used")
        assert g.nodes[model]["kind"] == "Model"
        assert g.nodes[model]["name"] == g.nodes[claim]["model"] == g.nodes[call]["model"]
        policy = only(g, call, "governed_by")
        assert g.nodes[policy]["kind"] == "Policy"
        assert g.nodes[policy]["name"] == "research"
        assert g.nodes[policy]["version"] == g.nodes[call]["policy_version"]
        assert nx.has_path(g, claim, model) and nx.has_path(g, claim, policy)


def test_claim_paths_match_the_records(built: Built) -> None:
    g = built.graph
    for claim in built.result.claims:
        answer = next(a for a in built.result.answers if a.answer_id == claim.answer_id)
        call = only(g, only(g, f"claim:{claim.claim_id}", "stated_in"), "generated_by")
        assert call == f"call:{answer.call_id}"
        rec = next(c for c in built.result.calls if c.call_id == answer.call_id)
        assert g.nodes[call]["cost_usd"] == pytest.approx(rec.cost_usd) and rec.cost_usd > 0
        assert g.nodes[call]["prompt_tokens"] == rec.prompt_tokens
        assert g.nodes[only(g, call, "used")]["input_usd_per_mtok"] == {"m-a": 1.0, "m-b": 0.5}[rec.model]


def test_every_call_is_part_of_the_run_under_its_policy(built: Built) -> None:
    g = built.graph
    run = f"run:{built.result.run_id}"
    calls = nodes_of(g, "Call")
    assert sorted(calls) == sorted(f"call:{c.call_id}" for c in built.result.calls)
    for call in calls:
        assert only(g, call, "part_of") == run
        policy = only(g, call, "governed_by")
        expected = "adjudication" if g.nodes[call]["node"] == "adjudicate" else "research"
        assert g.nodes[policy]["name"] == expected
        assert only(g, call, "used") == f"model:{g.nodes[call]['model']}"
    assert sorted(g.nodes[p]["name"] for p in out(g, run, "used")) == ["adjudication", "research"]


def test_failure_node_links_to_each_of_its_calls(built: Built) -> None:
    g = built.graph
    (failure,) = nodes_of(g, "Failure")
    assert g.nodes[failure]["member_label"] == "C"
    assert g.nodes[failure]["error_kind"] == "server_error"
    attempted = out(g, failure, "attempted_by")
    c_calls = [c for c in built.result.calls if c.member_label == "C"]
    assert sorted(attempted) == sorted(f"call:{c.call_id}" for c in c_calls) and len(attempted) == 2
    assert sorted(g.nodes[c]["model"] for c in attempted) == ["m-c", "m-spare"]
    assert all(g.nodes[c]["status"] == "failed" for c in attempted)
    (verdict,) = nodes_of(g, "Verdict")
    assert out(g, verdict, "noted") == [failure]


def test_verdict_edges_point_to_claims_and_adjudicator_call(built: Built) -> None:
    g = built.graph
    v = built.result.verdict
    assert v is not None and v.degraded and len(v.support) == 2 and len(v.contradicted) == 1
    (verdict,) = nodes_of(g, "Verdict")
    supported = out(g, verdict, "supported_by")
    contradicted = out(g, verdict, "contradicted_by")
    assert sorted(supported) == sorted(f"claim:{c}" for c in v.support)
    assert contradicted == [f"claim:{v.contradicted[0]}"]
    assert all(g.nodes[n]["kind"] == "Claim" for n in supported + contradicted)
    adj = only(g, verdict, "generated_by")
    assert g.nodes[adj]["kind"] == "Call" and g.nodes[adj]["member_label"] == "adjudicator"
    assert adj == f"call:{v.adjudicator_call_id}"
    assert g.nodes[only(g, adj, "governed_by")]["name"] == "adjudication"
    assert only(g, verdict, "part_of") == f"run:{built.result.run_id}"


def test_no_edge_dangles(built: Built) -> None:
    g = built.graph
    # Every edge endpoint is a node with a kind: nothing was created implicitly by add_edge.
    assert all("kind" in d for _, d in g.nodes(data=True))
    for u, v, key, rel in g.edges(keys=True, data="relation"):
        assert key == rel


def test_graph_from_a_fresh_store_equals_the_results_graph(built: Built) -> None:
    again = build_graph(Store(built.url).load_run(built.result.run_id[:10]))  # by id prefix
    mine = built.result.graph
    assert dict(again.nodes(data=True)) == dict(mine.nodes(data=True)) == dict(built.graph.nodes(data=True))
    assert sorted(again.edges(keys=True)) == sorted(mine.edges(keys=True))


def test_node_link_export_round_trips(built: Built) -> None:
    g = built.graph
    path = built.tmp / "graph.json"
    text = export_graph(g, "node-link", path)
    assert path.read_text(encoding="utf-8") == text
    back = nx.node_link_graph(json.loads(text), edges="edges")
    assert isinstance(back, nx.MultiDiGraph)
    assert (back.number_of_nodes(), back.number_of_edges()) == (g.number_of_nodes(), g.number_of_edges())
    assert sorted(back.edges(keys=True)) == sorted(g.edges(keys=True))
    assert dict(back.nodes(data=True)) == dict(g.nodes(data=True))


def test_graphml_export_round_trips(built: Built) -> None:
    g = built.graph
    path = built.tmp / "graph.graphml"
    export_graph(g, "graphml", path)
    back = nx.read_graphml(path)
    assert (back.number_of_nodes(), back.number_of_edges()) == (g.number_of_nodes(), g.number_of_edges())
    assert back.is_directed()
    assert set(back.nodes) == set(g.nodes)
    assert Counter(d.get("relation") for *_, d in back.edges(data=True)) == Counter(
        d["relation"] for *_, d in g.edges(data=True))
    for n, d in back.nodes(data=True):
        assert d["kind"] == g.nodes[n]["kind"]
    claim = nodes_of(g, "Claim")[0]
    assert back.nodes[claim]["confidence"] == pytest.approx(g.nodes[claim]["confidence"])


def test_graphml_declares_each_attribute_once_per_domain(built: Built) -> None:
    # A GraphML attribute name declared twice with different types (a price that is a number on one
    # model and an empty string on another) breaks tools that key attributes by name.
    import xml.etree.ElementTree as ET

    root = ET.fromstring(export_graph(built.graph, "graphml"))
    keys = [(k.get("for"), k.get("attr.name")) for k in root.iter("{http://graphml.graphdrawing.org/xmlns}key")]
    assert keys and len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    assert "input_usd_per_mtok" not in built.graph.nodes["model:m-spare"]
    assert built.graph.nodes["model:m-a"]["input_usd_per_mtok"] == 1.0


def test_node_labels_are_display_text(built: Built) -> None:
    g = built.graph
    v = built.result.verdict
    assert v is not None and v.label is None  # an "ask" run: no fact-check label
    (verdict,) = nodes_of(g, "Verdict")
    assert g.nodes[verdict]["label"] == v.answer[:60] == "Not visible to the naked eye."
    for claim in built.result.claims:
        assert g.nodes[f"claim:{claim.claim_id}"]["label"] == claim.text[:60]
    assert g.nodes[f"run:{built.result.run_id}"]["label"] == GREAT_WALL[:60]


def test_export_rejects_unknown_format(built: Built) -> None:
    with pytest.raises(ValueError, match="unknown graph format 'dot'"):
        export_graph(built.graph, "dot")  # type: ignore[arg-type]
