"""The verdict: what the council concluded, on which claims, and how complete the council was."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from council.calls.answers import FactLabel, require_alnum
from .flags import ReviewReason
from .injection import SuspiciousMember, SuspiciousSource

__all__ = ["CheckRulingDraft", "ClusterRuling", "FailedMember", "Flip", "RulingDraft", "Verdict", "VoteOverrule"]


class ClusterRuling(BaseModel):
    """The adjudicator's decision on one contested cluster."""

    model_config = ConfigDict(extra="ignore")

    cluster: str
    """The cluster's label in the prompt (``K1``...)."""
    decision: Literal["accept", "reject", "unresolved"]
    """Whether the cluster's claim is true (accept), false (reject), or cannot be decided."""
    rationale: str = ""
    """Why, citing claim labels (``C3``)."""


class RulingDraft(BaseModel):
    """The adjudicator's structured output. Claims are cited by the anonymous labels of the prompt."""

    model_config = ConfigDict(extra="ignore")

    # ``label`` comes first: a grammar-constrained model (llama.cpp builds the grammar from this schema, in
    # field order) then decides the label before it writes anything else, and cannot run out of tokens first.
    label: FactLabel | None = None
    """For a fact check: SUPPORTED, REFUTED or NOT_ENOUGH_INFO."""
    answer: str = Field(min_length=1)
    """The reconciled answer."""
    confidence: float = Field(ge=0.0, le=1.0)
    """The adjudicator's probability that the answer is right."""
    supported: list[str] = Field(default_factory=list)
    """Labels of the claims (``C1``...) the answer rests on."""
    contradicted: list[str] = Field(default_factory=list)
    """Labels of the claims the answer rejects."""
    rationale: str = ""
    """Why, in a few sentences."""
    rulings: list[ClusterRuling] = Field(default_factory=list)
    """One ruling per contested cluster shown in the prompt."""

    @field_validator("answer")
    @classmethod
    def _has_content(cls, v: str) -> str:
        return require_alnum(v)


class CheckRulingDraft(RulingDraft):
    """The ruling on a fact check: the same fields, the label required (and still first in the schema), so a
    grammar-constrained adjudicator always produces it, and at least one cited claim."""

    label: FactLabel
    """SUPPORTED, REFUTED or NOT_ENOUGH_INFO."""
    supported: list[str] = Field(min_length=1)
    """Labels of the claims (``C1``...) the ruling rests on: required, at least one, so a grammar-constrained
    adjudicator always cites (a ruling citing no claim that was shown to it is rejected anyway)."""


class FailedMember(BaseModel):
    """A member missing from the verdict, and why."""

    member_label: str
    model: str
    """The member's first-choice model."""
    error_kind: str
    reason: str


class Flip(BaseModel):
    """A label or claim a member changed in a revision round (recipe stage ``revise``)."""

    run_id: str
    round: int
    """The round whose answer made the change (2 = the first revision round)."""
    member_label: str
    model: str
    answer_id: str
    """The revised answer."""
    revised_from: str
    """The answer it revises."""
    kind: Literal["label", "claim"]
    subject: str
    """``label``, or the claim's text."""
    before: str
    """The label before; for a claim ``stated`` or ``absent``."""
    after: str
    """The label after; for a claim ``retracted`` or ``stated``."""


class VoteOverrule(BaseModel):
    """The adjudicator's label differs from where the weighted vote leaned: both sides, and which one stands."""

    vote_label: FactLabel
    """The label the weighted vote leaned to."""
    vote_posterior: float
    """The vote's posterior of that label."""
    vote_settled: bool
    """Whether the vote was confident enough to settle the label on its own."""
    ruling_label: FactLabel
    """The label the adjudicator ruled."""
    ruling_confidence: float
    """The confidence the adjudicator stated."""
    applied: bool
    """True when the ruling's label is the verdict's label (the adjudicator overruled the vote); False when
    the settled vote's label stands (a settled label is not the adjudicator's to change)."""


class Verdict(BaseModel):
    """The council's conclusion. A degraded council says so; it is never presented as a full one."""

    verdict_id: str
    run_id: str
    answer: str
    """The answer (or, for a fact check, a one-line ruling)."""
    label: FactLabel | None = None
    """For a fact check: the label."""
    confidence: float
    """Probability the verdict is right, as the deciding step stated it (0 when nothing was decided)."""
    agreement: float
    """Share of answering members with at least one claim in the support set."""
    support: list[str] = Field(default_factory=list)
    """Claim ids the verdict rests on."""
    contradicted: list[str] = Field(default_factory=list)
    """Claim ids the verdict rejects."""
    rationale: str = ""
    decided_by: Literal["adjudicator", "vote", "none"]
    """Which step decided the verdict (a fact check's label, an open question's answer); ``none`` when no
    step could. A ruling that was rejected, or that gave no label, does not make it ``adjudicator``."""
    adjudicator_call_id: str | None = None
    """The call record of the adjudicator's successful call."""
    members_total: int
    members_answered: int
    quorum: int
    quorum_met: bool
    degraded: bool
    """True when any member failed, the quorum was not met, or the adjudicator failed."""
    degraded_reasons: list[str] = Field(default_factory=list)
    failed_members: list[FailedMember] = Field(default_factory=list)
    needs_human_review: bool = False
    """The policy asks for human review of this verdict."""
    review_reasons: list[ReviewReason] = Field(default_factory=list)
    """Which review conditions of the policy fired (empty when no review is needed)."""
    clusters_total: int = 0
    """How many clusters of equivalent claims the members' claims formed."""
    settled_by_vote: list[str] = Field(default_factory=list)
    """Cluster ids the weighted vote settled (accepted, rejected, or left uncorroborated)."""
    settled_by_adjudicator: list[str] = Field(default_factory=list)
    """Cluster ids the adjudicator ruled on."""
    settled_by_escalation: list[str] = Field(default_factory=list)
    """Cluster ids (and ``label`` for a fact check's label) the strong tier of a cascade settled."""
    escalated: list[str] = Field(default_factory=list)
    """Everything the cascade put to the strong tier (cluster ids, ``label``), settled or not."""
    borda: dict[str, float] = Field(default_factory=dict)
    """Member label -> normalized Borda score of the peer reviewers' rankings (recipes with a review stage)."""
    rounds: int = 1
    """Answer rounds the verdict rests on: 1, plus the revision rounds that ran (recipe stage ``revise``)."""
    revision_stop: str | None = None
    """Why revision rounds stopped (convergence, or the policy's maximum); None without a ``revise`` stage."""
    flips: list[Flip] = Field(default_factory=list)
    """Every label or claim a member changed in a revision round, in round order."""
    unresolved: list[str] = Field(default_factory=list)
    """Contested cluster ids nobody could settle (adjudicator failed or ruled unresolved)."""
    vote_posterior: float | None = None
    """For a fact check: the weighted vote's posterior of its label, before any adjudication."""
    vote_label: FactLabel | None = None
    """For a fact check: the label the weighted vote leaned to, before any adjudication."""
    overruled_vote: VoteOverrule | None = None
    """Set when the adjudicator's label differs from where the vote leaned ("adjudicator overruled the
    vote" when ``applied``)."""
    ruling_rejected: str | None = None
    """Why the adjudicator's ruling was not used although it parsed (e.g. it cites no claim of the run)."""
    suspicious_members: list[SuspiciousMember] = Field(default_factory=list)
    """Members whose text looked like instructions to the model: which rule, where, the matched snippet;
    their claims counted at chance in the vote and their text was withheld from the adjudicator."""
    suspicious_sources: list[SuspiciousSource] = Field(default_factory=list)
    """Source passages whose text looked like instructions to the model."""
    majority_answer: str | None = None
    """What a plain, unweighted majority of members said (the label, or the most-supported answer)."""
    best_member: str | None = None
    """Label of the member whose model was most reliable so far."""
    best_member_model: str | None = None
    best_member_answer: str | None = None
    """What that best single member said (its label for a fact check)."""

    def warnings(self) -> list[str]:
        """One line per attempt to steer this verdict it records: the adjudicator's label against the
        vote's, a rejected ruling, each suspicious member (rule and snippet) and source passage."""
        out = []
        o = self.overruled_vote
        if o is not None:
            out.append(f"adjudicator overruled the vote: vote {o.vote_label} (posterior {o.vote_posterior:.2f}), "
                       f"ruling {o.ruling_label} (confidence {o.ruling_confidence:.2f})" if o.applied else
                       f"adjudicator ruled {o.ruling_label} against the settled vote {o.vote_label} "
                       f"(posterior {o.vote_posterior:.2f}); the vote's label stands")
        if self.ruling_rejected:
            out.append(f"adjudicator's ruling rejected: {self.ruling_rejected}")
        for m in self.suspicious_members:
            h = m.hits[0]
            out.append(f"suspicious member {m.member_label} ({m.model}): {', '.join(x.rule for x in m.hits)} "
                       f"in {h.where}: {h.snippet!r}; its claims counted at {m.factor:g} of their weight")
        for p in self.suspicious_sources:
            h = p.hits[0]
            out.append(f"suspicious source passage {p.passage_id}: {', '.join(x.rule for x in p.hits)}: {h.snippet!r}")
        return out
