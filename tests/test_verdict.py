"""Direct unit tests of ``build_verdict``: hand-built answers, clusters, label votes and rulings, one test per
way a verdict can be decided (vote, adjudicator, failed adjudicator, nobody) and per degraded condition."""

from __future__ import annotations

from typing import Any

import pytest

from council.calls.answers import Claim, MemberAnswer, MemberFailure
from council.config.catalog import ModelEntry
from council.config.policy import TaskPolicy
from council.config.qualify import Panel, PanelSeat
from council.deliberation.adjudication import Adjudication, build_verdict
from council.deliberation.clusters import ClaimCluster
from council.deliberation.verdict import ClusterRuling, FailedMember, RulingDraft
from council.deliberation.vote import LabelVote
from council.ids import content_id

ASK = TaskPolicy(name="research")  # panel of 3, quorum 2, prior 0.7, human_review never
FLAGGED = TaskPolicy(name="research", human_review="when_flagged")


def claim(cid: str, member: str, text: str | None = None, confidence: float = 0.9) -> Claim:
    return Claim(claim_id=cid, run_id="r", answer_id=f"a-{member}", member_label=member, model=f"m-{member.lower()}",
                 text=text or f"claim {cid}", confidence=confidence)


def answer(member: str, text: str, claims: list[Claim], label: str | None = None) -> MemberAnswer:
    return MemberAnswer(answer_id=f"a-{member}", run_id="r", member_label=member, model=f"m-{member.lower()}",
                        call_id=f"call-{member}", answer=text, label=label, raw_text=text, confidence=None,
                        claims=claims)


def cluster(kid: str, claims: list[Claim], status: str, support: float = 0.0, settled_by: str = "vote",
            contradicts: tuple[str, ...] = ()) -> ClaimCluster:
    return ClaimCluster(cluster_id=kid, label=kid.upper(), claim_ids=[c.claim_id for c in claims],
                        member_labels=sorted({c.member_label for c in claims}), text=claims[0].text,
                        polarity="positive", contradicts=list(contradicts), support=support, status=status,
                        settled_by=settled_by)


def failure(member: str, kind: str = "timeout") -> MemberFailure:
    return MemberFailure(run_id="r", member_label=member, model_requested=f"m-{member.lower()}", error_kind=kind,
                         reason=f"{member} {kind}")


def panel(policy: TaskPolicy, *labels: str) -> Panel:
    seats = [PanelSeat(label=x, chain=[ModelEntry(name=f"m-{x.lower()}", model=f"openai/m-{x.lower()}")])
             for x in labels]
    return Panel(policy=policy, seats=seats, ranking=[s.chain[0].name for s in seats], excluded={})


def verdict(task: str, member_panel: Panel, answers: list[MemberAnswer], clusters: list[ClaimCluster], *,
            failures: list[MemberFailure] = (), label_vote: LabelVote | None = None,
            adjudication: Adjudication | None = None, reliability: dict[str, float] | None = None,
            quality: dict[str, float] | None = None, tags: dict[str, str] | None = None) -> Any:
    return build_verdict(run_id="r", task=task, member_panel=member_panel, answers=answers, failures=list(failures),
                         clusters=clusters, label_vote=label_vote, adjudication=adjudication,
                         reliability=reliability or {}, quality=quality or {}, tags=tags)


# ------------------------------------------------------------------------------------------ fact check


def _check_members() -> tuple[list[MemberAnswer], list[ClaimCluster]]:
    a1, b1, c1 = claim("a1", "A"), claim("b1", "B"), claim("c1", "C")
    answers = [answer("A", "Yes, A says so.", [a1], "SUPPORTED"), answer("B", "Yes, B says so.", [b1], "SUPPORTED"),
               answer("C", "No, C disagrees.", [c1], "REFUTED")]
    clusters = [cluster("k1", [a1, b1], "accepted", 0.92), cluster("k2", [c1], "rejected", 0.08, contradicts=("k1",))]
    return answers, clusters


def test_check_decided_by_the_settled_vote() -> None:
    answers, clusters = _check_members()
    vote = LabelVote(label="SUPPORTED", posterior=0.9, settled=True)
    v, out = verdict("check", panel(ASK, "A", "B", "C"), answers, clusters, label_vote=vote,
                     reliability={"m-a": 0.8, "m-b": 0.9})
    assert (v.decided_by, v.label, v.confidence, v.vote_posterior) == ("vote", "SUPPORTED", 0.9, 0.9)
    # The answer is the most reliable member among those who gave the winning label.
    assert v.answer == "Yes, B says so."
    assert v.agreement == pytest.approx(2 / 3)
    assert (v.support, v.contradicted) == (["a1", "b1"], ["c1"])
    assert (v.degraded, v.degraded_reasons, v.failed_members) == (False, [], [])
    assert (v.quorum, v.quorum_met, v.members_total, v.members_answered) == (2, True, 3, 3)
    assert (v.settled_by_vote, v.settled_by_adjudicator, v.unresolved) == (["k1", "k2"], [], [])
    assert (v.rationale, v.adjudicator_call_id) == ("", None)
    assert v.majority_answer == "SUPPORTED"
    assert (v.best_member, v.best_member_model, v.best_member_answer) == ("B", "m-b", "SUPPORTED")
    assert (v.needs_human_review, v.review_reasons) == (False, [])
    assert v.verdict_id == content_id("r", "verdict") and v.clusters_total == 2
    assert [k.status for k in out] == ["accepted", "rejected"]


def test_check_vote_label_nobody_gave_falls_back_to_every_member() -> None:
    answers, clusters = _check_members()
    vote = LabelVote(label="NOT_ENOUGH_INFO", posterior=0.55, settled=False)
    v, _ = verdict("check", panel(ASK, "A", "B", "C"), answers, clusters, label_vote=vote,
                   reliability={"m-c": 0.95})
    assert (v.label, v.answer, v.confidence, v.agreement) == ("NOT_ENOUGH_INFO", "No, C disagrees.", 0.55, 0.0)
    assert (v.best_member, v.best_member_answer) == ("C", "REFUTED")


def test_check_ruling_without_label_leaves_the_label_to_the_vote_and_says_so() -> None:
    answers, clusters = _check_members()
    ruling = RulingDraft(answer="Refuted after all.", confidence=0.7, rationale="K1 is wrong")
    adj = Adjudication(ruling=ruling, call_id="call-adj")
    vote = LabelVote(label="REFUTED", posterior=0.6, settled=False)
    v, _ = verdict("check", panel(ASK, "A", "B", "C"), answers, clusters, label_vote=vote, adjudication=adj)
    # The label came from the vote: the verdict says so, with the vote's posterior and a member's answer.
    assert (v.decided_by, v.label, v.answer, v.confidence) == ("vote", "REFUTED", "No, C disagrees.", 0.6)
    assert "the adjudicator gave no label: the label is the weighted vote's" in v.degraded_reasons
    assert (v.vote_posterior, v.vote_label, v.overruled_vote) == (0.6, "REFUTED", None)
    assert v.agreement == pytest.approx(1 / 3)
    v, _ = verdict("check", panel(ASK, "A", "B", "C"), answers, clusters, adjudication=adj)
    assert (v.label, v.agreement, v.vote_posterior) == ("NOT_ENOUGH_INFO", 0.0, None)


def test_adjudicator_failed_the_unsettled_vote_decides_and_the_council_is_degraded() -> None:
    a1, b1, c1, c2 = claim("a1", "A"), claim("b1", "B"), claim("c1", "C"), claim("c2", "C")
    answers = [answer("A", "False, says A.", [a1], "REFUTED"), answer("B", "True, says B.", [b1], "SUPPORTED"),
               answer("C", "False, says C.", [c1, c2], "REFUTED")]
    clusters = [cluster("k1", [a1, c1], "contested", 0.6, "none", ("k2",)),
                cluster("k2", [b1], "contested", 0.4, "none", ("k1",)), cluster("k3", [c2], "uncorroborated", 0.5)]
    adj = Adjudication(ruling=None, error_kind="timeout", reason="too slow", cluster_labels={"K1": "k1"})
    vote = LabelVote(label="REFUTED", posterior=0.6, settled=False)
    policy = FLAGGED.model_copy(update={"panel_size": 4})
    v, out = verdict("check", panel(policy, "A", "B", "C", "D"), answers, clusters, failures=[failure("D", "rate_limit")],
                     label_vote=vote, adjudication=adj, reliability={"m-c": 0.9})
    assert (v.decided_by, v.label, v.confidence, v.answer) == ("vote", "REFUTED", 0.6, "False, says C.")
    assert v.degraded and v.degraded_reasons == [
        "member D (m-d) failed: rate_limit", "adjudicator failed: timeout (too slow)",
        "verdict is the unsettled weighted vote",
    ]
    assert v.failed_members == [FailedMember(member_label="D", model="m-d", error_kind="rate_limit", reason="D rate_limit")]
    # Asked about but never ruled on (k1), and contested but never asked (k2): both unresolved, by nobody.
    assert [(k.status, k.settled_by) for k in out] == [("unresolved", "none"), ("unresolved", "none"),
                                                      ("uncorroborated", "vote")]
    assert (v.unresolved, v.settled_by_vote, v.settled_by_adjudicator) == (["k1", "k2"], ["k3"], [])
    assert (v.support, v.contradicted, v.rationale, v.adjudicator_call_id) == ([], [], "", None)
    assert v.agreement == pytest.approx(2 / 3)
    assert (v.members_total, v.members_answered, v.quorum_met) == (4, 3, True)
    assert v.majority_answer == "REFUTED"
    assert (v.best_member, v.best_member_answer) == ("C", "REFUTED")
    assert v.needs_human_review and [r.condition for r in v.review_reasons] == ["contested", "degraded"]
    assert clusters[0].status == "contested"  # the caller's clusters are not modified


# ------------------------------------------------------------------------------------------------ ask


def test_adjudicator_rulings_accept_reject_and_leave_unruled_clusters_unresolved() -> None:
    a1, a2, b1, b2 = claim("a1", "A"), claim("a2", "A"), claim("b1", "B"), claim("b2", "B")
    c1, c2 = claim("c1", "C"), claim("c2", "C")
    answers = [answer("A", "It is not.", [a1, a2]), answer("B", "It is not, really.", [b1, b2]),
               answer("C", "It is.", [c1, c2])]
    clusters = [cluster("k1", [a1, b1], "contested", 0.6, "none", ("k2",)),
                cluster("k2", [c1], "contested", 0.4, "none", ("k1",)),
                cluster("k3", [a2], "uncorroborated", 0.5), cluster("k4", [b2], "accepted", 0.85),
                cluster("k5", [c2], "contested", 0.5, "none")]
    ruling = RulingDraft(
        answer="It is not visible.", confidence=0.8, supported=["C2", "C9"], contradicted=["C6", "C1"],
        rationale="C1 and C3 agree; C5 is wrong",
        rulings=[ClusterRuling(cluster="K1", decision="accept", rationale="two members agree"),
                 ClusterRuling(cluster="K2", decision="reject", rationale="contradicts K1"),
                 ClusterRuling(cluster="K7", decision="accept", rationale="not a cluster it was shown")],
    )
    adj = Adjudication(ruling=ruling, call_id="call-adj",
                       claim_labels={"C1": "a1", "C2": "a2", "C3": "b1", "C4": "b2", "C5": "c1", "C6": "c2"},
                       cluster_labels={"K1": "k1", "K2": "k2", "K3": "k5"})
    v, out = verdict("ask", panel(FLAGGED, "A", "B", "C"), answers, clusters, adjudication=adj)
    by_id = {k.cluster_id: k for k in out}
    assert (by_id["k1"].status, by_id["k1"].settled_by, by_id["k1"].rationale) == ("accepted", "adjudicator",
                                                                                   "two members agree")
    assert (by_id["k2"].status, by_id["k2"].settled_by, by_id["k2"].rationale) == ("rejected", "adjudicator",
                                                                                   "contradicts K1")
    assert (by_id["k5"].status, by_id["k5"].settled_by) == ("unresolved", "none")  # asked, not ruled on
    assert (by_id["k3"].status, by_id["k4"].status) == ("uncorroborated", "accepted")
    assert (v.decided_by, v.label, v.answer, v.confidence) == ("adjudicator", None, "It is not visible.", 0.8)
    assert (v.rationale, v.adjudicator_call_id) == ("C1 and C3 agree; C5 is wrong", "call-adj")
    # Accepted clusters' claims, then the ruling's own (unknown labels dropped); a supported claim is never
    # also contradicted.
    assert v.support == ["a1", "b1", "b2", "a2"]
    assert v.contradicted == ["c1", "c2"]
    assert v.agreement == pytest.approx(2 / 3)  # A and B have supported claims, C none
    assert (v.settled_by_adjudicator, v.settled_by_vote, v.unresolved) == (["k1", "k2"], ["k3", "k4"], ["k5"])
    assert (v.degraded, v.degraded_reasons) == (False, [])
    # A's and B's claims are corroborated by 3 members' worth each (a tie: the later label), C's by 2.
    assert v.majority_answer == "It is not, really."
    assert (v.best_member, v.best_member_model, v.best_member_answer) == ("A", "m-a", "It is not.")
    assert [r.condition for r in v.review_reasons] == ["contested"]


def test_ask_decided_by_vote_on_corroborated_clusters() -> None:
    a1, b1, b2, c1, c2 = claim("a1", "A"), claim("b1", "B"), claim("b2", "B"), claim("c1", "C"), claim("c2", "C")
    answers = [answer("A", "Answer A.", [a1]), answer("B", "Answer B.", [b1, b2]), answer("C", "Answer C.", [c1, c2])]
    clusters = [cluster("k1", [a1, b1], "accepted", 0.9), cluster("k2", [c1], "rejected", 0.1),
                cluster("k3", [b2, c2], "accepted", 0.8)]
    v, out = verdict("ask", panel(ASK, "A", "B", "C"), answers, clusters, reliability={"m-a": 0.95})
    # B's answer rests on the most accepted support (0.9 + 0.8) even though A's model is more reliable; the
    # confidence is the mean support of its claims in the support set.
    assert (v.decided_by, v.answer, v.label) == ("vote", "Answer B.", None)
    assert v.confidence == pytest.approx(0.85)
    assert v.agreement == 1.0
    assert (v.support, v.contradicted) == (["a1", "b1", "b2", "c2"], ["c1"])
    assert (v.degraded, v.degraded_reasons, v.unresolved) == (False, [], [])
    assert v.settled_by_vote == ["k1", "k2", "k3"] and [k.status for k in out] == ["accepted", "rejected", "accepted"]
    assert v.majority_answer == "Answer B."  # corroboration 2 + 2, against A's 2 and C's 1 + 2
    assert (v.best_member, v.best_member_answer) == ("A", "Answer A.")
    assert v.vote_posterior is None


def test_ask_with_equal_backing_prefers_the_reliable_member_and_quality_breaks_best_member_ties() -> None:
    a1, b1 = claim("a1", "A"), claim("b1", "B")
    answers = [answer("A", "Answer A.", [a1]), answer("B", "Answer B.", [b1])]
    clusters = [cluster("k1", [a1], "uncorroborated", 0.5), cluster("k2", [b1], "uncorroborated", 0.5)]
    v, _ = verdict("ask", panel(ASK, "A", "B", "C"), answers, clusters, reliability={"m-b": 0.8},
                   quality={"m-a": 90.0})
    # Nothing accepted: no support, confidence and agreement 0, the more reliable member's answer.
    assert (v.answer, v.confidence, v.agreement, v.support) == ("Answer B.", 0.0, 0.0, [])
    assert v.best_member == "B"
    v, _ = verdict("ask", panel(ASK, "A", "B", "C"), answers, clusters, quality={"m-b": 90.0})
    assert v.best_member == "B" and v.majority_answer == "Answer B."  # majority tie: the later label


def test_quorum_not_met_still_decides_by_vote_but_is_degraded() -> None:
    a1 = claim("a1", "A")
    v, _ = verdict("ask", panel(FLAGGED, "A", "B", "C"), [answer("A", "Only A.", [a1])],
                   [cluster("k1", [a1], "uncorroborated", 0.5)], failures=[failure("B"), failure("C", "server_error")])
    assert (v.decided_by, v.answer, v.confidence, v.agreement) == ("vote", "Only A.", 0.0, 0.0)
    assert (v.quorum, v.quorum_met, v.members_total, v.members_answered) == (2, False, 3, 1)
    assert v.degraded and v.degraded_reasons == [
        "member B (m-b) failed: timeout", "member C (m-c) failed: server_error",
        "quorum not met: 1 of 2 required members answered",
    ]
    assert [f.member_label for f in v.failed_members] == ["B", "C"]
    assert [r.condition for r in v.review_reasons] == ["degraded"]
    assert (v.majority_answer, v.best_member) == ("Only A.", "A")


@pytest.mark.parametrize(("task", "label"), [("check", "NOT_ENOUGH_INFO"), ("ask", None)])
def test_no_member_answered_nothing_is_decided(task: str, label: str | None) -> None:
    v, out = verdict(task, panel(ASK, "A", "B"), [], [], failures=[failure("A"), failure("B", "server_error")],
                     tags={"risk": "high"})
    reasons = [
        "member A (m-a) failed: timeout", "member B (m-b) failed: server_error",
        "only 2 of 3 seats could be filled", "quorum not met: 0 of 2 required members answered",
        "no member answered",
    ]
    assert (v.decided_by, v.label, v.confidence, v.agreement) == ("none", label, 0.0, 0.0)
    assert v.answer == "no verdict: " + "; ".join(reasons)
    assert (v.degraded, v.degraded_reasons, v.quorum_met) == (True, reasons, False)
    assert (v.members_total, v.members_answered, v.clusters_total, out) == (2, 0, 0, [])
    assert (v.majority_answer, v.best_member, v.best_member_model, v.best_member_answer) == (None, None, None, None)
    assert (v.support, v.contradicted, v.unresolved, v.adjudicator_call_id) == ([], [], [], None)
    assert not v.needs_human_review  # the policy never asks for review


def test_no_member_answered_with_a_failed_adjudicator_does_not_claim_a_vote() -> None:
    adj = Adjudication(ruling=None, error_kind="budget", reason="over budget")
    v, _ = verdict("ask", panel(FLAGGED.model_copy(update={"review_tags": (("risk", ("high",)),)}), "A", "B", "C"),
                   [], [], failures=[failure(x) for x in "ABC"], adjudication=adj, tags={"risk": "high"})
    assert v.decided_by == "none"
    assert v.degraded_reasons[-2:] == ["adjudicator failed: budget (over budget)", "no member answered"]
    assert "verdict is the unsettled weighted vote" not in v.degraded_reasons
    assert [r.condition for r in v.review_reasons] == ["contested", "degraded", "tag"]
