"""The store: every run, call record, answer, claim, failure and verdict, in SQL through sqlmodel.

SQLite file by default (``default_db_url()``, in the user data directory; override with ``--db`` or
``COUNCIL_DB``); any SQLAlchemy URL works, PostgreSQL included. The schema grows by small named migrations
recorded in ``council_migrations``. The provenance graph is rebuilt from what is stored here, so a run
from yesterday can be inspected as well as one in memory. No API key is ever stored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, col, create_engine, select

from .answers import Citation, Claim, MemberAnswer, MemberFailure
from .catalog import ModelEntry
from .errors import RunNotFound, StoreError
from .policy import TaskPolicy
from .records import CallRecord
from .verdict import Verdict

__all__ = ["DB_ENV", "RunSummary", "Store", "StoredRun", "default_db_url"]

DB_ENV = "COUNCIL_DB"


def default_db_url() -> str:
    """``COUNCIL_DB`` if set, else a SQLite file in the user data directory."""
    env = os.environ.get(DB_ENV)
    if env:
        return env if "://" in env else f"sqlite:///{Path(env).expanduser().resolve()}"
    import platformdirs

    path = Path(platformdirs.user_data_dir("council", appauthor=False)) / "council.db"
    return f"sqlite:///{path}"


def _now() -> datetime:
    return datetime.now(UTC)


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


class MigrationRow(SQLModel, table=True):
    __tablename__ = "council_migrations"
    name: str = Field(primary_key=True)
    applied_at: datetime


def _m0001_initial(conn: Any) -> None:
    tables = [RunRow, PolicyRow, RunModelRow, CallRow, AnswerRow, ClaimRow, FailureRow, VerdictRow]
    SQLModel.metadata.create_all(conn, tables=[t.__table__ for t in tables])  # type: ignore[attr-defined]


# Append-only: a released migration is never edited, a new one is added with the next number.
MIGRATIONS: list[tuple[str, Callable[[Any], None]]] = [
    ("0001_initial", _m0001_initial),
]


class RunSummary(BaseModel):
    """One line of ``council runs``."""

    run_id: str
    created_at: datetime
    task: str
    question: str
    status: str
    verdict: str | None
    degraded: bool | None
    total_cost_usd: float


class StoredRun(BaseModel):
    """Everything stored of one run: what the provenance graph and ``council show`` are built from."""

    run_id: str
    created_at: datetime
    finished_at: datetime | None
    task: str
    question: str
    status: str
    recipe: str
    member_policy: TaskPolicy
    adjudication_policy: TaskPolicy
    panel: list[dict[str, Any]]
    models: list[ModelEntry]
    calls: list[CallRecord]
    answers: list[MemberAnswer]
    failures: list[MemberFailure]
    verdict: Verdict | None
    total_cost_usd: float


class Store:
    """A council database. Create one per URL and share it; it is safe to use from one event loop."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_db_url()
        if self.url.startswith("sqlite:///") and self.url != "sqlite:///:memory:":
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            args: dict[str, Any] = {"timeout": 30} if self.url.startswith("sqlite") else {}
            self.engine: Engine = create_engine(self.url, connect_args=args)
            self.migrate()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open database {self.safe_url}: {type(exc).__name__}: {exc.args[0] if exc.args else exc}") from None
        except ModuleNotFoundError as exc:
            raise StoreError(f"cannot open database {self.safe_url}: driver missing ({exc.name})") from None

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden."""
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:
            return "<invalid database URL>"

    def migrate(self) -> list[str]:
        """Apply pending migrations in order; return the names applied."""
        applied: list[str] = []
        with self.engine.begin() as conn:
            MigrationRow.__table__.create(conn, checkfirst=True)  # type: ignore[attr-defined]
            done = {r[0] for r in conn.execute(text("SELECT name FROM council_migrations"))}
            for name, fn in MIGRATIONS:
                if name in done:
                    continue
                fn(conn)
                conn.execute(
                    text("INSERT INTO council_migrations (name, applied_at) VALUES (:n, :t)"),
                    {"n": name, "t": _now()},
                )
                applied.append(name)
        return applied

    def _write(self, *rows: SQLModel) -> None:
        try:
            with Session(self.engine) as s:
                for row in rows:
                    s.merge(row)
                s.commit()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot write to {self.safe_url}: {type(exc).__name__}") from exc

    # writes -------------------------------------------------------------------------------------
    def start_run(
        self,
        *,
        run_id: str,
        task: str,
        question: str,
        recipe: str,
        member_policy: TaskPolicy,
        adjudication_policy: TaskPolicy,
        panel: list[dict[str, Any]],
        models: list[ModelEntry],
        created_at: datetime,
    ) -> None:
        rows: list[SQLModel] = [
            RunRow(
                run_id=run_id, created_at=created_at, task=task, question=question, recipe=recipe,
                member_policy=member_policy.ref, adjudication_policy=adjudication_policy.ref,
                panel_json=json.dumps(panel),
            )
        ]
        for p in {member_policy.ref: member_policy, adjudication_policy.ref: adjudication_policy}.values():
            rows.append(PolicyRow(ref=p.ref, name=p.name, version=p.version, body_json=p.model_dump_json()))
        for m in models:
            rows.append(RunModelRow(run_id=run_id, name=m.name, body_json=m.model_dump_json()))
        self._write(*rows)

    def add_call(self, record: CallRecord) -> None:
        """Write one call record (idempotent on ``call_id``)."""
        self._write(CallRow(**record.model_dump()))

    def add_answer(self, answer: MemberAnswer) -> None:
        rows: list[SQLModel] = [
            AnswerRow(**answer.model_dump(include={"answer_id", "run_id", "member_label", "model", "call_id", "answer", "label", "raw_text"}))
        ]
        for i, c in enumerate(answer.claims):
            rows.append(
                ClaimRow(
                    claim_id=c.claim_id, run_id=c.run_id, answer_id=c.answer_id, member_label=c.member_label,
                    model=c.model, position=i, text=c.text, confidence=c.confidence,
                    citations_json=json.dumps([x.model_dump() for x in c.citations]),
                )
            )
        self._write(*rows)

    def add_failure(self, failure: MemberFailure) -> None:
        self._write(
            FailureRow(
                run_id=failure.run_id, member_label=failure.member_label, model_requested=failure.model_requested,
                error_kind=failure.error_kind, reason=failure.reason, call_ids_json=json.dumps(failure.call_ids),
                raw_text=failure.raw_text,
            )
        )

    def finish_run(self, run_id: str, verdict: Verdict | None, status: str) -> float:
        """Store the verdict, mark the run finished, and return its total cost (sum of call records)."""
        try:
            with Session(self.engine) as s:
                total = sum(c.cost_usd for c in s.exec(select(CallRow).where(CallRow.run_id == run_id)))
                run = s.get(RunRow, run_id)
                if run is None:
                    raise RunNotFound(f"no run {run_id}")
                run.status, run.finished_at, run.total_cost_usd = status, _now(), total
                if verdict is not None:
                    s.merge(VerdictRow(verdict_id=verdict.verdict_id, run_id=run_id, body_json=verdict.model_dump_json()))
                    run.verdict_label = verdict.label
                    run.verdict_answer = verdict.answer
                    run.degraded = verdict.degraded
                s.add(run)
                s.commit()
                return total
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot write to {self.safe_url}: {type(exc).__name__}") from exc

    # reads --------------------------------------------------------------------------------------
    def resolve_run_id(self, prefix: str) -> str:
        """The full id of the one run whose id starts with ``prefix``."""
        with Session(self.engine) as s:
            ids = list(s.exec(select(RunRow.run_id).where(col(RunRow.run_id).startswith(prefix)).limit(2)))
        if not ids:
            raise RunNotFound(f"no run with id {prefix!r} in {self.safe_url}")
        if len(ids) > 1:
            raise RunNotFound(f"run id {prefix!r} is ambiguous: give more characters")
        return ids[0]

    def list_runs(self, limit: int = 20) -> list[RunSummary]:
        with Session(self.engine) as s:
            rows = s.exec(select(RunRow).order_by(col(RunRow.created_at).desc()).limit(limit)).all()
        return [
            RunSummary(
                run_id=r.run_id, created_at=r.created_at, task=r.task, question=r.question, status=r.status,
                verdict=r.verdict_label or r.verdict_answer, degraded=r.degraded, total_cost_usd=r.total_cost_usd,
            )
            for r in rows
        ]

    def load_run(self, run_id: str) -> StoredRun:
        """Everything stored of a run (``run_id`` may be a unique prefix)."""
        run_id = self.resolve_run_id(run_id)
        with Session(self.engine) as s:
            run = s.get(RunRow, run_id)
            assert run is not None
            mp = s.get(PolicyRow, run.member_policy)
            ap = s.get(PolicyRow, run.adjudication_policy)
            models = s.exec(select(RunModelRow).where(RunModelRow.run_id == run_id)).all()
            calls = s.exec(select(CallRow).where(CallRow.run_id == run_id).order_by(CallRow.started_at)).all()
            answers = s.exec(select(AnswerRow).where(AnswerRow.run_id == run_id).order_by(AnswerRow.member_label)).all()
            claims = s.exec(select(ClaimRow).where(ClaimRow.run_id == run_id).order_by(ClaimRow.position)).all()
            failures = s.exec(select(FailureRow).where(FailureRow.run_id == run_id).order_by(FailureRow.member_label)).all()
            verdict = s.exec(select(VerdictRow).where(VerdictRow.run_id == run_id)).first()
        if mp is None or ap is None:
            raise StoreError(f"run {run_id} refers to a policy missing from the store")
        by_answer: dict[str, list[Claim]] = {}
        for c in claims:
            by_answer.setdefault(c.answer_id, []).append(
                Claim(
                    claim_id=c.claim_id, run_id=c.run_id, answer_id=c.answer_id, member_label=c.member_label,
                    model=c.model, text=c.text, confidence=c.confidence,
                    citations=[Citation(**x) for x in json.loads(c.citations_json)],
                )
            )
        return StoredRun(
            run_id=run.run_id, created_at=run.created_at, finished_at=run.finished_at, task=run.task,
            question=run.question, status=run.status, recipe=run.recipe,
            member_policy=TaskPolicy.model_validate_json(mp.body_json),
            adjudication_policy=TaskPolicy.model_validate_json(ap.body_json),
            panel=json.loads(run.panel_json),
            models=[ModelEntry.model_validate_json(m.body_json) for m in models],
            calls=[CallRecord.model_validate(c.model_dump()) for c in calls],
            answers=[
                MemberAnswer(
                    answer_id=a.answer_id, run_id=a.run_id, member_label=a.member_label, model=a.model,
                    call_id=a.call_id, answer=a.answer, label=a.label, raw_text=a.raw_text,  # type: ignore[arg-type]
                    claims=by_answer.get(a.answer_id, []),
                )
                for a in answers
            ],
            failures=[
                MemberFailure(
                    run_id=f.run_id, member_label=f.member_label, model_requested=f.model_requested,
                    error_kind=f.error_kind, reason=f.reason, call_ids=json.loads(f.call_ids_json), raw_text=f.raw_text,
                )
                for f in failures
            ],
            verdict=Verdict.model_validate_json(verdict.body_json) if verdict else None,
            total_cost_usd=run.total_cost_usd,
        )
