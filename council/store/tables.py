"""The store's tables (sqlmodel) and the named migrations that create and grow them.

Migrations are append-only: a released one is never edited; a schema change is a new, small, named
migration at the end of ``MIGRATIONS``, recorded in ``council_migrations`` when applied (``Store.migrate``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Index, text
from sqlmodel import Field, SQLModel

from council.calls.answers import AnswerFields, ClaimFields, FailureFields
from council.calls.records import CallRecordFields

__all__ = [
    "AnswerRow", "BudgetCeilingRow", "BudgetHoldRow", "BudgetLedgerRow", "CallRow", "ClaimRow",
    "ClusterRow", "EscalationRow", "EvalOutcomeRow", "EvalRow", "FailureRow", "FeedbackRow",
    "JudgementRow", "MIGRATIONS", "MigrationRow", "PassageRow", "PolicyRow", "ReviewDecisionRow",
    "ReviewFlagRow", "ReviewRow", "RunModelRow", "RunRow", "RunTagRow", "SourceRow", "VerdictRow",
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


class CallRow(CallRecordFields, table=True):
    """One call record (the ``CallRecord`` contract's fields)."""

    __tablename__ = "calls"


class AnswerRow(AnswerFields, table=True):
    """A member's answer without its claims (``MemberAnswer``'s fields; ``confidence`` added by 0002; the
    revision fields and ``superseded_by`` by 0009)."""

    __tablename__ = "answers"
    superseded_by: str | None = None
    """The answer of a later revision round that replaced this one (None: the member's answer in force)."""


class ClaimRow(ClaimFields, table=True):
    """A claim (``Claim``'s fields; ``cluster_id`` added by 0002), its position in its answer and its
    citations as JSON."""

    __tablename__ = "claims"
    position: int
    citations_json: str = "[]"


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


class FailureRow(FailureFields, table=True):
    """A member failure (``MemberFailure``'s fields), its call ids as JSON."""

    __tablename__ = "member_failures"
    call_ids_json: str = "[]"


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
    tags_json: str | None = None
    """JSON object of the item's tags (added by migration 0005)."""
    needs_review: bool | None = None
    """The verdict was flagged for human review (added by migration 0005)."""
    review_reasons: str | None = None
    """The review conditions that fired, ``condition: detail`` joined by ``; `` (added by migration 0005)."""
    warnings: str | None = None
    """What the verdict records about attempts to steer it (adjudicator overruled the vote, suspicious
    members or sources), joined by ``; `` (added by migration 0010)."""
    cost_usd: float | None = None
    error: str | None = None
    updated_at: datetime


class ReviewRow(SQLModel, table=True):
    """One peer review (recipe stage ``review``): a member's review of the other members' answers."""

    __tablename__ = "reviews"
    review_id: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    reviewer_label: str
    reviewer_model: str
    call_id: str | None = None
    status: str
    """``ok`` or ``failed`` (then ``error_kind`` and ``reason`` say why the review is missing)."""
    error_kind: str | None = None
    reason: str | None = None
    shown_json: str = "[]"
    """Member labels of the answers shown, in the reviewer's shuffled order."""
    ranking_json: str = "[]"
    """Member labels, best first."""


class JudgementRow(SQLModel, table=True):
    """A reviewer's judgement of one claim."""

    __tablename__ = "review_judgements"
    review_id: str = Field(primary_key=True)
    claim_id: str = Field(primary_key=True, index=True)
    run_id: str = Field(index=True)
    reviewer_model: str
    verdict: str
    """``accurate``, ``inaccurate`` or ``unverifiable``."""
    reason: str = ""
    quote: str = ""


class EscalationRow(SQLModel, table=True):
    """An item (a contested cluster, or a fact check's unsettled label) put to the strong tier."""

    __tablename__ = "escalations"
    escalation_id: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    target: str
    """The cluster id, or ``label``."""
    body_json: str


class RunTagRow(SQLModel, table=True):
    """A tag of a run's item (``risk=high`` on a batch row, ``--tag`` on ``council check-one``)."""

    __tablename__ = "run_tags"
    run_id: str = Field(primary_key=True)
    key: str = Field(primary_key=True)
    value: str


class ReviewFlagRow(SQLModel, table=True):
    """One review condition that fired for a run's verdict: together, the run's place in the review queue."""

    __tablename__ = "review_flags"
    run_id: str = Field(primary_key=True)
    condition: str = Field(primary_key=True)
    detail: str
    flagged_at: datetime = Field(index=True)


class ReviewDecisionRow(SQLModel, table=True):
    """A person's decision on a run's verdict. Never updated except ``latest``: a new decision on the same
    run is a new row, and the council's own verdict stays untouched in ``verdicts``."""

    __tablename__ = "review_decisions"
    decision_id: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    reviewer: str
    decided_at: datetime
    label: str
    note: str = ""
    council_label: str | None = None
    """The council's label (fact checks) when the decision was made: what the decision confirms or overturns."""
    council_answer: str
    verdict_id: str
    """The council verdict the decision is about."""
    solicited: bool
    """The run was flagged for review; False: an unsolicited review (``--force``)."""
    latest: bool = Field(index=True)
    """The run's current decision (the newest); earlier ones are kept as history."""
    supersedes: str | None = None
    """The decision this one replaced."""


class BudgetLedgerRow(SQLModel, table=True):
    """Money a budget may spend and has spent or holds, shared by every process using the database
    (``council.store.ledger``). A batch's budget is ``batch:<batch id>``; a ceiling's window is
    ``ceiling:<name>:<window start>``."""

    __tablename__ = "budget_ledgers"
    ledger_id: str = Field(primary_key=True)
    limit_usd: float
    spent_usd: float = 0.0
    """Settled calls: their real cost, or their worst case when the cost is unknown."""
    held_usd: float = 0.0
    """Reservations not settled yet (a process that died mid-call leaves its worst case here)."""
    created_at: datetime
    updated_at: datetime


class BudgetHoldRow(SQLModel, table=True):
    """One reservation in one ledger, settled exactly once (the hold id is its key)."""

    __tablename__ = "budget_holds"
    hold_id: str = Field(primary_key=True)
    ledger_id: str = Field(primary_key=True)
    amount_usd: float
    owner: str
    """The process (``host:pid:token``) that reserved it."""
    policy: str | None = None
    created_at: datetime
    settled_at: datetime | None = None
    charged_usd: float | None = None


class BudgetCeilingRow(SQLModel, table=True):
    """A standing ceiling on what the database's batches spend under a policy (``*``: any) per period."""

    __tablename__ = "budget_ceilings"
    name: str = Field(primary_key=True)
    policy: str = "*"
    limit_usd: float
    period: str = "day"
    """``hour``, ``day``, ``month`` (UTC calendar windows) or ``total``."""


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


def _m0004_deliberation(conn: Any) -> None:
    _create(conn, ReviewRow, JudgementRow, EscalationRow)


def _m0005_human_review(conn: Any) -> None:
    _create(conn, RunTagRow, ReviewFlagRow, ReviewDecisionRow)
    _add_column(conn, "batch_items", "tags_json", "VARCHAR")
    _add_column(conn, "batch_items", "needs_review", "BOOLEAN")
    _add_column(conn, "batch_items", "review_reasons", "VARCHAR")
    _backfill_review_flags(conn)


def _backfill_review_flags(conn: Any) -> None:
    """Verdicts flagged before review conditions were recorded join the queue, with the conditions their
    own fields show (the old rule flagged contested verdicts, any dissent and degraded councils)."""
    import json

    rows = []
    for run_id, body, finished in conn.execute(text(
            "SELECT v.run_id, v.body_json, r.finished_at FROM verdicts v JOIN runs r ON r.run_id = v.run_id")):
        v = json.loads(body)
        if not v.get("needs_human_review") or v.get("review_reasons"):
            continue
        found = []
        if v.get("decided_by") == "adjudicator" or v.get("unresolved"):
            found.append(("contested", "the weighted vote could not settle the verdict"))
        if v.get("agreement", 1.0) < 1.0:
            found.append(("low_agreement", f"agreement {v['agreement']:.2f} below 1.00"))
        if v.get("degraded"):
            found.append(("degraded", "; ".join(v.get("degraded_reasons") or []) or "degraded council"))
        if isinstance(finished, str):  # SQLite hands a raw SELECT's timestamps back as text, in UTC
            finished = datetime.fromisoformat(finished)
        if finished is not None and finished.tzinfo is None:
            finished = finished.replace(tzinfo=UTC)
        rows += [{"run_id": run_id, "condition": c, "detail": d, "flagged_at": finished or datetime.now(UTC)}
                 for c, d in found or [("always", "flagged by its policy")]]
    if rows:
        conn.execute(ReviewFlagRow.__table__.insert(), rows)  # type: ignore[attr-defined]


def _m0006_call_queued_time(conn: Any) -> None:
    _add_column(conn, "calls", "queued_s", "FLOAT NOT NULL DEFAULT 0")


def _m0007_budget_ledgers(conn: Any) -> None:
    _create(conn, BudgetLedgerRow, BudgetHoldRow, BudgetCeilingRow)


def _m0008_evals(conn: Any) -> None:
    _create(conn, EvalRow, EvalOutcomeRow)


def _m0009_revision_rounds(conn: Any) -> None:
    _add_column(conn, "answers", "round", "INTEGER NOT NULL DEFAULT 1")
    _add_column(conn, "answers", "revised_from", "VARCHAR")
    _add_column(conn, "answers", "revision", "VARCHAR")
    _add_column(conn, "answers", "revision_reason", "VARCHAR")
    _add_column(conn, "answers", "superseded_by", "VARCHAR")


def _m0010_verdict_warnings(conn: Any) -> None:
    _add_column(conn, "batch_items", "warnings", "VARCHAR")


# Append-only: a released migration is never edited, a new one is added with the next number.
MIGRATIONS: list[tuple[str, Callable[[Any], None]]] = [
    ("0001_initial", _m0001_initial),
    ("0002_claim_reconciliation", _m0002_claim_reconciliation),
    ("0003_batches", _m0003_batches),
    ("0004_deliberation", _m0004_deliberation),
    ("0005_human_review", _m0005_human_review),
    ("0006_call_queued_time", _m0006_call_queued_time),
    ("0007_budget_ledgers", _m0007_budget_ledgers),
    ("0008_evals", _m0008_evals),
    ("0009_revision_rounds", _m0009_revision_rounds),
    ("0010_verdict_warnings", _m0010_verdict_warnings),
]
