"""End-to-end tests of the Python API (``Council``, ``council.ask``) over real HTTP through real litellm.

Every run talks to a scripted OpenAI-compatible server on loopback; the assertions compare the records
the engine stored with what the server actually saw (request ids, attempt counts) and with the prices of
the catalog, so a miscount or a mischarge shows up as a wrong number.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

import council
from conftest import GREAT_WALL, answer, panel_config, panel_script, ruling
from council import Council, MemberFailure, RunResult, Store
from council.deliberation.adjudication import datamark
from council.testing import ScriptedServer

# Catalog prices of panel_config(), USD per million tokens (input, output).
PRICES = {"m-a": (1.0, 2.0), "m-b": (0.5, 1.0), "m-c": (0.1, 0.2), "m-spare": (0.2, 0.4), "judge": (3.0, 6.0)}

M_C_CLAIM = "The Great Wall is visible to the naked eye from low Earth orbit."  # contradicts m-a and m-b


def expected_cost(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    p_in, p_out = PRICES[model]
    return (prompt_tokens * p_in + completion_tokens * p_out) / 1e6


def judge_by_position(n_claims: int = 4) -> dict[str, Any]:
    """A judge that contradicts m-c's claim and supports every other one, whichever label (C1..Cn) the
    shuffled adjudicator prompt gave it: the scripted answer is chosen by matching that label.

    It also rules on the two contested clusters of the standard panel, which the prompt labels K1, K2 in
    order of first appearance: m-c's cluster is K1 exactly when m-c's claim is shown first (C1)."""
    answers = []
    for k in range(1, n_claims + 1):
        others = [f"C{j}" for j in range(1, n_claims + 1) if j != k]
        content = ruling("No: it is not visible to the naked eye from low Earth orbit.", others, [f"C{k}"], 0.85)
        m_c_cluster, not_visible = ("K1", "K2") if k == 1 else ("K2", "K1")
        content["rulings"] = [
            {"cluster": not_visible, "decision": "accept", "rationale": "two members, and the wall is 6 m wide"},
            {"cluster": m_c_cluster, "decision": "reject", "rationale": "contradicted by two members"},
        ]
        answers.append({"match": f"C{k} (confidence 0.60): {datamark(M_C_CLAIM)}", "content": content})
    return {"latency": 0.05, "prompt_tokens": 900, "completion_tokens": 120, "answers": answers}


def with_tokens(script: dict[str, Any], prompt: int = 1000, completion: int = 200) -> dict[str, Any]:
    """Give every model of the script fixed token counts, so costs can be computed exactly."""
    for m in script["models"].values():
        m.setdefault("prompt_tokens", prompt)
        m.setdefault("completion_tokens", completion)
    return script


def model_script(name: str, **changes: Any) -> dict[str, Any]:
    """One model's script from the standard panel, with fields changed (e.g. faults)."""
    base = dict(panel_script()["models"][name])
    base.update(changes)
    return base


def calls_of(result: RunResult, label: str) -> list[Any]:
    return sorted((c for c in result.calls if c.member_label == label), key=lambda c: c.attempt)


def assert_billing_consistent(result: RunResult, server: ScriptedServer) -> None:
    """One record per attempt that reached the server, each charged at its serving model's price."""
    deadline = time.monotonic() + 10  # a request the client abandoned is logged once the server notices
    while server.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    sent = [c for c in result.calls if c.status != "skipped"]
    assert len(server.requests) == len(sent)
    served_ids = {r.request_id for r in server.requests if r.request_id}
    assert {c.request_id for c in sent if c.request_id} == served_ids
    for c in result.calls:
        if c.status in ("ok", "invalid"):
            assert c.cost_source == "catalog"
            assert c.cost_usd == pytest.approx(expected_cost(c.model, c.prompt_tokens, c.completion_tokens))
        else:
            assert c.cost_usd == 0.0
            assert (c.prompt_tokens, c.completion_tokens) == (0, 0)
    assert result.total_cost_usd == pytest.approx(sum(c.cost_usd for c in result.calls))


def run(server: ScriptedServer, db_url: str, question: str = GREAT_WALL, **policies: dict[str, Any]) -> RunResult:
    return Council(panel_config(server.base_url, **policies), db=db_url).ask(question)


# --------------------------------------------------------------------------------------------------
# One full, healthy run shared by the tests below.


class MainRun:
    def __init__(self, server: ScriptedServer, url: str, result: RunResult) -> None:
        self.server, self.url, self.result = server, url, result


@pytest.fixture(scope="module")
def main(tmp_path_factory: pytest.TempPathFactory, scripted_module: Any) -> Iterator[MainRun]:
    slow = {name: model_script(name, latency=0.3) for name in ("m-a", "m-b", "m-c")}
    script = with_tokens(panel_script(**slow, judge=judge_by_position()))
    server = scripted_module(script)
    url = f"sqlite:///{tmp_path_factory.mktemp('engine') / 'main.db'}"
    result = Council(panel_config(server.base_url), db=url).ask(GREAT_WALL)
    yield MainRun(server, url, result)


def test_members_are_asked_in_parallel(main: MainRun) -> None:
    stats = main.server.stats()
    assert stats["requests"] == {"m-a": 1, "m-b": 1, "m-c": 1, "judge": 1}
    # Three members of 0.3 s latency were all in flight at once: a real fan-out, not a loop.
    assert main.server.max_in_flight >= 3


def test_panel_is_the_three_best_distinct_providers(main: MainRun) -> None:
    seats = {s["label"]: s["chain"] for s in main.result.panel}
    assert seats == {
        "A": ["m-a", "m-spare", "m-b", "m-c"],
        "B": ["m-b", "m-spare", "m-a", "m-c"],
        "C": ["m-c", "m-spare", "m-a", "m-b"],
        "adjudicator": ["judge"],
    }
    assert main.result.status == "done"
    assert main.result.task == "ask"
    assert main.result.question == GREAT_WALL
    assert main.result.member_policy.startswith("research@")
    assert main.result.adjudication_policy.startswith("adjudication@")


def test_claims_carry_member_and_model(main: MainRun) -> None:
    got = sorted((c.member_label, c.model, c.text, c.confidence) for c in main.result.claims)
    assert got == [
        ("A", "m-a", "The Great Wall is not visible to the naked eye from low Earth orbit.", 0.9),
        ("A", "m-a", "The wall is only about 6 m wide.", 0.8),
        ("B", "m-b", "It cannot be seen with the naked eye from low Earth orbit.", 0.85),
        ("C", "m-c", M_C_CLAIM, 0.6),
    ]
    assert len({c.claim_id for c in main.result.claims}) == 4
    by_label = {a.member_label: a for a in main.result.answers}
    assert {k: (a.model, a.answer) for k, a in by_label.items()} == {
        "A": ("m-a", "No, it is not visible."), "B": ("m-b", "No."), "C": ("m-c", "Yes."),
    }
    for c in main.result.claims:
        assert c.answer_id == by_label[c.member_label].answer_id


def test_verdict_maps_adjudicator_labels_to_claim_ids(main: MainRun) -> None:
    v = main.result.verdict
    assert v is not None
    m_c_claim = next(c.claim_id for c in main.result.claims if c.member_label == "C")
    others = {c.claim_id for c in main.result.claims if c.member_label != "C"}
    # Whatever order the adjudicator saw the members in, its C-labels resolve to the right claims.
    assert v.contradicted == [m_c_claim]
    assert set(v.support) == others and len(v.support) == 3
    assert v.answer == "No: it is not visible to the naked eye from low Earth orbit."
    assert v.confidence == 0.85
    assert v.agreement == pytest.approx(2 / 3)
    assert v.decided_by == "adjudicator"
    assert (v.members_total, v.members_answered, v.quorum, v.quorum_met) == (3, 3, 2, True)
    assert v.degraded is False and v.degraded_reasons == [] and v.failed_members == []
    judge_call = calls_of(main.result, "adjudicator")
    assert len(judge_call) == 1 and judge_call[0].status == "ok"
    assert v.adjudicator_call_id == judge_call[0].call_id


def test_adjudicator_rules_on_the_contested_clusters_by_their_k_labels(main: MainRun) -> None:
    v = main.result.verdict
    assert v is not None
    claim = {(c.member_label, c.text): c.claim_id for c in main.result.claims}
    a_not_visible = claim[("A", "The Great Wall is not visible to the naked eye from low Earth orbit.")]
    a_width = claim[("A", "The wall is only about 6 m wide.")]
    b_cannot_see = claim[("B", "It cannot be seen with the naked eye from low Earth orbit.")]
    m_c = claim[("C", M_C_CLAIM)]
    k1, k2, k3 = main.result.clusters
    # A's and B's paraphrases are one cluster; m-c's negation of it is another, contradicting it.
    assert [(k.label, k.claim_ids, k.member_labels, k.polarity) for k in (k1, k2, k3)] == [
        ("K1", [a_not_visible, b_cannot_see], ["A", "B"], "negative"),
        ("K2", [a_width], ["A"], "positive"),
        ("K3", [m_c], ["C"], "positive"),
    ]
    assert (k1.contradicts, k2.contradicts, k3.contradicts) == ([k3.cluster_id], [], [k1.cluster_id])
    # Whatever K-labels the shuffled prompt gave the two contested clusters, the rulings land on the right ones.
    assert [(k.status, k.settled_by, k.rationale) for k in (k1, k2, k3)] == [
        ("accepted", "adjudicator", "two members, and the wall is 6 m wide"),
        ("uncorroborated", "vote", ""),
        ("rejected", "adjudicator", "contradicted by two members"),
    ]
    # Two members against one: the vote leaned to K1 but not past vote_settle_at (0.8), hence contested.
    assert 0.5 < k1.support < 0.8 and k3.support == pytest.approx(1 - k1.support)
    assert v.clusters_total == 3
    assert v.settled_by_adjudicator == [k1.cluster_id, k3.cluster_id]
    assert v.settled_by_vote == [k2.cluster_id]
    assert v.unresolved == []
    # The accepted cluster's claims first, then what the ruling also supported; the rejected cluster is contradicted.
    assert v.support == [a_not_visible, b_cannot_see, a_width]
    assert v.contradicted == [m_c]
    assert v.vote_posterior is None  # no label vote in an "ask" run
    assert v.majority_answer == "No, it is not visible."  # A's claims are the most corroborated
    assert (v.best_member, v.best_member_model, v.best_member_answer) == ("A", "m-a", "No, it is not visible.")
    assert v.needs_human_review is False


def test_stored_run_equals_result(main: MainRun) -> None:
    stored = Store(main.url).load_run(main.result.run_id)  # a fresh Store: read back from the database
    assert stored.verdict == main.result.verdict
    assert stored.clusters == main.result.clusters and len(stored.clusters) == 3
    assert [c for a in stored.answers for c in a.claims] == main.result.claims
    assert stored.answers == main.result.answers
    assert stored.calls == main.result.calls
    assert stored.status == "done"
    assert stored.total_cost_usd == pytest.approx(main.result.total_cost_usd)
    assert {m.name for m in stored.models} == {"m-a", "m-b", "m-c", "m-spare", "judge"}
    listed = Store(main.url).list_runs()
    assert [r.run_id for r in listed] == [main.result.run_id]
    assert listed[0].verdict == main.result.verdict.answer  # type: ignore[union-attr]


def test_one_call_record_per_request_and_exact_costs(main: MainRun) -> None:
    result = main.result
    assert_billing_consistent(result, main.server)
    assert len(result.calls) == 4
    for c in result.calls:
        assert c.status == "ok" and c.attempt == 1 and c.error_kind is None
        assert c.model == c.model_requested
        assert (c.prompt_tokens, c.completion_tokens) == ((900, 120) if c.model == "judge" else (1000, 200))
        assert c.request_id and c.request_id.startswith("chatcmpl-")
        assert c.model_reported and c.model_reported.endswith(c.model)
        assert c.latency_s > 0
        assert c.policy_name == ("adjudication" if c.node == "adjudicate" else "research")
        assert c.template_name == ("adjudicator.j2" if c.node == "adjudicate" else "member.j2")
    # 1000 in / 200 out at each member's price, 900 in / 120 out at the judge's.
    total = 0.0014 + 0.0007 + 0.00014 + 0.00342
    assert result.total_cost_usd == pytest.approx(total)
    assert len({c.call_id for c in result.calls}) == 4


def test_graph_is_a_multidigraph_of_the_run(main: MainRun) -> None:
    g = main.result.graph
    assert isinstance(g, nx.MultiDiGraph)
    assert g.nodes[f"run:{main.result.run_id}"]["kind"] == "Run"
    kinds = [d["kind"] for _, d in g.nodes(data=True)]
    assert kinds.count("Claim") == 4 and kinds.count("Call") == 4 and kinds.count("Answer") == 3


# --------------------------------------------------------------------------------------------------
# A unanimous panel: the weighted vote settles everything, and no adjudicator is asked.


def _posterior(*confidences: float, reliability: float = 0.7) -> float:
    """The vote's posterior for a cluster stated by members of the given confidences and nobody against
    (vote.py: p = 0.5 + (reliability - 0.5) * (0.5 + 0.5 * confidence), weight log(p / (1 - p)))."""
    logit = sum(math.log(p / (1 - p)) for p in (0.5 + (reliability - 0.5) * (0.5 + 0.5 * c) for c in confidences))
    return 1 / (1 + math.exp(-logit))


def test_unanimous_panel_is_settled_by_the_vote_without_an_adjudicator_call(scripted, db_url: str) -> None:
    agreeing = {"latency": 0.05, "answers": [{"content": answer("No, not with the naked eye.", [
        ("The Great Wall cannot be seen by the naked eye from low Earth orbit.", 0.6),
        ("The wall is only about 6 m wide.", 0.7)])}]}
    server = scripted(with_tokens(panel_script(**{"m-c": agreeing})))
    result = run(server, db_url)
    assert "judge" not in server.stats()["requests"]
    assert not [c for c in result.calls if c.node == "adjudicate" or c.member_label == "adjudicator"]
    assert sorted(c.model for c in result.calls) == ["m-a", "m-b", "m-c"]
    assert result.total_cost_usd == pytest.approx(0.0014 + 0.0007 + 0.00014)
    claim = {(c.member_label, c.text): c.claim_id for c in result.claims}
    k1, k2 = result.clusters
    assert [(k.label, k.claim_ids, k.member_labels, k.status, k.settled_by, k.contradicts) for k in (k1, k2)] == [
        ("K1", [claim[("A", "The Great Wall is not visible to the naked eye from low Earth orbit.")],
                claim[("B", "It cannot be seen with the naked eye from low Earth orbit.")],
                claim[("C", "The Great Wall cannot be seen by the naked eye from low Earth orbit.")]],
         ["A", "B", "C"], "accepted", "vote", []),
        ("K2", [claim[("A", "The wall is only about 6 m wide.")], claim[("C", "The wall is only about 6 m wide.")]],
         ["A", "C"], "accepted", "vote", []),
    ]
    assert k1.support == pytest.approx(_posterior(0.9, 0.85, 0.6))
    assert k2.support == pytest.approx(_posterior(0.8, 0.7))
    v = result.verdict
    assert v is not None
    assert v.decided_by == "vote" and v.adjudicator_call_id is None and v.rationale == ""
    assert v.support == k1.claim_ids + k2.claim_ids and v.contradicted == []
    assert v.agreement == 1.0
    # A and C back the same two accepted clusters; with equal reliabilities the first seat's answer is chosen,
    # and the confidence is the mean support of that member's accepted clusters.
    assert v.answer == "No, it is not visible."
    chosen = next(a for a in result.answers if a.answer == v.answer)
    assert chosen.member_label == "A"
    by_id = {k.cluster_id: k for k in result.clusters}
    mine = [by_id[c.cluster_id].support for c in chosen.claims if by_id[c.cluster_id].status == "accepted"]
    assert len(mine) == 2
    assert v.confidence == pytest.approx(sum(mine) / len(mine)) == pytest.approx((k1.support + k2.support) / 2)
    assert (v.clusters_total, v.settled_by_vote, v.settled_by_adjudicator, v.unresolved) == (
        2, [k1.cluster_id, k2.cluster_id], [], [])
    assert (v.members_total, v.members_answered, v.quorum, v.quorum_met) == (3, 3, 2, True)
    assert v.degraded is False and v.degraded_reasons == [] and v.failed_members == []
    # A's and C's claims are equally corroborated (5 member-claims each); that tie goes to the later label.
    assert v.majority_answer == "No, not with the naked eye."
    assert (v.best_member, v.best_member_model) == ("A", "m-a")  # equal reliability: the best catalog quality
    assert result.status == "done"
    stored = Store(db_url).load_run(result.run_id)
    assert stored.verdict == v and stored.clusters == result.clusters
    assert_billing_consistent(result, server)


# --------------------------------------------------------------------------------------------------
# Fallback, retries and failures: one small run each.


def test_fallback_after_429_charges_the_serving_model(scripted, db_url: str) -> None:
    server = scripted(with_tokens(panel_script(**{
        "m-a": model_script("m-a", faults=[{"kind": "429", "attempts": [1]}]),
        "m-spare": model_script("m-spare", prompt_tokens=1500, completion_tokens=300),
    })))
    # rate_limit_wait_s = 0: the policy allows no wait for rate limits, so a 429 falls back at once.
    result = run(server, db_url, research={"attempts_per_model": 1, "rate_limit_wait_s": 0})
    failed, served = calls_of(result, "A")
    assert (failed.attempt, failed.model, failed.status, failed.error_kind) == (1, "m-a", "failed", "rate_limit")
    assert failed.cost_usd == 0.0 and failed.cost_source == "none"
    assert (served.attempt, served.model, served.model_requested, served.status) == (2, "m-spare", "m-a", "ok")
    assert served.model != served.model_requested
    assert (served.prompt_tokens, served.completion_tokens) == (1500, 300)
    assert served.cost_usd == pytest.approx((1500 * 0.2 + 300 * 0.4) / 1e6)
    a = next(x for x in result.answers if x.member_label == "A")
    assert a.model == "m-spare" and a.call_id == served.call_id
    assert [c.model for c in result.claims if c.member_label == "A"] == ["m-spare"]
    assert result.verdict is not None and not result.verdict.degraded
    assert [(r.model, r.status) for r in server.requests if r.model in ("m-a", "m-spare")] == [
        ("m-a", 429), ("m-spare", 200)]
    assert_billing_consistent(result, server)


def test_429_retried_on_same_model_when_policy_allows(scripted, db_url: str) -> None:
    server = scripted(with_tokens(panel_script(**{
        "m-a": model_script("m-a", faults=[{"kind": "429", "attempts": [1], "retry_after": 0.1}]),
    })))
    result = run(server, db_url, research={"attempts_per_model": 2})
    assert [(c.attempt, c.model, c.status) for c in calls_of(result, "A")] == [(1, "m-a", "failed"), (2, "m-a", "ok")]
    assert "m-spare" not in server.stats()["requests"]
    assert_billing_consistent(result, server)


def test_fallback_after_timeout(scripted, db_url: str) -> None:
    server = scripted(with_tokens(panel_script(**{
        "m-a": model_script("m-a", timeout_sleep=4.0, faults=[{"kind": "timeout", "attempts": [1]}]),
    })))
    result = run(server, db_url, research={"timeout_s": 1.0, "attempts_per_model": 1})
    failed, served = calls_of(result, "A")
    assert (failed.model, failed.status, failed.error_kind) == ("m-a", "failed", "timeout")
    assert failed.cost_usd == 0.0
    assert (served.model, served.model_requested, served.status) == ("m-spare", "m-a", "ok")
    assert served.cost_usd == pytest.approx(expected_cost("m-spare", 1000, 200))
    assert result.verdict is not None and not result.verdict.degraded
    # The abandoned request reached the server (and was cut off there): it has its record too.
    assert [r.model for r in server.requests].count("m-a") == 1
    assert_billing_consistent(result, server)


def test_member_failing_with_fallback_none_degrades_the_verdict(scripted, db_url: str) -> None:
    server = scripted(with_tokens(panel_script(**{
        "m-a": model_script("m-a", faults=[{"kind": "500", "rate": 1.0}]),
    })))
    result = run(server, db_url, research={"fallback": "none"})
    assert all(len(s["chain"]) == 1 for s in result.panel)
    v = result.verdict
    assert v is not None
    assert v.degraded is True
    assert [(f.member_label, f.model, f.error_kind) for f in v.failed_members] == [("A", "m-a", "server_error")]
    assert "member A (m-a) failed: server_error" in v.degraded_reasons
    assert (v.members_answered, v.quorum_met, v.decided_by) == (2, True, "adjudicator")
    assert result.status == "degraded"
    (rec,) = calls_of(result, "A")
    assert (rec.model, rec.status, rec.error_kind) == ("m-a", "failed", "server_error")
    stored = Store(db_url).load_run(result.run_id)
    assert stored.failures == [MemberFailure(
        run_id=result.run_id, member_label="A", model_requested="m-a", error_kind="server_error",
        reason=stored.failures[0].reason, call_ids=[rec.call_id],
    )]
    assert stored.failures[0].reason.startswith("m-a: ")
    assert "internal error serving model 'm-a'" in stored.failures[0].reason
    assert {a.member_label for a in result.answers} == {"B", "C"}
    assert_billing_consistent(result, server)


def test_member_failing_on_its_whole_chain(scripted, db_url: str) -> None:
    always_500 = [{"kind": "500", "rate": 1.0}]
    server = scripted(with_tokens(panel_script(**{
        "m-a": model_script("m-a", faults=always_500),
        "m-spare": model_script("m-spare", faults=always_500),
    })))
    result = run(server, db_url, research={"max_fallbacks": 1})
    assert {s["label"]: s["chain"] for s in result.panel}["A"] == ["m-a", "m-spare"]
    recs = calls_of(result, "A")
    assert [(c.attempt, c.model, c.status, c.error_kind) for c in recs] == [
        (1, "m-a", "failed", "server_error"), (2, "m-spare", "failed", "server_error")]
    v = result.verdict
    assert v is not None and v.degraded
    assert [f.member_label for f in v.failed_members] == ["A"]
    (failure,) = result.failures
    assert failure.call_ids == [c.call_id for c in recs]
    assert failure.model_requested == "m-a" and "m-spare" in failure.reason
    assert_billing_consistent(result, server)


def test_quorum_not_met_when_two_of_three_fail(scripted, db_url: str) -> None:
    always_500 = [{"kind": "500", "rate": 1.0}]
    server = scripted(with_tokens(panel_script(**{
        "m-a": model_script("m-a", faults=always_500),
        "m-b": model_script("m-b", faults=always_500),
    })))
    result = run(server, db_url, research={"fallback": "none"})
    v = result.verdict
    assert v is not None
    assert (v.members_total, v.members_answered, v.quorum, v.quorum_met) == (3, 1, 2, False)
    assert v.degraded
    assert "quorum not met: 1 of 2 required members answered" in v.degraded_reasons
    assert sorted(f.member_label for f in v.failed_members) == ["A", "B"]
    assert sorted(f.member_label for f in Store(db_url).load_run(result.run_id).failures) == ["A", "B"]
    assert result.status == "degraded"
    assert_billing_consistent(result, server)


def test_all_members_failing_makes_no_adjudicator_call(scripted, db_url: str) -> None:
    always_500 = [{"kind": "500", "rate": 1.0}]
    server = scripted(with_tokens(panel_script(**{
        name: model_script(name, faults=always_500) for name in ("m-a", "m-b", "m-c", "m-spare")
    })))
    result = run(server, db_url)
    assert "judge" not in server.stats()["requests"]
    assert not [c for c in result.calls if c.node == "adjudicate"]
    v = result.verdict
    assert v is not None
    assert v.decided_by == "none" and v.adjudicator_call_id is None
    assert v.confidence == 0.0 and v.support == [] and v.agreement == 0.0
    assert v.answer.startswith("no verdict")
    assert v.degraded and "no member answered" in v.degraded_reasons
    assert (v.members_answered, v.quorum_met) == (0, False)
    assert sorted(f.member_label for f in v.failed_members) == ["A", "B", "C"]
    assert result.answers == [] and result.claims == []
    assert len(result.calls) == 12  # three members x four models each, every one refused
    assert result.total_cost_usd == 0.0
    assert result.status == "degraded"
    assert_billing_consistent(result, server)


def test_adjudicator_failure_degrades_with_reason(scripted, db_url: str) -> None:
    server = scripted(with_tokens(panel_script(judge=model_script("judge", faults=[{"kind": "500", "rate": 1.0}]))))
    result = run(server, db_url)
    v = result.verdict
    assert v is not None
    # The contested panel falls back to its unsettled weighted vote, and says so.
    assert v.degraded and v.decided_by == "vote" and v.adjudicator_call_id is None
    assert v.members_answered == 3 and v.failed_members == []
    assert len(v.degraded_reasons) == 2 and v.degraded_reasons[0].startswith("adjudicator failed: server_error")
    assert v.degraded_reasons[1] == "verdict is the unsettled weighted vote"
    # Nothing was accepted: the two contested clusters stay unresolved, the lone claim uncorroborated.
    assert v.support == [] and v.contradicted == [] and v.confidence == 0.0 and v.agreement == 0.0
    k1, k2, k3 = result.clusters
    assert [(k.status, k.settled_by) for k in result.clusters] == [
        ("unresolved", "none"), ("uncorroborated", "vote"), ("unresolved", "none")]
    assert v.unresolved == [k1.cluster_id, k3.cluster_id] and v.settled_by_adjudicator == []
    assert v.settled_by_vote == [k2.cluster_id]
    # With no backing anywhere, the answer is that of the most reliable member, ties to the first seat.
    assert v.answer == "No, it is not visible."
    (rec,) = calls_of(result, "adjudicator")
    assert (rec.status, rec.error_kind, rec.model) == ("failed", "server_error", "judge")
    assert result.status == "degraded"
    assert_billing_consistent(result, server)


def test_price_ceiling_keeps_expensive_model_out_of_every_chain(scripted, db_url: str) -> None:
    server = scripted(with_tokens(panel_script()))
    result = run(server, db_url, research={"max_output_usd_per_mtok": 1.5})  # m-a costs 2.0 per Mtok out
    chains = {s["label"]: s["chain"] for s in result.panel}
    assert chains == {
        "A": ["m-b", "m-c", "m-spare"],
        "B": ["m-c", "m-b", "m-spare"],
        "C": ["m-spare", "m-b", "m-c"],
        "adjudicator": ["judge"],
    }
    assert all("m-a" not in chain for chain in chains.values())
    assert "m-a" not in server.stats()["requests"]
    assert all(c.model != "m-a" for c in result.calls)
    assert result.verdict is not None and not result.verdict.degraded
    assert_billing_consistent(result, server)


def test_per_call_ceiling_skips_a_model_with_a_record_but_no_request(scripted, db_url: str) -> None:
    server = scripted(with_tokens(panel_script()))
    # m-a's worst case (prompt + 800 output tokens at $2/Mtok) is above $0.0015; m-b's and m-spare's are not.
    result = run(server, db_url, research={"max_call_usd": 0.0015})
    skipped, served = calls_of(result, "A")
    assert (skipped.attempt, skipped.model, skipped.status, skipped.error_kind) == (1, "m-a", "skipped", "price_ceiling")
    assert skipped.cost_usd == 0.0 and skipped.request_id is None
    assert (served.attempt, served.model, served.model_requested, served.status) == (2, "m-spare", "m-a", "ok")
    assert "m-a" not in server.stats()["requests"]
    assert len(result.calls) == 5 and len(server.requests) == 4
    assert_billing_consistent(result, server)


@pytest.mark.parametrize("fault", ["malformed_json", "wrong_schema"])
def test_invalid_answer_is_retried_then_valid(scripted, db_url: str, fault: str) -> None:
    server = scripted(with_tokens(panel_script(**{"m-a": model_script("m-a", faults=[{"kind": fault, "attempts": [1]}])})))
    result = run(server, db_url, research={"answer_retries": 1})
    bad, good = calls_of(result, "A")
    assert (bad.model, bad.status, bad.error_kind) == ("m-a", "invalid", "invalid_answer")
    # The invalid answer was served and paid for: it is charged like any other.
    assert bad.cost_usd == pytest.approx(expected_cost("m-a", 1000, 200)) and bad.cost_usd > 0
    assert (good.model, good.status, good.attempt) == ("m-a", "ok", 2)
    assert [r.attempt for r in server.requests if r.model == "m-a"] == [1, 2]
    assert result.verdict is not None and not result.verdict.degraded
    assert next(a for a in result.answers if a.member_label == "A").call_id == good.call_id
    assert_billing_consistent(result, server)


def test_invalid_answers_exhaust_retries_then_fall_back(scripted, db_url: str) -> None:
    server = scripted(with_tokens(panel_script(**{"m-a": model_script("m-a", faults=[{"kind": "malformed_json", "rate": 1.0}])})))
    result = run(server, db_url, research={"answer_retries": 1})
    assert [(c.model, c.status) for c in calls_of(result, "A")] == [
        ("m-a", "invalid"), ("m-a", "invalid"), ("m-spare", "ok")]
    assert_billing_consistent(result, server)


def test_check_gives_a_label(scripted, db_url: str) -> None:
    claim = "The Great Wall of China is visible from low Earth orbit with the naked eye."
    script = with_tokens(panel_script(
        **{
            "m-a": {"answers": [{"content": answer("False.", [("Not visible unaided from LEO.", 0.9)], label="REFUTED")}]},
            "m-b": {"answers": [{"content": answer("False.", [("Too narrow to see.", 0.8)], label="REFUTED")}]},
            "m-c": {"answers": [{"content": answer("True.", [("Visible from space.", 0.5)], label="SUPPORTED")}]},
        },
        judge={"answers": [{"content": ruling("The claim is false.", ["C1"], label="REFUTED")}]},
    ))
    server = scripted(script)
    result = Council(panel_config(server.base_url), db=db_url).check(claim)
    assert result.task == "check"
    assert result.verdict is not None and result.verdict.label == "REFUTED"
    assert result.verdict.answer == "The claim is false."
    assert {a.member_label: a.label for a in result.answers} == {"A": "REFUTED", "B": "REFUTED", "C": "SUPPORTED"}
    assert result.member_policy.startswith("fact_check@")
    assert {c.policy_name for c in result.calls if c.node == "member"} == {"fact_check"}
    assert Store(db_url).list_runs()[0].verdict == "REFUTED"
    assert_billing_consistent(result, server)


def test_module_level_ask_with_dict_config_twice_in_a_row(scripted, db_url: str) -> None:
    server = scripted(with_tokens(panel_script()))
    config = panel_config(server.base_url)
    first = council.ask(GREAT_WALL, config=config, db=db_url)
    # A second sync call in the same process must reuse a live event loop (litellm caches its clients).
    second = council.ask("Can astronauts see the Great Wall from the ISS?", config=config, db=db_url)
    assert first.run_id != second.run_id
    for r in (first, second):
        assert r.verdict is not None and r.verdict.decided_by == "adjudicator" and not r.verdict.degraded
        assert len(r.calls) == 4 and all(c.status == "ok" for c in r.calls)
    assert second.question == "Can astronauts see the Great Wall from the ISS?"
    assert {r.run_id for r in Store(db_url).list_runs()} == {first.run_id, second.run_id}
    assert len(server.requests) == 8


def test_config_file_path_and_council_reuse(scripted, db_url: str, write_config) -> None:
    server = scripted(with_tokens(panel_script()))
    path: Path = write_config({"database": db_url, **panel_config(server.base_url)})
    c = Council(str(path))
    r1 = c.ask(GREAT_WALL)
    r2 = c.ask(GREAT_WALL)
    assert r1.run_id != r2.run_id
    assert [r.run_id for r in Store(db_url).list_runs()] == [r2.run_id, r1.run_id]


async def test_async_aask(scripted, db_url: str) -> None:
    server = scripted(with_tokens(panel_script()))
    result = await Council(panel_config(server.base_url), db=db_url).aask(GREAT_WALL)
    assert result.verdict is not None and result.verdict.decided_by == "adjudicator"
    assert len(result.claims) == 4
    assert isinstance(result.graph, nx.MultiDiGraph)
    assert_billing_consistent(result, server)


def test_total_cost_is_the_sum_of_call_records_in_the_store(scripted, db_url: str) -> None:
    server = scripted(with_tokens(panel_script(**{
        "m-a": model_script("m-a", faults=[{"kind": "malformed_json", "attempts": [1]}]),
        "m-b": model_script("m-b", faults=[{"kind": "429", "attempts": [1]}]),
    })))
    result = run(server, db_url, research={"rate_limit_wait_s": 0})  # a 429 falls back at once
    stored = Store(db_url).load_run(result.run_id)
    assert stored.total_cost_usd == pytest.approx(sum(c.cost_usd for c in stored.calls))
    # m-a twice (invalid then ok), m-b refused then m-spare, m-c, judge
    expected = 2 * expected_cost("m-a", 1000, 200) + expected_cost("m-spare", 1000, 200) \
        + expected_cost("m-c", 1000, 200) + expected_cost("judge", 1000, 200)
    assert result.total_cost_usd == pytest.approx(expected)
    assert Store(db_url).list_runs()[0].total_cost_usd == pytest.approx(expected)


def test_council_takes_a_plain_path_like_the_cli(scripted, tmp_path: Path) -> None:
    server = scripted(with_tokens(panel_script()))
    path = tmp_path / "plain.db"
    c = Council(panel_config(server.base_url), db=str(path))
    result = c.check(GREAT_WALL)
    c.feedback(result.run_id, "REFUTED")  # the run is in the database the council writes to
    assert c.db_url == f"sqlite:///{path}"
    assert Store(str(path)).load_run(result.run_id).feedback_label == "REFUTED"
    assert Council(panel_config(server.base_url), db=path).store.list_runs()[0].run_id == result.run_id
    with pytest.raises(council.StoreError, match="does not exist"):
        Council(panel_config(server.base_url), db=str(tmp_path / "no" / "such" / "dir.db"))
    assert not (tmp_path / "no").exists()


def test_empty_question_is_refused_before_anything_is_stored(db_url: str) -> None:
    c = Council(panel_config("http://127.0.0.1:9/v1"), db=db_url)
    with pytest.raises(council.InputError, match="question is empty"):
        c.ask("   ")
    assert Store(db_url).list_runs() == []


def _row_counts(url: str) -> dict[str, int]:
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = [t for t in inspect(conn).get_table_names() if t != "council_migrations"]
            return {t: conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in tables}
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("question", "policies", "models", "error", "message"),
    [
        ("x" * 40_000, {}, {}, council.InputError, r"over the context budget of policy 'research' \(8000 tokens\)"),
        (GREAT_WALL, {"research": {"required_capabilities": ["text", "vision"]}}, {}, council.QualificationError,
         r"no model qualifies for policy 'research' .*lacks capability vision"),
        (GREAT_WALL, {}, {"m-b": {"api_key_env": "COUNCIL_TEST_KEY_THAT_IS_NOT_SET"}}, council.ConfigError,
         r"needs the API key env var COUNCIL_TEST_KEY_THAT_IS_NOT_SET"),
        (GREAT_WALL, {}, {"m-b": {"model": "nosuchprovider/m-b", "api_base": None}}, council.ConfigError,
         r"unknown model 'nosuchprovider/m-b'"),
    ],
    ids=["too-long", "missing-capability", "missing-key", "unknown-model"],
)
def test_bad_input_raises_and_writes_nothing(
    db_url: str, monkeypatch: pytest.MonkeyPatch, question: str, policies: dict[str, Any],
    models: dict[str, Any], error: type[Exception], message: str,
) -> None:
    monkeypatch.delenv("COUNCIL_TEST_KEY_THAT_IS_NOT_SET", raising=False)
    config = panel_config("http://127.0.0.1:9/v1", **policies)
    for name, changes in models.items():
        config["models"][name] = {k: v for k, v in {**config["models"][name], **changes}.items() if v is not None}
    with pytest.raises(error, match=message):
        Council(config, db=db_url).ask(question)
    # the request was refused before it could be served: not even the database file exists
    assert not Path(db_url.removeprefix("sqlite:///")).exists()
    assert Store(db_url).list_runs() == []
    counts = _row_counts(db_url)
    assert {"runs", "calls", "answers", "claims", "verdicts", "member_failures"} <= set(counts)
    assert all(n == 0 for n in counts.values()), counts


class _Interrupted(BaseException):
    """Stands in for KeyboardInterrupt, so a stray signal cannot abort the pytest session."""


def _wait_until_only_m_a_is_in_flight(server: ScriptedServer) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        s = server.stats()
        if s["requests"].get("m-a") == 1 and s["in_flight"] == 1 and s["total_requests"] == 3:
            return
        time.sleep(0.02)
    raise AssertionError(f"the run never reached the slow member: {server.stats()}")


def test_interrupted_sync_ask_marks_the_run_failed(scripted, db_url: str) -> None:
    # Ctrl-C while a sync ask waits: the run must not stay "running" in the database forever.
    server = scripted(with_tokens(panel_script(**{"m-a": model_script("m-a", latency=30.0)})))
    c = Council(panel_config(server.base_url, research={"timeout_s": 60.0}), db=db_url)

    def interrupt() -> None:
        _wait_until_only_m_a_is_in_flight(server)
        os.kill(os.getpid(), signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        raise _Interrupted()

    old = signal.signal(signal.SIGINT, handler)
    thread = threading.Thread(target=interrupt, daemon=True)
    try:
        thread.start()
        with pytest.raises(_Interrupted):
            c.ask(GREAT_WALL)
        thread.join()
    finally:
        signal.signal(signal.SIGINT, old)
    (run_,) = Store(db_url).list_runs()
    assert run_.status == "failed"
    stored = Store(db_url).load_run(run_.run_id)
    # the two members that had answered keep their (paid) call records, and the run's cost is theirs;
    # the call cut short was sent, so it keeps a record too: interrupted, cost unknown
    assert sorted(c.model for c in stored.calls if c.status != "interrupted") == ["m-b", "m-c"]
    assert [(c.model, c.cost_source) for c in stored.calls if c.status == "interrupted"] == [("m-a", "unknown")]
    assert stored.total_cost_usd == pytest.approx(expected_cost("m-b", 1000, 200) + expected_cost("m-c", 1000, 200))


async def test_cancelled_aask_marks_the_run_failed(scripted, db_url: str) -> None:
    server = scripted(with_tokens(panel_script(**{"m-a": model_script("m-a", latency=30.0)})))
    c = Council(panel_config(server.base_url, research={"timeout_s": 60.0}), db=db_url)
    task = asyncio.ensure_future(c.aask(GREAT_WALL))
    await asyncio.to_thread(_wait_until_only_m_a_is_in_flight, server)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (run_,) = Store(db_url).list_runs()
    assert run_.status == "failed"
