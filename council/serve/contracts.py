"""The HTTP API's request and response models (they generate the OpenAPI schema at ``/openapi.json``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from council.calls.answers import Claim, MemberAnswer, MemberFailure
from council.calls.records import CallRecord
from council.deliberation.clusters import ClaimCluster
from council.deliberation.sources import Passage
from council.deliberation.verdict import Verdict

__all__ = [
    "BatchDetail", "BatchSummary", "CostBreakdown", "CostLine", "ErrorBody", "RunDetail", "RunEvent", "RunList",
    "RunRequestIn", "RunRow", "RunStarted", "SourceIn",
]


class SourceIn(BaseModel):
    """A source document sent with a question: its text, never a path on the server."""

    text: str = Field(min_length=1)
    """The document's text; split into numbered passages the members cite."""
    title: str | None = Field(default=None, max_length=200)
    """A name shown in citations (default ``text N``)."""


class RunRequestIn(BaseModel):
    """Start a council."""

    question: str = Field(min_length=1)
    """The question (task ``ask``) or the claim to fact-check (task ``check``)."""
    task: Literal["ask", "check"] = "ask"
    recipe: str = Field(default="council", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    """Deliberation recipe (graphs/NAME.toml)."""
    sources: list[SourceIn] = Field(default_factory=list)
    """Documents given to every member; citations are verified against them."""


class RunStarted(BaseModel):
    """A council was started; follow it at ``events_url``."""

    run_id: str
    url: str
    """The run's JSON (``/api/runs/ID``)."""
    events_url: str
    """Server-sent events of the run's progress."""
    page_url: str
    """The run's web page."""


class ErrorBody(BaseModel):
    """What an error response carries (OpenAI's shape: ``{"error": {...}}``)."""

    message: str
    type: str
    code: int | str | None = None


class RunRow(BaseModel):
    """One run in a list."""

    run_id: str
    created_at: datetime
    finished_at: datetime | None
    task: str
    question: str
    recipe: str
    status: str
    """``running``, ``done``, ``degraded`` or ``failed``."""
    verdict: str | None
    """The verdict's label (fact checks) or answer."""
    degraded: bool | None
    contested: bool
    """Some claim cluster went to the adjudicator or stayed unresolved."""
    total_cost_usd: float


class RunList(BaseModel):
    """A page of runs, newest first."""

    runs: list[RunRow]
    total: int
    """Runs matching the filters (all pages)."""
    limit: int
    offset: int


class RunDetail(BaseModel):
    """Everything stored of a run."""

    run_id: str
    task: str
    question: str
    recipe: str
    created_at: datetime
    finished_at: datetime | None
    status: str
    member_policy: str
    """``name@version``."""
    adjudication_policy: str
    panel: list[dict[str, object]]
    """Each seat's label and fallback chain (catalog names)."""
    verdict: Verdict | None
    answers: list[MemberAnswer]
    failures: list[MemberFailure]
    claims: list[Claim]
    clusters: list[ClaimCluster]
    passages: list[Passage]
    calls: list[CallRecord]
    total_cost_usd: float
    """The sum of the call records' costs."""


class CostLine(BaseModel):
    """Spend of one group of calls."""

    key: str
    """The member label, model, or graph node grouped by."""
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float
    """Summed latency of the calls."""


class CostBreakdown(BaseModel):
    """A run's spend, from its call records."""

    run_id: str
    total_cost_usd: float
    prompt_tokens: int
    completion_tokens: int
    calls: int
    by_member: list[CostLine]
    by_model: list[CostLine]
    by_node: list[CostLine]


class RunEvent(BaseModel):
    """One server-sent event of a run (the SSE ``event`` field is ``type``; ``data`` is this JSON)."""

    type: Literal["run_started", "call", "member_answered", "member_failed", "review", "round", "escalation",
                  "clusters", "adjudication", "verdict", "done", "error"]
    run_id: str
    message: str
    """One line for people."""
    member: str | None = None
    model: str | None = None
    status: str | None = None
    cost_usd: float | None = None
    verdict: Verdict | None = None


class BatchSummary(BaseModel):
    """A batch of fact checks and its progress."""

    batch_id: str
    task: str
    source: str
    """The input file's name (no directory)."""
    created_at: datetime
    total: int
    counts: dict[str, int]
    """Items per status (pending, running, full, degraded, failed, skipped_budget, invalid) and ``contested``."""
    done: int
    """Items with a final status."""
    spent_usd: float


class BatchItemOut(BaseModel):
    """One claim of a batch."""

    line: int
    claim: str
    status: str
    label: str | None
    confidence: float | None
    contested: bool | None
    cost_usd: float | None
    run_id: str
    error: str | None


class BatchDetail(BatchSummary):
    """A batch with a page of its items, in input order."""

    items: list[BatchItemOut]
