"""The verdict: what the council concluded, on which claims, and how complete the council was."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .answers import FactLabel

__all__ = ["FailedMember", "RulingDraft", "Verdict"]


class RulingDraft(BaseModel):
    """The adjudicator's structured output. Claims are cited by the anonymous labels of the prompt."""

    model_config = ConfigDict(extra="ignore")

    answer: str = Field(min_length=1)
    """The reconciled answer."""
    label: FactLabel | None = None
    """For a fact check: SUPPORTED, REFUTED or NOT_ENOUGH_INFO."""
    confidence: float = Field(ge=0.0, le=1.0)
    """The adjudicator's probability that the answer is right."""
    supported: list[str] = Field(default_factory=list)
    """Labels of the claims (``C1``...) the answer rests on."""
    contradicted: list[str] = Field(default_factory=list)
    """Labels of the claims the answer rejects."""
    rationale: str = ""
    """Why, in a few sentences."""


class FailedMember(BaseModel):
    """A member missing from the verdict, and why."""

    member_label: str
    model: str
    """The member's first-choice model."""
    error_kind: str
    reason: str


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
    """Which step produced the verdict; ``none`` when no step could."""
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
