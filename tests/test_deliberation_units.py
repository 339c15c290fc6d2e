"""Unit tests of claim building and reconciliation as plain functions (no graph, no HTTP)."""

from __future__ import annotations

import pytest

from council.calls.answers import AnswerDraft, MemberOutcome
from council.calls.records import CallRecord
from council.config.policy import TaskPolicy
from council.deliberation.claims import build_answer, build_failure, normalize_claim_text
from council.deliberation.embeddings import LexicalEmbedder
from council.deliberation.reconcile import adjudication_need, reconcile, verified_answers
from council.deliberation.sources import Passage
from council.ids import content_id

POLICY = TaskPolicy(name="research", quorum=2, min_supporters=2)


def draft(answer: str, *claims: tuple[str, float], label: str | None = None, citations=None) -> AnswerDraft:
    return AnswerDraft.model_validate({
        "answer": answer, "label": label,
        "claims": [{"text": t, "confidence": c, "citations": citations or []} for t, c in claims],
    })


def answer_of(label: str, model: str, d: AnswerDraft, task: str = "ask"):
    return build_answer(run_id="r1", member_label=label, model=model, call_id=f"call-{label}", draft=d, task=task,
                        raw_text="{}")


def test_build_answer_normalises_dedupes_and_gives_content_ids() -> None:
    a = answer_of("A", "m-a", draft("No.", ("  The wall   is narrow. ", 0.8), ("the wall is NARROW.", 0.5),
                                     ("It is 6 m wide.", 0.7), label="REFUTED"))
    assert [c.text for c in a.claims] == ["The wall is narrow.", "It is 6 m wide."]
    assert [c.confidence for c in a.claims] == [0.8, 0.7]
    assert a.answer_id == content_id("r1", "A", "call-A")
    assert a.claims[0].claim_id == content_id("r1", "A", "The wall is narrow.")
    assert all(c.answer_id == a.answer_id and c.model == "m-a" and c.member_label == "A" for c in a.claims)
    assert a.label is None  # a question has no label
    assert answer_of("A", "m-a", draft("No.", ("x", 0.5), label="REFUTED"), task="check").label == "REFUTED"
    assert normalize_claim_text(" a \n b ") == "a b"


def test_build_failure_lists_every_call() -> None:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    recs = [CallRecord(call_id=f"c{i}", run_id="r1", node="member", member_label="A", model_requested="m-a",
                       model="m-a", policy_name="research", policy_version="v", template_name="t",
                       template_hash="h", attempt=i, status="failed", started_at=now, finished_at=now)
            for i in (1, 2)]
    f = build_failure(run_id="r1", member_label="A", model_requested="m-a", error_kind=None, reason=None,
                      records=recs, raw_text=None)
    assert (f.error_kind, f.reason, f.call_ids) == ("unknown", "no answer", ["c1", "c2"])


def test_verified_answers_orders_members_and_checks_quotes() -> None:
    cit = [{"source_id": "S1", "quote": "six metres wide"}, {"source_id": "S9", "quote": "x"}]
    b = answer_of("B", "m-b", draft("No.", ("The wall is six metres wide.", 0.9), citations=cit))
    a = answer_of("A", "m-a", draft("No.", ("Other.", 0.9)))
    failure = build_failure(run_id="r1", member_label="C", model_requested="m-c", error_kind="timeout",
                            reason="slow", records=[], raw_text=None)
    passages = [Passage(passage_id="S1", source_id="doc", position=0, key="k", text="The wall is six metres wide.")]
    outs = [MemberOutcome(member_label="C", failure=failure), MemberOutcome(member_label="B", answer=b),
            MemberOutcome(member_label="A", answer=a)]
    answers, failures = verified_answers(outs, passages)
    assert [x.member_label for x in answers] == ["A", "B"] and failures == [failure]
    assert [c.verified for c in answers[1].claims[0].citations] == [True, False]
    # Without sources nothing can be verified: None, not False.
    answers, _ = verified_answers(outs, [])
    assert [c.verified for c in answers[1].claims[0].citations] == [None, None]


def _panel():
    return [
        answer_of("A", "m-a", draft("No.", ("The Great Wall is not visible from orbit.", 0.9), ("It is 6 m wide.", 0.8))),
        answer_of("B", "m-b", draft("No.", ("The Great Wall is not visible from orbit.", 0.85))),
        answer_of("C", "m-c", draft("Yes.", ("The Great Wall is visible from orbit.", 0.6))),
    ]


def test_reconcile_clusters_and_settles_by_weighted_vote() -> None:
    rec = reconcile(task="ask", answers=_panel(), failures=[], embedder=LexicalEmbedder(), reliability={},
                    policy=POLICY, sources_given=False)
    by_text = {k.text: k for k in rec.clusters}
    not_visible = by_text["The Great Wall is not visible from orbit."]
    visible = by_text["The Great Wall is visible from orbit."]
    assert not_visible.member_labels == ["A", "B"] and visible.contradicts == [not_visible.cluster_id]
    # Two members at the 0.7 prior against one: posterior below 0.8, so contested.
    assert (not_visible.status, visible.status) == ("contested", "contested")
    assert rec.needs_adjudicator and rec.reason == "2 contested cluster(s)"
    assert all(c.cluster_id for a in rec.answers for c in a.claims)
    # Reliabilities learned from history settle the same split by vote.
    rec2 = reconcile(task="ask", answers=_panel(), failures=[], embedder=LexicalEmbedder(),
                     reliability={"m-a": 0.95, "m-b": 0.95, "m-c": 0.55}, policy=POLICY, sources_given=False)
    k = {x.text: x for x in rec2.clusters}
    assert k["The Great Wall is not visible from orbit."].status == "accepted"
    assert k["The Great Wall is visible from orbit."].status == "rejected"
    assert not rec2.needs_adjudicator and rec2.reason == "settled by the weighted vote"


def test_claim_factors_from_reviews_move_a_claim_toward_chance() -> None:
    panel = _panel()
    c_claim = panel[2].claims[0].claim_id
    base = reconcile(task="ask", answers=panel, failures=[], embedder=LexicalEmbedder(), reliability={},
                     policy=POLICY, sources_given=False)
    judged = reconcile(task="ask", answers=panel, failures=[], embedder=LexicalEmbedder(), reliability={},
                       policy=POLICY, sources_given=False, claim_factors={c_claim: 0.0})
    b = {k.text: k for k in base.clusters}["The Great Wall is not visible from orbit."]
    j = {k.text: k for k in judged.clusters}["The Great Wall is not visible from orbit."]
    assert j.con_weight == 0.0 < b.con_weight
    assert j.support > b.support and j.status == "accepted"


def test_check_label_vote_and_quorum() -> None:
    answers = [answer_of(x, f"m-{x.lower()}", draft("No.", ("c", 0.9), label="REFUTED"), task="check") for x in "AB"]
    rec = reconcile(task="check", answers=answers, failures=[], embedder=LexicalEmbedder(),
                    reliability={"m-a": 0.9, "m-b": 0.9}, policy=POLICY, sources_given=False)
    assert rec.label_vote is not None and rec.label_vote.label == "REFUTED" and rec.label_vote.settled
    one = reconcile(task="check", answers=answers[:1], failures=[], embedder=LexicalEmbedder(),
                    reliability={"m-a": 0.99}, policy=POLICY, sources_given=False)
    assert one.needs_adjudicator and one.reason == "quorum not met"


@pytest.mark.parametrize("task,n,why", [("ask", 0, "no member answered"),
                                         ("ask", 2, "no claim was corroborated by a second member")])
def test_adjudication_need_reasons(task: str, n: int, why: str) -> None:
    answers = [answer_of(x, "m", draft("x", (f"claim {x}", 0.9))) for x in "AB"][:n]
    rec = reconcile(task=task, answers=answers, failures=[], embedder=LexicalEmbedder(), reliability={},
                    policy=POLICY, sources_given=False)
    assert adjudication_need(task, answers, rec.clusters, None, True) == (n > 0, why)


def test_review_factors_weaken_a_label_whose_claims_were_judged_inaccurate() -> None:
    answers = [answer_of("A", "m-a", draft("Yes.", ("x is true", 0.9), label="SUPPORTED"), task="check"),
               answer_of("B", "m-b", draft("No.", ("x is not true", 0.6), label="REFUTED"), task="check")]
    base = reconcile(task="check", answers=answers, failures=[], embedder=LexicalEmbedder(), reliability={},
                     policy=POLICY, sources_given=False)
    judged = reconcile(task="check", answers=answers, failures=[], embedder=LexicalEmbedder(), reliability={},
                       policy=POLICY, sources_given=False, claim_factors={answers[0].claims[0].claim_id: 0.0})
    assert base.label_vote is not None and base.label_vote.label == "SUPPORTED"
    assert judged.label_vote is not None and judged.label_vote.label == "REFUTED"
