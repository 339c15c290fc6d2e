"""The store: every run, call record, answer, claim, failure and verdict, in SQL through sqlmodel.

SQLite file by default (``default_db_url()``, in the user data directory; override with ``--db`` or
``COUNCIL_DB``); any SQLAlchemy URL works, PostgreSQL included. The schema grows by small named migrations
recorded in ``council_migrations``. The provenance graph is rebuilt from what is stored here, so a run
from yesterday can be inspected as well as one in memory. No API key is ever stored.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, SQLModel, create_engine

from council.calls.answers import Claim, MemberAnswer, MemberFailure
from council.config.catalog import ModelEntry
from council.deliberation.clusters import ClaimCluster
from council.deliberation.sources import Passage, Source
from council.errors import RunNotFound, StoreError
from council.config.policy import TaskPolicy
from council.calls.records import CallRecord
from .mapping import answer_values, claim_values, failure_values
from .sql import defaults as _defaults, sqlite_pragmas as _sqlite_pragmas, store_errors, upsert as _upsert
from .reads import RunSummary, StoredRun, list_runs, load_run, resolve_run_id
from .reviews import flag_rows
from .tables import (
    MIGRATIONS,
    AnswerRow,
    CallRow,
    ClaimRow,
    ClusterRow,
    FailureRow,
    FeedbackRow,
    MigrationRow,
    PassageRow,
    PolicyRow,
    RunModelRow,
    ReviewFlagRow,
    RunRow,
    RunTagRow,
    SourceRow,
    VerdictRow,
)
from .urls import DB_ENV, default_db_url, resolve_db_url, _with_driver
from council.deliberation.verdict import Verdict
from council.deliberation.vote import Reliability

__all__ = ["DB_ENV", "RunSummary", "Store", "StoredRun", "default_db_url", "resolve_db_url"]


def _now() -> datetime:
    return datetime.now(UTC)


class Store:
    """A council database. Create one per URL and share it; it is safe to use from one event loop."""

    reliability_ttl_s: float = 0.0
    """Reuse learned reliabilities computed less than this many seconds ago (0: always recompute). A batch
    sets it: the aggregate reads every stored answer, and thousands of councils need not each redo it."""

    def __init__(self, url: str | os.PathLike[str] | None = None, *, lazy: bool = False) -> None:
        """``url``: a SQLAlchemy URL or a SQLite path (see ``resolve_db_url``). ``lazy``: connect, create and
        migrate the database on first use rather than now, so a request refused before it reaches the store
        (a config error) writes nothing at all."""
        self._deferred, self._intents = [], set()
        self.url = _with_driver(resolve_db_url(url))
        self._opened = False
        self._open_lock = threading.Lock()
        self._call_listeners: list[Callable[[CallRecord], None]] = []
        try:
            args: dict[str, Any] = {"timeout": 30} if self.url.startswith("sqlite") else {}
            self._engine: Engine = create_engine(self.url, connect_args=args)
            if self.url.startswith("sqlite"):
                from sqlalchemy import event

                event.listen(self._engine, "connect", _sqlite_pragmas)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open database {self.safe_url}: {type(exc).__name__}: {exc.args[0] if exc.args else exc}") from None
        except ModuleNotFoundError as exc:
            raise StoreError(f"cannot open database {self.safe_url}: driver missing ({exc.name})") from None
        if not lazy:
            self._open()

    @property
    def opened(self) -> bool:
        """True once the database has been connected to (and created, for a new SQLite file)."""
        return self._opened

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, the database created and migrated on first use."""
        if not self._opened:
            self._open()
        return self._engine

    def _open(self) -> None:
        if self.url.startswith("sqlite:///") and self.url != "sqlite:///:memory:":
            folder = Path(self.url.removeprefix("sqlite:///").split("?", 1)[0]).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)  # the default location's folder (see resolve_db_url)
            except OSError as exc:
                raise StoreError(f"cannot open database {self.url}: cannot create {folder}: {exc.strerror or exc}") from None
        with self._open_lock:  # threads (asyncio.to_thread, a web server) may all be first to use it
            if self._opened:
                return
            try:
                self.migrate()
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot open database {self.safe_url}: {type(exc).__name__}: {exc.args[0] if exc.args else exc}") from None
            self._opened = True  # only now: nobody reads tables that are not there yet

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden."""
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:
            return "<invalid database URL>"

    # Rows that may wait for the next transaction (see ``add_call`` and ``add_reconciliation``): written
    # first in whatever transaction this store begins next, and before any read, so that a council makes
    # fewer commits (each commit is a round of SQLAlchemy's Python layer and, on SQLite, a WAL write).
    _deferred: list[tuple[type[SQLModel], dict[str, Any]]]
    _intents: set[str]

    @contextmanager
    def begin(self, action: str = "write to") -> Iterator[Connection]:
        """A connection in a transaction (committed when the block ends), which also writes the deferred
        rows; SQLAlchemy errors become ``StoreError("cannot <action> <url>: ...")``. If the transaction
        fails, the deferred rows are kept for the next one."""
        deferred, self._deferred = self._deferred, []
        try:
            with store_errors(action, self.safe_url), self.engine.begin() as conn:
                if deferred:
                    self._upsert(conn, deferred)
                yield conn
        except BaseException:
            self._deferred[:0] = deferred
            raise

    def flush(self) -> None:
        """Write the deferred rows now."""
        if self._deferred:
            with self.begin():
                pass

    @contextmanager
    def connect(self, action: str = "read from") -> Iterator[Connection]:
        """A connection for reads (deferred rows are written first); SQLAlchemy errors become
        ``StoreError``."""
        self.flush()
        with store_errors(action, self.safe_url), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def session(self, action: str = "read from") -> Iterator[Session]:
        """An ORM session for reads (deferred rows are written first); SQLAlchemy errors become
        ``StoreError``."""
        self.flush()
        with store_errors(action, self.safe_url), Session(self.engine) as s:
            yield s

    def migrate(self) -> list[str]:
        """Apply pending migrations in order; return the names applied."""
        applied: list[str] = []
        with self._engine.begin() as conn:
            # Several processes may open a new database at once (a batch of `council` commands): take the
            # write lock first, or both create the tables and one fails with "table ... already exists".
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7262301)")
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

    def _write(self, *rows: SQLModel | tuple[type[SQLModel], dict[str, Any]]) -> None:
        """Upsert ``rows`` in one transaction (with any deferred rows): insert each, or replace the row with
        its primary key. A row is a table object, or (table class, column values) for the hot paths
        (building a SQLModel object only to read its values back costs more than the write itself)."""
        with self.begin() as conn:
            self._upsert(conn, rows)

    def _upsert(self, conn: Connection, rows: Iterable[SQLModel | tuple[type[SQLModel], dict[str, Any]]]) -> None:
        """Upsert ``rows`` on ``conn``, one statement per table; a later row with the same primary key wins."""
        by_table: dict[Any, tuple[type[SQLModel], dict[tuple[Any, ...], dict[str, Any]]]] = {}
        for row in rows:
            if isinstance(row, tuple):
                model, given = row
                values = {**_defaults(model), **given}
            else:
                model = type(row)
                values = {c.name: getattr(row, c.name) for c in model.__table__.columns}  # type: ignore[attr-defined]
            table = model.__table__  # type: ignore[attr-defined]
            keyed = by_table.setdefault(table, (model, {}))[1]
            keyed[tuple(values[c.name] for c in table.primary_key.columns)] = values
        for table, (model, keyed) in by_table.items():
            stmt = _upsert(conn.dialect.name, table)
            if stmt is not None:
                conn.execute(stmt, list(keyed.values()))
                continue
            with Session(bind=conn) as s:  # databases without ON CONFLICT: the ORM's merge
                for values in keyed.values():
                    s.merge(model(**values))
                s.flush()

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
        sources: list[Source] | None = None,
        passages: list[Passage] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        rows: list[tuple[type[SQLModel], dict[str, Any]]] = [
            (RunRow, dict(
                run_id=run_id, created_at=created_at, task=task, question=question, recipe=recipe,
                member_policy=member_policy.ref, adjudication_policy=adjudication_policy.ref,
                panel_json=json.dumps(panel),
            ))
        ]
        written = self.__dict__.setdefault("_policies_written", set())  # a policy version never changes
        for p in {member_policy.ref: member_policy, adjudication_policy.ref: adjudication_policy}.values():
            if p.ref not in written:
                rows.append((PolicyRow, dict(ref=p.ref, name=p.name, version=p.version, body_json=p.model_dump_json())))
        for m in models:
            rows.append((RunModelRow, dict(run_id=run_id, name=m.name, body_json=m.model_dump_json())))
        for src in sources or []:
            rows.append((SourceRow, dict(run_id=run_id, source_id=src.source_id, title=src.title)))
        for key, value in (tags or {}).items():
            rows.append((RunTagRow, dict(run_id=run_id, key=key, value=value)))
        for p in passages or []:
            rows.append((PassageRow, dict(run_id=run_id, passage_id=p.passage_id, source_id=p.source_id,
                                          position=p.position, key=p.key, text=p.text)))
        self._write(*rows)
        written.update({member_policy.ref, adjudication_policy.ref})

    def add_call_intent(self, record: CallRecord) -> None:
        """Write the ``pending`` record of an attempt about to be sent (write-ahead). It never replaces a
        record: a call id already stored means another process is running the same run, and the request
        must not be sent (StoreError)."""
        from sqlalchemy.exc import IntegrityError

        try:
            with self.begin() as conn:
                conn.execute(CallRow.__table__.insert(), [record.model_dump()])  # type: ignore[attr-defined]
        except StoreError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                raise StoreError(f"call {record.call_id} of run {record.run_id} is already recorded: "
                                 "is another process running the same run?") from None
            raise
        self._intents.add(record.call_id)
        self._tell(record)

    def add_call(self, record: CallRecord) -> None:
        """Write one call record (idempotent on ``call_id``). The final record of an attempt whose
        ``pending`` record was written ahead (``add_call_intent``) rides with the next transaction: until
        then the pending record stands for it, so a crash in between still leaves exactly one record of the
        attempt (``interrupted``, as for any call cut short)."""
        if record.call_id in self._intents:
            self._intents.discard(record.call_id)
            self._deferred.append((CallRow, record.model_dump()))
        else:
            self._write((CallRow, record.model_dump()))
        self._tell(record)

    def on_call(self, listener: Callable[[CallRecord], None]) -> None:
        """Call ``listener`` with every call record as it is written (``pending`` before a call is sent, then
        its outcome): what a live progress display shows. It runs on the writer's thread: keep it quick."""
        self._call_listeners.append(listener)

    def _tell(self, record: CallRecord) -> None:
        for listener in self._call_listeners:
            try:
                listener(record)
            except Exception:  # a broken display must not fail a run
                pass

    def add_answer(self, answer: MemberAnswer) -> None:
        rows: list[tuple[type[SQLModel], dict[str, Any]]] = [
            (AnswerRow, answer_values(answer))
        ]
        rows += [self._claim_row(c, i) for i, c in enumerate(answer.claims)]
        self._write(*rows)

    @staticmethod
    def _claim_row(c: Claim, position: int) -> tuple[type[SQLModel], dict[str, Any]]:
        return (ClaimRow, claim_values(c, position))

    def add_reconciliation(self, run_id: str, answers: list[MemberAnswer], clusters: list[ClaimCluster]) -> None:
        """Store the clusters, and each claim's cluster and verified citations. Derived data: the rows ride
        with the next transaction (a resumed run drops and rebuilds them anyway)."""
        rows: list[tuple[type[SQLModel], dict[str, Any]]] = [
            self._claim_row(c, i) for a in answers for i, c in enumerate(a.claims)]
        rows += [
            (ClusterRow, dict(cluster_id=k.cluster_id, run_id=run_id, label=k.label, status=k.status,
                              settled_by=k.settled_by, support=k.support, body_json=k.model_dump_json()))
            for k in clusters
        ]
        self._deferred.extend(rows)

    def add_feedback(self, run_id: str, label: str, note: str = "") -> None:
        """Record a human's ground-truth label for a fact-check run (replaces an earlier one)."""
        from council.errors import InputError

        if label not in ("SUPPORTED", "REFUTED", "NOT_ENOUGH_INFO"):
            raise InputError(f"feedback label {label!r} must be SUPPORTED, REFUTED or NOT_ENOUGH_INFO")
        run_id = self.resolve_run_id(run_id)
        with self.session() as s:
            run = s.get(RunRow, run_id)
        if run is not None and run.task != "check":
            raise InputError(f"run {run_id} is a question, not a fact check: feedback takes the true label of a fact check")
        self._write(FeedbackRow(run_id=run_id, label=label, note=note, created_at=_now()))
        self.__dict__.pop("_reliability_cache", None)

    def reliabilities(
        self, prior: float, prior_weight: float, task: str = "check", min_feedback: int = 20
    ) -> dict[str, Reliability]:
        """Every model's learned reliability for ``task``.

        Fact checks (``check``): agreement of the model's labels with the true label. A person's latest
        review decision (``council review``) is the truth where given, else ``council feedback``; for runs without it, the council's own verdict stands in. Agreement with
        one's own verdicts is self-referential (two members that err together confirm each other), so a
        model with at least ``min_feedback`` human-labelled judgements is judged on those alone.
        Questions (``ask``): agreement of the model's claims with the clusters the council accepted or
        rejected (when a reviewer REJECTED the answer, its accepted claims count as wrong). Smoothed toward ``prior`` with the weight of ``prior_weight`` judgements.
        """
        agree_case = "SUM(CASE WHEN a.label = {truth} THEN 1 ELSE 0 END), COUNT(*)"
        # The truth of a run: its latest review decision (``council review``), else ``council feedback``.
        truth = ("(SELECT run_id, label FROM review_decisions WHERE latest = TRUE UNION ALL "
                 "SELECT fb.run_id, fb.label FROM feedback fb WHERE NOT EXISTS (SELECT 1 FROM review_decisions rd "
                 "WHERE rd.run_id = fb.run_id))")
        supervised = text(
            f"SELECT a.model, {agree_case.format(truth='f.label')} "
            f"FROM answers a JOIN {truth} f ON f.run_id = a.run_id JOIN runs r ON r.run_id = a.run_id "
            "WHERE r.task = 'check' AND a.label IN ('SUPPORTED', 'REFUTED') AND a.superseded_by IS NULL "
            "AND f.label IN ('SUPPORTED', 'REFUTED') GROUP BY a.model"
        )
        unsupervised = text(
            f"SELECT a.model, {agree_case.format(truth='r.verdict_label')} "
            f"FROM answers a JOIN runs r ON r.run_id = a.run_id LEFT JOIN {truth} f ON f.run_id = a.run_id "
            "WHERE r.task = 'check' AND f.run_id IS NULL AND a.label IN ('SUPPORTED', 'REFUTED') AND a.superseded_by IS NULL "
            "AND r.verdict_label IN ('SUPPORTED', 'REFUTED') GROUP BY a.model"
        )
        # A question whose answer a reviewer REJECTED: the claims the council accepted count as wrong, and
        # what it rejected is left out (the reviewer did not say what is right).
        claims = text(
            "SELECT c.model, SUM(CASE WHEN k.status = 'accepted' AND COALESCE(d.label, '') <> 'REJECTED' "
            "THEN 1 ELSE 0 END), COUNT(*) "
            "FROM claims c JOIN clusters k ON k.cluster_id = c.cluster_id JOIN runs r ON r.run_id = c.run_id "
            "LEFT JOIN review_decisions d ON d.run_id = c.run_id AND d.latest = TRUE "
            "WHERE r.task = 'ask' AND k.status IN ('accepted', 'rejected') "
            "AND NOT (COALESCE(d.label, '') = 'REJECTED' AND k.status = 'rejected') GROUP BY c.model"
        )

        def fetch(sql: Any) -> dict[str, tuple[int, int]]:
            with self.connect() as conn:
                return {m: (int(a or 0), int(t or 0)) for m, a, t in conn.execute(sql)}

        counts: dict[str, tuple[int, int]] = {}
        cache = self.__dict__.setdefault("_reliability_cache", {})
        hit = cache.get((task, min_feedback)) if self.reliability_ttl_s > 0 else None
        if hit is not None and time.monotonic() - hit[0] < self.reliability_ttl_s:
            counts = hit[1]
        elif task == "check":
            sup, unsup = fetch(supervised), fetch(unsupervised)
            for m in set(sup) | set(unsup):
                s, u = sup.get(m, (0, 0)), unsup.get(m, (0, 0))
                counts[m] = s if s[1] >= min_feedback else (s[0] + u[0], s[1] + u[1])
        else:
            counts = fetch(claims)
        if self.reliability_ttl_s > 0 and counts is not (hit or (0, None))[1]:
            cache[(task, min_feedback)] = (time.monotonic(), counts)
        return {
            m: Reliability(model=m, agree=a, total=t, value=(a + prior * prior_weight) / (t + prior_weight))
            for m, (a, t) in counts.items()
            if t + prior_weight > 0
        }

    def add_failure(self, failure: MemberFailure) -> None:
        self._write((FailureRow, failure_values(failure)))

    def finish_run(self, run_id: str, verdict: Verdict | None, status: str) -> float:
        """Store the verdict, mark the run finished, and return its total cost (sum of call records)."""
        from sqlalchemy import func, update
        from sqlalchemy import select as core_select

        runs, calls = RunRow.__table__, CallRow.__table__  # type: ignore[attr-defined]
        with self.begin() as conn:
            total = float(conn.execute(core_select(func.coalesce(func.sum(calls.c.cost_usd), 0.0))
                                       .where(calls.c.run_id == run_id)).scalar_one())
            values: dict[str, Any] = {"status": status, "finished_at": _now(), "total_cost_usd": total}
            if verdict is not None:
                row = {"verdict_id": verdict.verdict_id, "run_id": run_id, "body_json": verdict.model_dump_json()}
                verdicts = VerdictRow.__table__  # type: ignore[attr-defined]
                stmt = _upsert(conn.dialect.name, verdicts)
                if stmt is None:
                    conn.execute(verdicts.delete().where(verdicts.c.run_id == run_id))
                    stmt = verdicts.insert()
                conn.execute(stmt, [row])
                flags = ReviewFlagRow.__table__  # type: ignore[attr-defined]
                conn.execute(flags.delete().where(flags.c.run_id == run_id))
                if verdict.review_reasons:
                    conn.execute(flags.insert(), flag_rows(run_id, verdict.review_reasons, _now()))
                values.update(verdict_label=verdict.label, verdict_answer=verdict.answer, degraded=verdict.degraded)
            if not conn.execute(update(runs).where(runs.c.run_id == run_id).values(**values)).rowcount:
                raise RunNotFound(f"no run {run_id}")  # leaving the block rolls the verdict back
            return total

    # reads --------------------------------------------------------------------------------------
    def resolve_run_id(self, prefix: str) -> str:
        """The full id of the one run whose id starts with ``prefix``."""
        return resolve_run_id(self, prefix)

    def runs_frame(self, since: Any = None, until: Any = None, limit: int | None = None) -> Any:
        """Runs started in [since, until) as a pandas DataFrame, oldest first (``limit``: the newest
        ``limit``). ``since``/``until``: datetime, date, ISO string or an age like ``7d`` (see
        ``council.store.windows.parse_when``)."""
        from .frames import runs_frame
        from .windows import load_runs

        return runs_frame(load_runs(self, since, until, limit))

    def calls_frame(self, since: Any = None, model: str | None = None, until: Any = None) -> Any:
        """Call records of the runs started in [since, until) as a pandas DataFrame; ``model`` keeps the
        calls sent to that model or made for a seat whose first choice it was."""
        from .frames import calls_frame
        from .windows import load_calls

        return calls_frame(load_calls(self, since, until, model))

    def list_runs(self, limit: int = 20) -> list[RunSummary]:
        """The newest ``limit`` runs, newest first: the lines of ``council runs``."""
        return list_runs(self, limit)

    def load_run(self, run_id: str) -> StoredRun:
        """Everything stored of a run (``run_id`` may be a unique prefix)."""
        return load_run(self, run_id)
