"""Budgets kept in the database: one limit that holds across processes, machines and invocations.

A ``LedgerBudget`` is a ``Budget`` whose money lives in ``budget_ledgers`` (migration 0007), so forty
Ray actors on ten machines, or two ``council check`` commands started by different people, draw from the
same ledger and cannot overspend together:

- reserve: before a call is sent, its worst case is held in every ledger that governs it, in one
  transaction, by a conditional update (``UPDATE budget_ledgers SET held_usd = held_usd + :x WHERE
  ledger_id = :id AND spent_usd + held_usd + :x <= limit_usd``). The database decides atomically; if any
  ledger refuses, the transaction is rolled back and the call is not sent. Each reservation is one row
  per ledger in ``budget_holds`` under a fresh hold id.
- settle: after the call, the hold is marked settled (``WHERE settled_at IS NULL``, so a repeated settle
  is a no-op) and, in the same transaction, its ledgers move the held worst case to the real cost.
- a process that dies between the two leaves its hold: the worst case stays charged, as for any call whose
  cost is unknown (the provider may have billed it). Money is never released on a guess.

Which ledgers govern a call: the batch's own budget (``batch:<batch id>``, ``--budget-usd``) and every
standing ceiling (``budget_ceilings``) set for the call's task policy or for every policy (``*``), in its
current window (UTC hour, day or month, or the whole life of the database).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from council.calls.budget import Budget, Reservation
from council.errors import BudgetExceeded, InputError, StoreError
from .tables import BudgetCeilingRow, BudgetHoldRow, BudgetLedgerRow

__all__ = ["Ceiling", "LedgerBudget", "LedgerReservation", "batch_ledger_id", "ceilings", "ledger_state",
           "open_batch_ledger", "remove_ceiling", "set_ceiling"]

Period = Literal["hour", "day", "month", "total"]
_EPS = 1e-12


class Ceiling(BaseModel):
    """A standing limit on what the database's batches spend, per policy and period."""

    name: str = Field(min_length=1)
    """Its name (``team-a``, ``fact-checks``)."""
    policy: str = "*"
    """The task policy whose calls it covers (``fact_check``, ``adjudication``), or ``*`` for every call."""
    limit_usd: float = Field(gt=0)
    """What may be spent in one window."""
    period: Period = "day"
    """The window: a UTC calendar hour, day or month, or ``total`` (never resets)."""

    def window(self, now: datetime | None = None) -> str:
        """The current window's ledger id."""
        t = (now or datetime.now(UTC)).astimezone(UTC)
        start = {"hour": t.strftime("%Y-%m-%dT%H"), "day": t.strftime("%Y-%m-%d"), "month": t.strftime("%Y-%m"),
                 "total": "all"}[self.period]
        return f"ceiling:{self.name}:{start}"

    def covers(self, policy: str | None) -> bool:
        return self.policy == "*" or self.policy == policy


class LedgerReservation(Reservation):
    """A reservation held in the database's ledgers."""

    __slots__ = ("hold_id", "ledgers")

    def __init__(self, amount: float, hold_id: str, ledgers: tuple[str, ...]) -> None:
        super().__init__(amount)
        self.hold_id = hold_id
        self.ledgers = ledgers


def batch_ledger_id(batch_id: str) -> str:
    return f"batch:{batch_id}"


def _now() -> datetime:
    return datetime.now(UTC)


def _fail(store: Any, what: str, exc: SQLAlchemyError) -> StoreError:
    return StoreError(f"cannot {what} in {store.safe_url}: {type(exc).__name__}: {exc.args[0] if exc.args else ''}")


def _ensure(conn: Any, ledger_id: str, limit_usd: float, spent_usd: float = 0.0) -> None:
    """Create a ledger unless it exists (insert-or-ignore: two processes may create it at once)."""
    t = BudgetLedgerRow.__table__  # type: ignore[attr-defined]
    now = _now()
    row = {"ledger_id": ledger_id, "limit_usd": limit_usd, "spent_usd": spent_usd, "held_usd": 0.0,
           "created_at": now, "updated_at": now}
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    conn.execute(insert(t).on_conflict_do_nothing(index_elements=["ledger_id"]), [row])


def open_batch_ledger(store: Any, batch_id: str, limit_usd: float, recorded_usd: float) -> str:
    """The batch's budget ledger, created or given its new limit; what the batch's call records say it
    spent (``recorded_usd``, e.g. by a local run) is never less than what the ledger counts."""
    t = BudgetLedgerRow.__table__  # type: ignore[attr-defined]
    lid = batch_ledger_id(batch_id)
    try:
        with store.engine.begin() as conn:
            _ensure(conn, lid, limit_usd, recorded_usd)
            conn.execute(update(t).where(t.c.ledger_id == lid).values(
                limit_usd=limit_usd, updated_at=_now(),
                spent_usd=func.max(t.c.spent_usd, recorded_usd) if conn.dialect.name == "sqlite"
                else func.greatest(t.c.spent_usd, recorded_usd)))
    except SQLAlchemyError as exc:
        raise _fail(store, "open the batch's budget ledger", exc) from exc
    return lid


def set_ceiling(store: Any, ceiling: Ceiling) -> None:
    """Create or change a standing ceiling; its current window takes the new limit at once."""
    c, t = BudgetCeilingRow.__table__, BudgetLedgerRow.__table__  # type: ignore[attr-defined]
    from .sql import upsert

    try:
        with store.engine.begin() as conn:
            conn.execute(upsert(conn.dialect.name, c), [{**ceiling.model_dump(), "updated_at": _now()}])
            _ensure(conn, ceiling.window(), ceiling.limit_usd)
            conn.execute(update(t).where(t.c.ledger_id == ceiling.window()).values(limit_usd=ceiling.limit_usd))
    except SQLAlchemyError as exc:
        raise _fail(store, "set the ceiling", exc) from exc


def remove_ceiling(store: Any, name: str) -> None:
    c = BudgetCeilingRow.__table__  # type: ignore[attr-defined]
    try:
        with store.engine.begin() as conn:
            if not conn.execute(delete(c).where(c.c.name == name)).rowcount:
                raise InputError(f"no budget ceiling named {name!r} in {store.safe_url}")
    except SQLAlchemyError as exc:
        raise _fail(store, "remove the ceiling", exc) from exc


def ceilings(store: Any) -> list[Ceiling]:
    c = BudgetCeilingRow.__table__  # type: ignore[attr-defined]
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(select(c).order_by(c.c.name)).all()
    except SQLAlchemyError as exc:
        raise _fail(store, "read the ceilings", exc) from exc
    return [Ceiling(name=r.name, policy=r.policy, limit_usd=r.limit_usd, period=r.period) for r in rows]


def ledger_state(store: Any, ledger_id: str) -> tuple[float, float, float] | None:
    """(limit, spent, held) of a ledger, or None when it does not exist."""
    t = BudgetLedgerRow.__table__  # type: ignore[attr-defined]
    try:
        with store.engine.connect() as conn:
            row = conn.execute(select(t.c.limit_usd, t.c.spent_usd, t.c.held_usd).where(t.c.ledger_id == ledger_id)).first()
    except SQLAlchemyError as exc:
        raise _fail(store, "read the budget ledger", exc) from exc
    return None if row is None else (float(row[0]), float(row[1]), float(row[2]))


class _Refused(Exception):
    """A ledger had no room: roll the reservation back."""


class LedgerBudget(Budget):
    """A budget whose limit is decided by the database (see the module docstring). ``spent_usd`` is what
    this object settled (this process's spend); the limits are the ledgers'.

    ``batch_ledger``: the batch's ledger id (or None for no batch limit); ``owner``: written on each hold
    (``host:pid:token``); ``ceilings``: the standing ceilings (default: read from the database).
    """

    def __init__(self, store: Any, *, batch_ledger: str | None, owner: str,
                 ceilings_: list[Ceiling] | None = None) -> None:
        super().__init__(float("inf"))
        self.store = store
        self.batch_ledger = batch_ledger
        self.owner = owner
        self.ceilings = ceilings(store) if ceilings_ is None else ceilings_
        self._windows: set[str] = set()

    def _ledgers(self, policy: str | None) -> tuple[list[str], list[Ceiling]]:
        now = _now()
        applying = [c for c in self.ceilings if policy is None or c.covers(policy)]
        ids = ([self.batch_ledger] if self.batch_ledger else []) + [c.window(now) for c in applying]
        return sorted(set(ids)), applying  # one lock order for every process: no deadlock

    @property
    def remaining_usd(self) -> float:
        ids, applying = self._ledgers(None)
        if not ids:
            return float("inf")
        t = BudgetLedgerRow.__table__  # type: ignore[attr-defined]
        try:
            with self.store.engine.connect() as conn:
                rows = conn.execute(select(t.c.limit_usd - t.c.spent_usd - t.c.held_usd)
                                    .where(t.c.ledger_id.in_(ids))).all()
        except SQLAlchemyError as exc:
            raise _fail(self.store, "read the budget", exc) from exc
        # A ceiling window nobody has drawn from yet has no row: all of its limit is left.
        left = [float(r[0]) for r in rows] + [c.limit_usd for c in applying if len(rows) < len(ids)]
        return min(left) if left else float("inf")

    @property
    def committed_usd(self) -> float:
        return self.spent_usd

    def reserve(self, amount: float, policy: str | None = None) -> Reservation:
        ids, applying = self._ledgers(policy)
        if not ids:
            return super().reserve(amount, policy)
        t, h = BudgetLedgerRow.__table__, BudgetHoldRow.__table__  # type: ignore[attr-defined]
        hold_id, now = uuid.uuid4().hex, _now()
        try:
            with self.store.engine.begin() as conn:
                for c in applying:
                    if c.window(now) not in self._windows:
                        _ensure(conn, c.window(now), c.limit_usd)
                for lid in ids:
                    res = conn.execute(update(t).where(t.c.ledger_id == lid,
                                                       t.c.spent_usd + t.c.held_usd + amount <= t.c.limit_usd + _EPS)
                                       .values(held_usd=t.c.held_usd + amount, updated_at=now))
                    if res.rowcount != 1:
                        raise _Refused(lid)
                conn.execute(h.insert(), [{"hold_id": hold_id, "ledger_id": lid, "amount_usd": amount, "owner": self.owner,
                                           "policy": policy, "created_at": now} for lid in ids])
        except _Refused as exc:
            raise BudgetExceeded(f"${amount:.4f} more would exceed the database budget {exc.args[0]}") from None
        except SQLAlchemyError as exc:
            raise _fail(self.store, "reserve budget", exc) from exc
        self._windows.update(c.window(now) for c in applying)
        with self._lock:
            self._held += amount
        return LedgerReservation(amount, hold_id, tuple(ids))

    def settle(self, reservation: Reservation, actual: float | None) -> None:
        if not isinstance(reservation, LedgerReservation):
            return super().settle(reservation, actual)
        if reservation.settled:
            return
        charge = reservation.amount if actual is None else actual
        t, h = BudgetLedgerRow.__table__, BudgetHoldRow.__table__  # type: ignore[attr-defined]
        now = _now()
        try:
            with self.store.engine.begin() as conn:
                res = conn.execute(update(h).where(h.c.hold_id == reservation.hold_id, h.c.settled_at.is_(None))
                                   .values(settled_at=now, charged_usd=charge))
                if res.rowcount:
                    conn.execute(update(t).where(t.c.ledger_id.in_(reservation.ledgers)).values(
                        held_usd=t.c.held_usd - reservation.amount, spent_usd=t.c.spent_usd + charge, updated_at=now))
        except SQLAlchemyError as exc:
            raise _fail(self.store, "settle budget", exc) from exc
        with self._lock:
            reservation.settled = True
            self._held -= reservation.amount
            self._spent += charge
