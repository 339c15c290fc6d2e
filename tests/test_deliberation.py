"""Recipes with review and escalate stages, end to end over loopback through the real litellm path.

The scripted server plays members, reviewers and the strong tier; assertions compare what the server
received (which prompts, how many calls per model) with what the store recorded.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import GREAT_WALL, answer, panel_config, panel_script, ruling
from support import M_C_CLAIM, cascade_config, review_script
from council import Council

@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(model, full text of every message) of each chat request the gateway sends."""
    from council.calls import gateway

    seen: list[tuple[str, str]] = []
    real = gateway.acomplete

    async def spy(entry: Any, messages: Any, **kw: Any) -> Any:
        text = "\n".join(m.content if isinstance(m.content, str) else json.dumps([p.model_dump() for p in m.content])
                         for m in messages)
        seen.append((entry.name, text))
        return await real(entry, messages, **kw)

    monkeypatch.setattr(gateway, "acomplete", spy)
    return seen


def test_review_recipe_never_sends_a_reviewer_its_own_answer(scripted, db_url: str, captured) -> None:
    srv = scripted(review_script())
    result = Council(panel_config(srv.base_url), db=db_url, recipe="review").ask(GREAT_WALL)
    assert result.recipe == "review" and result.status == "done"
    reviews = {r.reviewer_label: r for r in result.reviews}
    assert sorted(reviews) == ["A", "B", "C"] and all(r.status == "ok" for r in reviews.values())
    own = {"A": "The wall is only about 6 m wide.", "B": "It cannot be seen with the naked eye",
           "C": M_C_CLAIM}
    review_prompts = [(m, t) for m, t in captured if "Review these responses" in t]
    assert sorted(m for m, _ in review_prompts) == ["m-a", "m-b", "m-c"]
    model_of = {"m-a": "A", "m-b": "B", "m-c": "C"}
    for model, text in review_prompts:
        me = model_of[model]
        assert own[me] not in text  # its own answer was never sent
        for other in set(own) - {me}:
            assert own[other] in text
        assert sorted(reviews[me].shown) == sorted(set(own) - {me})
    # Requests the server received: members answer once, review once; the judge is not needed.
    assert srv.stats()["requests"] == {"m-a": 2, "m-b": 2, "m-c": 2}
    review_calls = [c for c in result.calls if c.node == "review"]
    assert len(review_calls) == 3 and all(c.policy_name == "peer_review" for c in review_calls)
    assert {r.call_id for r in reviews.values()} == {c.call_id for c in review_calls}


def test_review_judgements_settle_the_vote_and_borda_ranks_members(scripted, db_url: str) -> None:
    srv = scripted(review_script())
    result = Council(panel_config(srv.base_url), db=db_url, recipe="review").ask(GREAT_WALL)
    v = result.verdict
    assert v is not None
    c_claim = next(c.claim_id for c in result.claims if c.member_label == "C")
    judged = {(r.reviewer_label, j.claim_id): j.verdict for r in result.reviews for j in r.judgements}
    assert judged[("A", c_claim)] == judged[("B", c_claim)] == "inaccurate"
    assert all(verdict == "unverifiable" for (rev, _), verdict in judged.items() if rev == "C")
    # Without review this split is contested (see test_engine); the reviewers' judgements settle it.
    by_text = {k.text: k for k in result.clusters}
    assert by_text[M_C_CLAIM].status == "rejected" and by_text[M_C_CLAIM].settled_by == "vote"
    assert v.decided_by == "vote" and v.adjudicator_call_id is None
    assert c_claim in v.contradicted
    # Borda: A ranked first by B and C (1.0), B first by A and last by C (0.5), C last by A and B (0.0).
    assert v.borda == {"A": 1.0, "B": 0.5, "C": 0.0}
    assert {r.reviewer_label: r.ranking for r in result.reviews} == {"A": ["B", "C"], "B": ["A", "C"], "C": ["A", "B"]}
    stages = {s.stage: s for s in result.stage_costs}
    assert stages["review"].calls == 3
    assert sum(s.cost_usd for s in stages.values()) == pytest.approx(result.total_cost_usd)


def test_per_reviewer_shuffles_differ() -> None:
    from council.deliberation.claims import build_answer
    from council.calls.answers import AnswerDraft
    from council.deliberation.review import review_view

    answers = [build_answer(run_id="r", member_label=x, model="m", call_id=x,
                            draft=AnswerDraft(answer=x, claims=[{"text": f"claim {x}", "confidence": 0.5}]),
                            task="ask", raw_text="") for x in "ABCDEFG"]
    orders = {x: tuple(review_view("run-7", x, answers).shown) for x in "ABCDEFG"}
    for x, shown in orders.items():
        assert x not in shown and sorted(shown) == sorted(set("ABCDEFG") - {x})
    # Each reviewer gets its own order (the same run and reviewer always the same one).
    stripped = {tuple(m for m in shown if m not in "AB") for x, shown in orders.items() if x in "AB"}
    assert len(stripped) == 2
    assert len({tuple(sorted(s)) == s for s in orders.values()}) >= 1
    assert orders["C"] == tuple(review_view("run-7", "C", answers).shown)


def test_borda_worked_example() -> None:
    from council.deliberation.review import Review, borda

    def r(label: str, ranking: list[str]) -> Review:
        return Review(review_id=label, run_id="r", reviewer_label=label, reviewer_model="m", shown=ranking,
                      ranking=ranking)

    # Four members; each reviews the three others. Points per position with n=3: 1, 0.5, 0.
    reviews = [r("A", ["B", "C", "D"]), r("B", ["A", "C", "D"]), r("C", ["B", "A", "D"]), r("D", ["C", "B", "A"])]
    assert borda(reviews) == {"A": pytest.approx((1.0 + 0.5 + 0.0) / 3), "B": pytest.approx((1.0 + 1.0 + 0.5) / 3),
                              "C": pytest.approx((0.5 + 0.5 + 1.0) / 3), "D": pytest.approx(0.0)}
    # A reviewer that ranked only two (the other answer missing) counts on the same 0..1 scale.
    assert borda([r("A", ["B", "C"])]) == {"B": 1.0, "C": 0.0}


def test_failed_reviewer_degrades_the_run_and_says_which_review_is_missing(scripted, db_url: str) -> None:
    script = review_script()
    script["models"]["m-b"]["faults"] = [{"kind": "500", "attempts": [1], "match": "Review these responses"}]
    srv = scripted(script)
    result = Council(panel_config(srv.base_url), db=db_url, recipe="review").ask(GREAT_WALL)
    v = result.verdict
    assert v is not None and v.degraded and result.status == "degraded"
    assert "review by member B (m-b) missing: server_error" in v.degraded_reasons[0] or any(
        r.startswith("review by member B (m-b) missing") for r in v.degraded_reasons)
    failed = [r for r in result.reviews if r.status == "failed"]
    assert [r.reviewer_label for r in failed] == ["B"]
    assert [c.status for c in result.calls if c.node == "review" and c.member_label == "B"] == ["failed"]


# ------------------------------------------------------------------------------------------ cascade

NOT_VISIBLE = "The Great Wall is not visible to the naked eye from low Earth orbit."
WIDTH = "The wall is only about 6 m wide."


def strong_ruling(decisions: dict[str, str], label: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"rulings": [{"item": k, "decision": v, "reason": "scripted"} for k, v in decisions.items()]}
    if label:
        out["label"] = label
    return out


def cascade_script(**overrides: dict[str, Any]) -> dict[str, Any]:
    """m-a: not visible + width; m-b: visible (contradicts m-a). The strong tier backs m-a."""
    script = panel_script(**{
        "m-b": {"latency": 0.05, "answers": [{"content": answer("Yes.", [(M_C_CLAIM, 0.6)])}]},
        "strong-x": {"latency": 0.05, "answers": [{"match": "Items in doubt", "content": strong_ruling(
            {"E1": "true", "E2": "false"})}]},
    })
    script["models"].update(overrides)
    for m in script["models"].values():
        m.setdefault("prompt_tokens", 1000)
        m.setdefault("completion_tokens", 200)
    return script


def test_cascade_escalates_only_the_contested_clusters(scripted, db_url: str, captured) -> None:
    srv = scripted(cascade_script())
    result = Council(cascade_config(srv.base_url), db=db_url, recipe="cascade").ask(GREAT_WALL)
    # Cheap members once each, the strong tier once, the adjudicator never.
    assert srv.stats()["requests"] == {"m-a": 1, "m-b": 1, "strong-x": 1}
    strong_prompt = next(t for m, t in captured if m == "strong-x")
    assert NOT_VISIBLE in strong_prompt and M_C_CLAIM in strong_prompt
    assert WIDTH not in strong_prompt  # settled parts keep the cheap answers: never put to the strong tier
    k = {c.text: c for c in result.clusters}
    assert (k[NOT_VISIBLE].status, k[NOT_VISIBLE].settled_by) == ("accepted", "escalation")
    assert (k[M_C_CLAIM].status, k[M_C_CLAIM].settled_by) == ("rejected", "escalation")
    assert k[WIDTH].settled_by == "vote"
    esc = {e.cluster_label: e for e in result.escalations}
    assert sorted(esc) == sorted([k[NOT_VISIBLE].label, k[M_C_CLAIM].label])
    for e in esc.values():
        assert e.status == "settled" and e.models == ["strong-x"] and e.tier.startswith("escalation@")
        assert "posterior" in e.reason and "1 member(s) state it, 1 contradict it" in e.reason
    v = result.verdict
    assert v is not None and v.decided_by == "vote" and not v.degraded
    assert sorted(v.settled_by_escalation) == sorted([k[NOT_VISIBLE].cluster_id, k[M_C_CLAIM].cluster_id])
    strong_calls = [c for c in result.calls if c.node == "escalate"]
    assert len(strong_calls) == 1 and strong_calls[0].policy_name == "escalation" and strong_calls[0].status == "ok"
    stages = {s.stage: (s.calls, s.cost_usd) for s in result.stage_costs}
    assert stages["escalate"] == (1, pytest.approx((1000 * 5.0 + 200 * 10.0) / 1e6))


def test_cascade_settled_by_the_cheap_panel_never_calls_the_strong_tier(scripted, db_url: str) -> None:
    srv = scripted(cascade_script(**{"m-b": {"latency": 0.05, "answers": [{"content": answer(
        "No.", [("It cannot be seen with the naked eye from low Earth orbit.", 0.85)])}]}}))
    result = Council(cascade_config(srv.base_url), db=db_url, recipe="cascade").ask(GREAT_WALL)
    assert srv.stats()["requests"] == {"m-a": 1, "m-b": 1}
    assert result.escalations == [] and result.verdict is not None and result.verdict.escalated == []


def test_budget_stops_escalation_and_says_so(scripted, db_url: str) -> None:
    srv = scripted(cascade_script(judge={"latency": 0.05, "answers": [{"content": ruling("No.", ["C1"])}]}))
    cfg = cascade_config(srv.base_url, escalation={"max_input_usd_per_mtok": 300.0, "max_output_usd_per_mtok": 300.0})
    cfg["models"]["strong-x"].update(input_usd_per_mtok=100.0, output_usd_per_mtok=200.0)
    cfg["budget_usd"] = 0.03
    result = Council(cfg, db=db_url, recipe="cascade").ask(GREAT_WALL)
    assert "strong-x" not in srv.stats()["requests"]  # never sent
    skipped = [c for c in result.calls if c.node == "escalate"]
    assert [(c.status, c.error_kind) for c in skipped] == [("skipped", "budget")]
    assert all(e.status == "skipped_budget" for e in result.escalations) and len(result.escalations) == 2
    v = result.verdict
    assert v is not None and v.degraded
    assert any("skipped: budget" in r for r in v.degraded_reasons)
    assert result.total_cost_usd <= 0.03


def test_cascade_escalates_an_unsettled_label(scripted, db_url: str) -> None:
    srv = scripted(cascade_script(**{
        "m-a": {"latency": 0.05, "answers": [{"content": answer("No.", [(NOT_VISIBLE, 0.9)], label="REFUTED")}]},
        "m-b": {"latency": 0.05, "answers": [{"content": answer("Yes.", [(M_C_CLAIM, 0.6)], label="SUPPORTED")}]},
        "strong-x": {"latency": 0.05, "answers": [{"match": "Items in doubt", "content": strong_ruling(
            {"E1": "true", "E2": "false", "E3": "false"}, label="REFUTED")}]},
    }))
    result = Council(cascade_config(srv.base_url), db=db_url, recipe="cascade").check(
        "The Great Wall is visible from low Earth orbit.")
    v = result.verdict
    assert v is not None and v.label == "REFUTED" and "label" in v.settled_by_escalation
    lab = next(e for e in result.escalations if e.target == "label")
    assert lab.reason.startswith("label vote not settled") and lab.decisions == {"strong-x": "REFUTED"}
    assert "judge" not in srv.stats()["requests"]


def test_a_one_sentence_strong_model_is_left_out_of_an_open_questions_escalation(scripted, db_url: str) -> None:
    # Ranked first in the strong tier but it answers in one sentence: it cannot rule on the items E1, E2 of
    # an open question, so the chain goes straight to strong-x: no request, no skipped record for it.
    srv = scripted(cascade_script(**{"sent": {"latency": 0.05, "answers": [{"content": "Yes."}]}}))
    cfg = cascade_config(srv.base_url, escalation={"allowed_models": ["sent", "strong-x"],
                                                   "answer_styles": ["structured", "sentence"]})
    cfg["models"]["sent"] = {"model": "openai/sent", "api_base": srv.base_url, "quality": 99, "provider": "prov-s",
                             "answer_style": "sentence", "input_usd_per_mtok": 0.0, "output_usd_per_mtok": 0.0}
    result = Council(cfg, db=db_url, recipe="cascade").ask(GREAT_WALL)
    assert {e.status for e in result.escalations} == {"settled"}
    assert [c.model for c in result.calls if c.node == "escalate"] == ["strong-x"]
    assert "sent" not in srv.stats()["requests"]


# ------------------------------------------------------------------------------------------ provenance

def test_provenance_graph_and_prov_show_reviews_judgements_and_escalations(scripted, db_url: str) -> None:
    from council.provenance import to_prov, trace_claim

    srv = scripted(review_script())
    result = Council(panel_config(srv.base_url), db=db_url, recipe="review").ask(GREAT_WALL)
    g = result.graph
    reviews = [n for n, d in g.nodes(data=True) if d.get("kind") == "Review"]
    assert len(reviews) == 3
    answer_node = {a.member_label: f"answer:{a.answer_id}" for a in result.answers}
    for r in result.reviews:
        rid = f"review:{r.review_id}"
        reviewed = {v for _, v, rel in g.out_edges(rid, data="relation") if rel == "reviews"}
        assert reviewed == {answer_node[m] for m in r.shown} and answer_node[r.reviewer_label] not in reviewed
        assert (rid, f"call:{r.call_id}") in {(u, v) for u, v, rel in g.out_edges(rid, data="relation")
                                              if rel == "generated_by"}
    c_claim = next(c.claim_id for c in result.claims if c.member_label == "C")
    judges = [(u, d["verdict"]) for u, _, d in g.in_edges(f"claim:{c_claim}", data=True) if d["relation"] == "judges"]
    assert sorted(v for _, v in judges) == ["inaccurate", "inaccurate"]
    trace = trace_claim(g, c_claim)
    assert trace.judgements == {"A": "inaccurate", "B": "inaccurate"}
    assert "judged       inaccurate by reviewer A" in trace.describe()
    prov = to_prov(Council(panel_config(srv.base_url), db=db_url).store.load_run(result.run_id)).serialize()
    assert prov.count('"council:Review"') == 3 and '"council:Judgement"' in prov

    srv2 = scripted(cascade_script())
    res2 = Council(cascade_config(srv2.base_url), db=db_url, recipe="cascade").ask(GREAT_WALL)
    g2 = res2.graph
    esc = [(u, v) for u, v, rel in g2.edges(data="relation") if rel == "escalates"]
    assert sorted(v for _, v in esc) == sorted(f"cluster:{e.target}" for e in res2.escalations) and len(esc) == 2
    for e in res2.escalations:
        assert (f"escalation:{e.escalation_id}", f"call:{e.call_ids[0]}") in {
            (u, v) for u, v, rel in g2.edges(data="relation") if rel == "decided_by"}
    prov2 = to_prov(Council(panel_config(srv2.base_url), db=db_url).store.load_run(res2.run_id)).serialize()
    assert prov2.count('"council:Escalation"') == 2
