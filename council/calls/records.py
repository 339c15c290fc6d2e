"""Call records: one billing record for every attempt at a model call, failed ones included.

A run's cost is the sum of its call records. The record of an attempt is written to the store as soon as
the attempt ends, so a crash never loses the record of a call that was paid for.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict
from sqlmodel import AutoString, Field, SQLModel

__all__ = ["CallRecord", "CallRecordFields", "CallStatus", "CostSource", "CallNode", "STAGE_OF_NODE", "StageCost",
           "stage_costs"]

CallStatus = Literal["ok", "failed", "invalid", "skipped", "pending", "interrupted"]
CostSource = Literal["provider", "catalog", "local", "unknown", "none"]
CallNode = Literal["member", "review", "revise", "escalate", "adjudicate", "cluster"]


class CallRecordFields(SQLModel):
    """The fields of a call record, declared once: the ``CallRecord`` contract and the store's ``calls``
    table (``council.store.tables.CallRow``) both derive from this class. Storage hints (primary key,
    indexes, the SQL type of literal fields) ride along in ``Field``; pydantic ignores them."""

    call_id: str = Field(primary_key=True)
    """Idempotency key of the attempt: a hash of run, node, member, attempt number and model."""
    run_id: str = Field(index=True)
    """The run the call belongs to."""
    node: CallNode = Field(sa_type=AutoString)
    """Graph node that made the call."""
    member_label: str
    """Panel label of the member (``A``, ``B``, ...) or ``adjudicator``."""
    model_requested: str
    """Catalog name of the member's first choice."""
    model: str = Field(index=True)
    """Catalog name of the model this attempt was sent to (after fallback): the one charged."""
    model_reported: str | None = None
    """Model name the provider reported in its response."""
    provider: str | None = None
    """Provider of ``model``."""
    policy_name: str
    """Task policy that governed the call."""
    policy_version: str
    """Content hash of that policy."""
    template_name: str
    """Prompt template used."""
    template_hash: str
    """Content hash of that template."""
    attempt: int
    """1-based attempt number within this member's calls (all models of its chain together)."""
    status: CallStatus = Field(sa_type=AutoString)
    """``ok``; ``failed`` (provider error or timeout); ``invalid`` (answered, not valid output); ``skipped``
    (not sent: its worst-case cost would break the policy's per-call ceiling or the run's budget, or its
    model had no rate-limit capacity within the policy's ``rate_limit_wait_s``);
    ``pending`` (written just before the request is sent, replaced by the attempt's final record);
    ``interrupted`` (a ``pending`` record whose process died mid-call: the request may have been billed,
    its cost is unknown)."""
    error_kind: str | None = None
    """Stable error kind (``rate_limit``, ``timeout``, ``server_error``, ``invalid_answer``, ...)."""
    error_message: str | None = None
    """One-line error text, secrets redacted."""
    prompt_tokens: int = 0
    """Prompt tokens billed (0 when the provider reported none)."""
    completion_tokens: int = 0
    """Completion tokens billed."""
    cost_usd: float = 0.0
    """Cost of this attempt in USD."""
    cost_source: CostSource = Field(default="none", sa_type=AutoString)
    """Where ``cost_usd`` comes from: provider-reported, catalog price, local (0), unknown, or none
    (no request reached the provider)."""
    latency_s: float = 0.0
    """Seconds from sending the request to its end."""
    queued_s: float = 0.0
    """Seconds the attempt waited for rate-limit capacity before it was sent (the limiter's queue, a
    Retry-After or announced-reset pause); not part of ``latency_s``."""
    request_id: str | None = None
    """Provider request id, when the provider gave one."""
    started_at: datetime
    """When the attempt started (UTC)."""
    finished_at: datetime
    """When the attempt ended (UTC)."""


class CallRecord(CallRecordFields):
    """One attempt at a model call and what it cost."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]


STAGE_OF_NODE: dict[str, str] = {"member": "answer", "cluster": "reconcile", "review": "review", "revise": "revise",
                                 "escalate": "escalate", "adjudicate": "adjudicate"}
"""The recipe stage each graph node's calls belong to."""


class StageCost(BaseModel):
    """What one stage of a run called and spent."""

    stage: str
    calls: int
    """Call records of the stage (skipped and failed attempts included)."""
    cost_usd: float


def stage_costs(calls: list[CallRecord]) -> list[StageCost]:
    """Per-stage calls and cost, in stage order; they add up to the run's total."""
    out: dict[str, StageCost] = {}
    for c in calls:
        st = STAGE_OF_NODE.get(c.node, c.node)
        s = out.setdefault(st, StageCost(stage=st, calls=0, cost_usd=0.0))
        s.calls += 1
        s.cost_usd += c.cost_usd
    order = list(dict.fromkeys(STAGE_OF_NODE.values()))
    return sorted(out.values(), key=lambda s: order.index(s.stage) if s.stage in order else len(order))
