"""What members answer: the structured output schema, and the claims and answers recorded from it."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, field_validator
from sqlmodel import AutoString, Field, SQLModel

from council.config.catalog import FactLabel  # one definition, shared with model entries

__all__ = [
    "AnswerDraft",
    "Citation",
    "Claim",
    "ClaimDraft",
    "ClaimFields",
    "FailureFields",
    "AnswerFields",
    "FactLabel",
    "MemberAnswer",
    "MemberFailure",
    "MemberOutcome",
]


_ALNUM = re.compile(r"[^\W_]")  # a letter or digit, in any script


def require_alnum(text: str) -> str:
    """Validator: an answer with no letter or digit (``},{``) is not an answer."""
    if not _ALNUM.search(text):
        raise ValueError("the answer has no letters or digits")
    return text


class CitationDraft(BaseModel):
    """A citation as a member states it (part of the structured output schema)."""

    model_config = ConfigDict(extra="ignore")

    source_id: str
    """Id of the cited passage (e.g. ``S1``) as numbered in the prompt."""
    quote: str = ""
    """The exact words quoted from that passage."""


class Citation(CitationDraft):
    """A recorded citation: what the member cited, and whether council could verify it."""

    verified: bool | None = None
    """Set by council, not the member: True when the quote occurs in the cited passage (after whitespace
    and case normalisation), False when it does not or the passage does not exist, None when no
    sources were given."""


class ClaimDraft(BaseModel):
    """One claim as a member states it (part of the structured output schema)."""

    model_config = ConfigDict(extra="ignore")

    text: str = Field(min_length=1)
    """One self-contained factual statement."""
    confidence: float = Field(ge=0.0, le=1.0)
    """The member's probability that the claim is true."""
    citations: list[CitationDraft] = Field(default_factory=list)
    """Sources the claim rests on, if any were given."""


class AnswerDraft(BaseModel):
    """A member's whole structured answer: the schema sent as ``response_format``."""

    model_config = ConfigDict(extra="ignore")

    answer: str = Field(min_length=1)
    """The direct answer to the question, in one or two sentences (with at least one letter or digit)."""
    label: FactLabel | None = None
    """For a fact check: the member's label of the claim."""
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    """The member's probability that its answer (or label) is right."""
    claims: list[ClaimDraft] = Field(min_length=1)
    """The factual claims the answer rests on."""

    @field_validator("answer")
    @classmethod
    def _has_content(cls, v: str) -> str:
        return require_alnum(v)


class ClaimFields(SQLModel):
    """The fields a recorded claim shares with its row in the store's ``claims`` table (``ClaimRow``)."""

    claim_id: str = Field(primary_key=True)
    """Content hash of run, member and text: stable across rebuilds."""
    run_id: str = Field(index=True)
    answer_id: str
    """The answer the claim was stated in."""
    member_label: str
    model: str
    """Catalog name of the model that served the answer."""
    text: str
    confidence: float
    cluster_id: str | None = Field(default=None, index=True)
    """The cluster of equivalent claims this claim was grouped into."""


class Claim(ClaimFields):
    """A recorded claim, with a stable id and the member and model that made it."""

    citations: list[Citation] = Field(default_factory=list)
    """What the member cited, each with whether council could verify the quote."""


class AnswerFields(SQLModel):
    """The fields a member's answer shares with its row in the store's ``answers`` table (``AnswerRow``)."""

    answer_id: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    member_label: str
    model: str
    """Catalog name of the model that served (after any fallback)."""
    call_id: str
    """The call record of the successful attempt."""
    answer: str
    label: FactLabel | None = Field(default=None, sa_type=AutoString)
    raw_text: str
    """The model's text exactly as received."""
    confidence: float | None = None
    """The member's stated probability that its answer is right, if it gave one."""
    round: int = 1
    """1 for the first answer; 2, 3... for the answers of revision rounds (recipe stage ``revise``)."""
    revised_from: str | None = None
    """In a revision round: the answer (id) this one revises, the member's answer of the round before."""
    revision: str | None = None
    """In a revision round: ``revise`` (the member changed its answer) or ``hold`` (it kept it)."""
    revision_reason: str | None = None
    """The member's reason for revising or holding."""


class MemberAnswer(AnswerFields):
    """A member's valid answer and the call that produced it."""

    claims: list[Claim]


class FailureFields(SQLModel):
    """The fields a member failure shares with its row in the store's ``member_failures`` table."""

    run_id: str = Field(primary_key=True)
    member_label: str = Field(primary_key=True)
    model_requested: str
    """The member's first-choice model."""
    error_kind: str
    """Kind of the last error (``rate_limit``, ``timeout``, ``invalid_answer``, ``price_ceiling``, ...)."""
    reason: str
    """One line saying why the member failed."""
    raw_text: str | None = None
    """The last invalid answer text, kept for inspection."""


class MemberFailure(FailureFields):
    """A member that produced no valid answer after its whole fallback chain."""

    call_ids: list[str] = Field(default_factory=list)
    """Every call record of the member's attempts."""


class MemberOutcome(BaseModel):
    """What one member node contributes to the run state: an answer or a failure."""

    member_label: str
    answer: MemberAnswer | None = None
    failure: MemberFailure | None = None
