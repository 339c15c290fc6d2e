"""The weighted vote: effective accuracy and log-odds weights, settling clusters, fact-check labels.

Expected values are worked out by hand from the formula in ``council.vote``'s docstring:
p = 0.5 + (reliability - 0.5) * (0.5 + 0.5 * confidence) * (1 if evidence verified else 0.5), weight
log(p / (1 - p)), posterior sigmoid(sum of weights for - sum against).
"""

from __future__ import annotations

import math

import pytest

from council.calls.answers import Citation, Claim, MemberAnswer
from council.deliberation.clusters import ClaimCluster
from council.config.policy import TaskPolicy
from council.deliberation.vote import (
    best_member,
    effective_accuracy,
    majority_label,
    settle_clusters,
    vote_label,
    weight,
)

POLICY = TaskPolicy(name="research")  # prior 0.7, settle at 0.8, two supporters


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# -------------------------------------------------------------------------------- accuracy and weight


@pytest.mark.parametrize(("reliability", "confidence", "evidence_ok", "expected"), [
    (0.7, 0.9, True, 0.69),         # 0.5 + 0.2 * 0.95
    (0.7, 1.0, True, 0.7),          # full confidence: the reliability itself
    (0.7, 0.0, True, 0.6),          # no confidence: halfway to chance
    (0.7, None, True, 0.7),         # no stated confidence counts as full
    (0.7, 0.9, False, 0.595),       # unverified evidence halves the distance from chance
    (0.9, 0.5, True, 0.8),          # 0.5 + 0.4 * 0.75
    (0.9, 0.5, False, 0.65),
    (0.3, 1.0, True, 0.3),          # an unreliable model: below chance
    (0.5, 0.9, True, 0.5),          # a coin flip stays a coin flip
    (0.99, 1.0, True, 0.98),        # clipped
    (0.01, 1.0, True, 0.02),        # clipped
    (0.7, 1.7, True, 0.7),          # confidence clipped to [0, 1]
    (0.7, -1.0, True, 0.6),
])
def test_effective_accuracy(reliability: float, confidence: float | None, evidence_ok: bool, expected: float) -> None:
    assert effective_accuracy(reliability, confidence, evidence_ok) == pytest.approx(expected, abs=1e-12)


def test_weight_is_log_odds() -> None:
    assert weight(0.5) == 0.0
    assert weight(0.69) == pytest.approx(0.800119, abs=1e-6)  # ln(0.69 / 0.31)
    assert weight(0.8) == pytest.approx(math.log(4))
    assert weight(0.2) == pytest.approx(-math.log(4))
    assert weight(1.0) == pytest.approx(math.log(49))  # clipped at 0.98
    assert weight(0.0) == pytest.approx(-math.log(49))


# -------------------------------------------------------------------------------------- clusters


def claim(cid: str, member: str, confidence: float, verified: list[bool] | None = None) -> Claim:
    cites = [Citation(source_id="S1", quote="some words", verified=v) for v in verified or []]
    return Claim(claim_id=cid, run_id="r", answer_id=f"a-{member}", member_label=member, model=f"m-{member.lower()}",
                 text=f"claim {cid}", confidence=confidence, citations=cites)


def cluster(kid: str, claims: list[Claim], contradicts: list[str] = (), polarity: str = "positive") -> ClaimCluster:
    return ClaimCluster(cluster_id=kid, label=kid.upper(), claim_ids=[c.claim_id for c in claims],
                        member_labels=sorted({c.member_label for c in claims}), text=claims[0].text,
                        polarity=polarity, contradicts=list(contradicts))


def split_2_vs_1(verified: dict[str, list[bool]] | None = None):
    """A and B state one thing (confidence 0.9 each), C states its negation (0.9)."""
    verified = verified or {}
    a, b, c = (claim(m.lower(), m, 0.9, verified.get(m)) for m in "ABC")
    pro = cluster("kab", [a, b], ["kc"])
    con = cluster("kc", [c], ["kab"], polarity="negative")
    return [pro, con], {x.claim_id: x for x in (a, b, c)}


def test_uncontradicted_cluster_with_two_supporters_is_accepted() -> None:
    a, b = claim("a", "A", 0.9), claim("b", "B", 0.8)
    k = cluster("k1", [a, b])
    settle_clusters([k], {"a": a, "b": b}, {}, POLICY, sources_given=False)
    wa, wb = logit(0.69), logit(0.5 + 0.2 * 0.9)
    assert (k.status, k.settled_by) == ("accepted", "vote")
    assert k.pro_weight == pytest.approx(wa + wb)
    assert k.con_weight == 0.0
    assert k.support == pytest.approx(1 / (1 + math.exp(-(wa + wb))))
    assert k.support == pytest.approx(0.69 * 0.68 / (0.69 * 0.68 + 0.31 * 0.32))


def test_one_supporter_is_uncorroborated() -> None:
    a = claim("a", "A", 0.9)
    k = cluster("k1", [a])
    settle_clusters([k], {"a": a}, {}, POLICY, sources_given=False)
    assert (k.status, k.settled_by) == ("uncorroborated", "vote")
    assert k.support == pytest.approx(0.69)


def test_one_member_twice_is_still_one_supporter() -> None:
    a1, a2 = claim("a1", "A", 0.6), claim("a2", "A", 0.9)
    k = cluster("k1", [a1, a2])
    settle_clusters([k], {"a1": a1, "a2": a2}, {}, POLICY, sources_given=False)
    assert k.status == "uncorroborated"
    assert k.pro_weight == pytest.approx(logit(0.69))  # its strongest claim, counted once


def test_min_supporters_is_policy() -> None:
    a = claim("a", "A", 0.9)
    k = cluster("k1", [a])
    settle_clusters([k], {"a": a}, {}, POLICY.model_copy(update={"min_supporters": 1}), sources_given=False)
    assert (k.status, k.settled_by) == ("accepted", "vote")


def test_two_against_one_is_contested_with_the_default_prior() -> None:
    clusters, claims = split_2_vs_1()
    settle_clusters(clusters, claims, {}, POLICY, sources_given=False)
    pro, con = clusters
    w = logit(0.69)
    assert (pro.pro_weight, pro.con_weight) == (pytest.approx(2 * w), pytest.approx(w))
    assert pro.support == pytest.approx(0.69)  # sigmoid(2w - w) = 0.69 < 0.8
    assert con.support == pytest.approx(0.31)
    assert (pro.status, pro.settled_by) == ("contested", "none")
    assert (con.status, con.settled_by) == ("contested", "none")


def test_the_same_split_is_settled_once_the_majority_is_known_reliable() -> None:
    clusters, claims = split_2_vs_1()
    settle_clusters(clusters, claims, {"m-a": 0.9, "m-b": 0.9}, POLICY, sources_given=False)
    pro, con = clusters
    # A and B: p = 0.5 + 0.4 * 0.95 = 0.88 each; C keeps the prior: 0.69
    expected = 1 / (1 + math.exp(-(2 * logit(0.88) - logit(0.69))))
    assert pro.support == pytest.approx(expected)
    assert pro.support == pytest.approx(0.96, abs=5e-4)
    assert (pro.status, pro.settled_by) == ("accepted", "vote")
    assert con.support == pytest.approx(1 - expected)
    assert (con.status, con.settled_by) == ("rejected", "vote")


def test_a_minority_known_unreliable_loses_by_vote() -> None:
    clusters, claims = split_2_vs_1()
    settle_clusters(clusters, claims, {"m-c": 0.3}, POLICY, sources_given=False)
    pro, con = clusters
    # C below chance: its weight is negative, so its dissent *raises* the support of the majority
    w_c = logit(0.5 - 0.2 * 0.95)
    assert w_c < 0
    assert pro.con_weight == pytest.approx(w_c)
    assert pro.support == pytest.approx(1 / (1 + math.exp(-(2 * logit(0.69) - w_c))))
    assert (pro.status, con.status) == ("accepted", "rejected")


def test_settle_threshold_is_policy() -> None:
    clusters, claims = split_2_vs_1()
    settle_clusters(clusters, claims, {}, POLICY.model_copy(update={"vote_settle_at": 0.65}), sources_given=False)
    assert [k.status for k in clusters] == ["accepted", "rejected"]  # 0.69 >= 0.65


def test_unverified_evidence_lowers_weight() -> None:
    # Same 2-vs-1 split with sources given: only the lone dissenter quoted its passage correctly.
    clusters, claims = split_2_vs_1({"A": [False], "B": [False, False], "C": [True, False]})
    settle_clusters(clusters, claims, {}, POLICY, sources_given=True)
    pro, con = clusters
    w_unverified, w_verified = logit(0.595), logit(0.69)
    assert pro.pro_weight == pytest.approx(2 * w_unverified)
    assert pro.con_weight == pytest.approx(w_verified)
    assert pro.support == pytest.approx(1 / (1 + math.exp(-(2 * w_unverified - w_verified))))
    assert pro.support < 0.5  # two unverified members now count for less than one verified
    assert pro.status == "contested"


def test_claim_without_citation_counts_as_unverified_when_sources_were_given() -> None:
    a, b = claim("a", "A", 0.9), claim("b", "B", 0.9, [True])
    k = cluster("k1", [a, b])
    settle_clusters([k], {"a": a, "b": b}, {}, POLICY, sources_given=True)
    assert k.pro_weight == pytest.approx(logit(0.595) + logit(0.69))
    # without sources nothing is asked of evidence
    k2 = cluster("k2", [a, b])
    settle_clusters([k2], {"a": a, "b": b}, {}, POLICY, sources_given=False)
    assert k2.pro_weight == pytest.approx(2 * logit(0.69))


def test_member_on_both_sides_is_not_counted_against_itself() -> None:
    a1, a2, b = claim("a1", "A", 0.9), claim("a2", "A", 0.9), claim("b", "B", 0.9)
    pro = cluster("kpro", [a1, b], ["kcon"])
    con = cluster("kcon", [a2], ["kpro"], polarity="negative")
    settle_clusters([pro, con], {"a1": a1, "a2": a2, "b": b}, {}, POLICY, sources_given=False)
    assert pro.con_weight == 0.0  # A is already among the supporters
    assert (pro.status, pro.settled_by) == ("accepted", "vote")
    assert con.con_weight == pytest.approx(logit(0.69))  # only B opposes it


# -------------------------------------------------------------------------------------- fact labels


def member(label: str | None, name: str, confidence: float | None = 0.9, verified: bool | None = None) -> MemberAnswer:
    cites = [Citation(source_id="S1", quote="q" * 10, verified=verified)] if verified is not None else []
    c = Claim(claim_id=f"c-{name}", run_id="r", answer_id=f"a-{name}", member_label=name, model=f"m-{name.lower()}",
              text="t", confidence=0.5, citations=cites)
    return MemberAnswer(answer_id=f"a-{name}", run_id="r", member_label=name, model=f"m-{name.lower()}",
                        call_id=f"call-{name}", answer=f"{label}", label=label, confidence=confidence,
                        claims=[c], raw_text="{}")


FACT = TaskPolicy(name="fact_check")


def test_vote_label_two_against_one_default_prior() -> None:
    v = vote_label([member("SUPPORTED", "A"), member("SUPPORTED", "B"), member("REFUTED", "C")], {}, FACT, False)
    assert v.label == "SUPPORTED"
    assert v.posterior == pytest.approx(0.69)  # sigmoid(w + w - w) with p = 0.69
    assert v.log_odds_supported == pytest.approx(logit(0.69))
    assert v.settled is False
    assert v.votes == {"A": "SUPPORTED", "B": "SUPPORTED", "C": "REFUTED"}


def test_vote_label_with_learned_reliabilities() -> None:
    answers = [member("SUPPORTED", "A"), member("SUPPORTED", "B"), member("REFUTED", "C")]
    v = vote_label(answers, {"m-a": 0.9, "m-b": 0.9, "m-c": 0.5}, FACT, False)
    # p = 0.88 for A and B, C at chance weighs nothing: 0.88^2 / (0.88^2 + 0.12^2)
    assert v.posterior == pytest.approx(0.7744 / (0.7744 + 0.0144))
    assert v.settled is True and v.label == "SUPPORTED"
    # the reliable minority wins against an unreliable majority
    v = vote_label(answers, {"m-a": 0.4, "m-b": 0.4, "m-c": 0.95}, FACT, False)
    assert v.label == "REFUTED"
    p_ab, p_c = 0.5 - 0.1 * 0.95, 0.5 + 0.45 * 0.95
    assert v.log_odds_supported == pytest.approx(2 * logit(p_ab) - logit(p_c))
    assert v.posterior == pytest.approx(1 / (1 + math.exp(2 * logit(p_ab) - logit(p_c))))
    assert v.settled is True


def test_vote_label_uses_claim_confidence_when_no_answer_confidence() -> None:
    a = member("SUPPORTED", "A", confidence=None)  # its claim says 0.5
    v = vote_label([a], {}, FACT, False)
    assert v.posterior == pytest.approx(0.5 + 0.2 * 0.75)


def test_vote_label_unverified_evidence_counts_less() -> None:
    answers = [member("SUPPORTED", "A", verified=False), member("REFUTED", "B", verified=True)]
    v = vote_label(answers, {}, FACT, True)
    assert v.label == "REFUTED"
    assert v.log_odds_supported == pytest.approx(logit(0.595) - logit(0.69))


def test_not_enough_info_abstains() -> None:
    v = vote_label([member("SUPPORTED", "A"), member("NOT_ENOUGH_INFO", "B"), member("NOT_ENOUGH_INFO", "C")],
                   {}, FACT, False)
    assert v.label == "SUPPORTED"
    assert v.posterior == pytest.approx(0.69)  # one voter only
    assert v.settled is False
    assert v.votes["B"] == "NOT_ENOUGH_INFO"


def test_all_abstaining_gives_not_enough_info() -> None:
    v = vote_label([member("NOT_ENOUGH_INFO", "A"), member("NOT_ENOUGH_INFO", "B"), member(None, "C")], {}, FACT, False)
    assert v.label == "NOT_ENOUGH_INFO"
    assert v.posterior == pytest.approx(2 / 3)  # share of members that abstained
    assert v.settled is True
    assert v.votes == {"A": "NOT_ENOUGH_INFO", "B": "NOT_ENOUGH_INFO"}
    one = vote_label([member("NOT_ENOUGH_INFO", "A")], {}, FACT, False)
    assert one.settled is False  # fewer members than min_supporters


def test_even_split_is_not_settled() -> None:
    v = vote_label([member("SUPPORTED", "A"), member("REFUTED", "B")], {}, FACT, False)
    assert v.posterior == pytest.approx(0.5)
    assert v.settled is False


@pytest.mark.parametrize(("labels", "expected"), [
    (["SUPPORTED", "SUPPORTED", "REFUTED"], "SUPPORTED"),
    (["REFUTED", "SUPPORTED", "REFUTED"], "REFUTED"),
    (["SUPPORTED", "REFUTED"], "NOT_ENOUGH_INFO"),                       # tie
    (["SUPPORTED", "REFUTED", "NOT_ENOUGH_INFO"], "NOT_ENOUGH_INFO"),    # three-way tie
    (["SUPPORTED", "NOT_ENOUGH_INFO", "NOT_ENOUGH_INFO"], "NOT_ENOUGH_INFO"),
    (["SUPPORTED", None, None], "SUPPORTED"),                            # no label, no vote
    ([None], None),
    ([], None),
])
def test_majority_label(labels: list[str | None], expected: str | None) -> None:
    answers = [member(lab, chr(ord("A") + i)) for i, lab in enumerate(labels)]
    assert majority_label(answers) == expected


def test_best_member_is_the_most_reliable_model() -> None:
    answers = [member("SUPPORTED", "A"), member("SUPPORTED", "B"), member("REFUTED", "C")]
    quality = {"m-a": 80, "m-b": 70, "m-c": 60}
    assert best_member(answers, {}, quality, 0.7).member_label == "A"  # no history: quality decides
    best = best_member(answers, {"m-c": 0.9, "m-a": 0.75}, quality, 0.7)
    assert (best.member_label, best.label) == ("C", "REFUTED")
    assert best_member(answers, {"m-a": 0.6}, quality, 0.7).member_label == "B"  # A below the prior
    assert best_member([], {}, quality, 0.7) is None
