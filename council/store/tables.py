"""The store's tables (sqlmodel) and the named migrations that create and grow them.

Migrations are append-only: a released one is never edited; a schema change is a new, small, named
migration at the end of ``MIGRATIONS``, recorded in ``council_migrations`` when applied (``Store.migrate``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Index, text
from sqlmodel import Field, SQLModel

__all__ = [
    "AnswerRow", "CallRow", "ClaimRow", "ClusterRow", "EvalOutcomeRow", "EvalRow", "FailureRow", "FeedbackRow",
    "MIGRATIONS", "MigrationRow",
    "PassageRow", "PolicyRow", "RunModelRow", "RunRow", "SourceRow", "VerdictRow",
]

class RunRow(SQLModel, table=True):
    __tablename__ = "runs"
    run_id: str = Field(primary_key=True)
    created_at: datetime = Field(index=True)
    finished_at: datetime | None = None
    task: str
    question: str
    status: str = "running"
    recipe: str
    member_policy: str
    """``name@version`` of the members' policy."""
    adjudication_policy: str
    panel_json: str
    """JSON list of {label, chain: [catalog names]}."""
    total_cost_usd: float = 0.0
    verdict_label: str | None = None
    verdict_answer: str | None = None
    degraded: bool | None = None


class PolicyRow(SQLModel, table=True):
    __tablename__ = "policies"
    ref: str = Field(primary_key=True)
    name: str
    version: str
    body_json: str


class RunModelRow(SQLModel, table=True):
    """The catalog entry of a model as it was when a run used it (keys are never part of an entry)."""

    __tablename__ = "run_models"
    run_id: str = Field(primary_key=True)
    name: str = Field(primary_key=True)
    body_json: str


class CallRow(SQLModel, table=True):
    __tablename__ = "calls"
    call_id: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    node: str
    member_label: str
    model_requested: str
    model: str = Field(index=True)
    model_reported: str | None = None
    provider: str | None = None
    policy_name: str
    policy_version: str
    template_name: str
    template_hash: str
    attempt: int
    status: str
    error_kind: str | None = None
    error_message: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_source: str = "none"
    latency_s: float = 0.0
    request_id: str | None = None
    started_at: datetime
    finished_at: datetime


class AnswerRow(SQLModel, table=True):
    __tablename__ = "answers"
    answer_id: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    member_label: str
    model: str
    call_id: str
    answer: str
    label: str | None = None
    raw_text: str
    confidence: float | None = None
    """Added by migration 0002."""


class ClaimRow(SQLModel, table=True):
    __tablename__ = "claims"
    claim_id: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    answer_id: str
    member_label: str
    model: str
    position: int
    text: str
    confidence: float
    citations_json: str = "[]"
    cluster_id: str | None = Field(default=None, index=True)
    """Added by migration 0002."""


class ClusterRow(SQLModel, table=True):
    __tablename__ = "clusters"
    cluster_id: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    label: str
    status: str
    settled_by: str
    support: float
    body_json: str


class SourceRow(SQLModel, table=True):
    __tablename__ = "sources"
    run_id: str = Field(primary_key=True)
    source_id: str = Field(primary_key=True)
    title: str


class PassageRow(SQLModel, table=True):
    __tablename__ = "passages"
    run_id: str = Field(primary_key=True)
    passage_id: str = Field(primary_key=True)
    source_id: str
    position: int
    key: str
    text: str


class FeedbackRow(SQLModel, table=True):
    """A human's ground-truth label for a fact-check run: the strongest signal for learning reliability."""

    __tablename__ = "feedback"
    run_id: str = Field(primary_key=True)
    label: str
    note: str = ""
    created_at: datetime


class FailureRow(SQLModel, table=True):
    __tablename__ = "member_failures"
    run_id: str = Field(primary_key=True)
    member_label: str = Field(primary_key=True)
    model_requested: str
    error_kind: str
    reason: str
    call_ids_json: str = "[]"
    raw_text: str | None = None


class VerdictRow(SQLModel, table=True):
    __tablename__ = "verdicts"
    verdict_id: str = Field(primary_key=True)
    run_id: str = Field(index=True, unique=True)
    body_json: str


class BatchRow(SQLModel, table=True):
    __tablename__ = "batches"
    batch_id: str = Field(primary_key=True)
    task: str
    source: str
    """The input file the batch was first read from."""
    created_at: datetime


class BatchItemRow(SQLModel, table=True):
    __tablename__ = "batch_items"
    __table_args__ = (Index("ix_batch_items_queue", "batch_id", "status", "line"),)
    batch_id: str = Field(primary_key=True)
    item_key: str = Field(primary_key=True)
    """``id:<the input's id>`` or ``sha:<hash of the claim's content>``."""
    line: int
    claim_id: str | None = None
    claim: str
    context: str | None = None
    sources_json: str = "[]"
    status: str = "pending"
    tries: int = 0
    """Runs started for the item beyond the first (``--retry-failed`` starts a new one)."""
    leases: int = 0
    """Times the current try was taken by a process: above 1, its run may have started and is resumed."""
    run_id: str = Field(index=True)
    """The run of the current try; deterministic, so a resumed item continues the same run."""
    prior_cost_usd: float = 0.0
    """What the item's earlier tries cost (their runs are no longer the item's run)."""
    lease_owner: str | None = None
    lease_until: datetime | None = None
    finished_by: str | None = None
    """The process (``host:pid:token``) that recorded the outcome."""
    label: str | None = None
    confidence: float | None = None
    agreement: float | None = None
    degraded: bool | None = None
    contested: bool | None = None
    cost_usd: float | None = None
    error: str | None = None
    updated_at: datetime


class EvalRow(SQLModel, table=True):
    """One evaluation: a golden set run through several arms (see ``council.eval``)."""

    __tablename__ = "evals"
    eval_id: str = Field(primary_key=True)
    created_at: datetime = Field(index=True)
    updated_at: datetime
    task: str
    golden_path: str
    golden_hash: str
    """SHA-256 of the golden file's bytes: evals of the same set can be compared item by item."""
    arms_json: str
    """JSON list of the arm names, in the order asked."""
    recipes_json: str
    """JSON list of the recipes run (``council`` for the shared panel, and each recipe arm)."""
    policies_json: str
    """JSON object: policy name -> ``name@version`` of every policy the eval's runs follow."""
    models_json: str
    """JSON list of the catalog names the arms may use."""
    config_source: str | None = None
    budget_usd: float | None = None
    items_total: int = 0
    status: str = "running"
    """``running`` | ``done`` | ``budget`` (stopped by the budget; rerun with a larger one)."""


class EvalOutcomeRow(SQLModel, table=True):
    """How one arm did on one golden item."""

    __tablename__ = "eval_outcomes"
    eval_id: str = Field(primary_key=True)
    item_id: str = Field(primary_key=True)
    arm: str = Field(primary_key=True)
    line: int
    status: str
    """``ok`` | ``failed`` (no answer) | ``skipped_budget``."""
    prediction: str | None = None
    correct: bool | None = None
    """None when the prediction could not be scored."""
    abstained: bool = False
    confidence: float | None = None
    escalated: bool | None = None
    cost_usd: float = 0.0
    """The arm's cost on this item as if it had run alone (sum of the call records it needed)."""
    tokens: int = 0
    latency_s: float | None = None
    run_id: str | None = None
    call_ids_json: str = "[]"
    """The call records the arm's answer rests on."""
    error: str | None = None
    updated_at: datetime


class MigrationRow(SQLModel, table=True):
    __tablename__ = "council_migrations"
    name: str = Field(primary_key=True)
    applied_at: datetime


def _create(conn: Any, *tables: type[SQLModel]) -> None:
    SQLModel.metadata.create_all(conn, tables=[t.__table__ for t in tables])  # type: ignore[attr-defined]


def _add_column(conn: Any, table: str, column: str, ddl_type: str) -> None:
    """Add a column unless it is there already (a fresh database gets it from the table definition)."""
    from sqlalchemy import inspect

    if column not in {c["name"] for c in inspect(conn).get_columns(table)}:
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl_type}"))


def _m0001_initial(conn: Any) -> None:
    _create(conn, RunRow, PolicyRow, RunModelRow, CallRow, AnswerRow, ClaimRow, FailureRow, VerdictRow)


def _m0002_claim_reconciliation(conn: Any) -> None:
    _create(conn, ClusterRow, SourceRow, PassageRow, FeedbackRow)
    _add_column(conn, "claims", "cluster_id", "VARCHAR")
    _add_column(conn, "answers", "confidence", "FLOAT")


def _m0003_batches(conn: Any) -> None:
    _create(conn, BatchRow, BatchItemRow)


def _m0008_evals(conn: Any) -> None:
    _create(conn, EvalRow, EvalOutcomeRow)


# Append-only: a released migration is never edited, a new one is added with the next number.
MIGRATIONS: list[tuple[str, Callable[[Any], None]]] = [
    ("0001_initial", _m0001_initial),
    ("0002_claim_reconciliation", _m0002_claim_reconciliation),
    ("0003_batches", _m0003_batches),
    ("0008_evals", _m0008_evals),
]
