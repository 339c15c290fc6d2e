"""Batch items in the store: which claims a batch holds, who is checking which, and how each ended.

Tables (migration ``0003_batches``): ``batches`` (one row per batch id) and ``batch_items`` (one row per
claim, keyed by batch id and item key). An item moves ``pending -> running -> full | degraded | failed |
skipped_budget | invalid``. ``running`` is a lease: the owner (``host:pid:token``) and a deadline that the
owner renews while it works. A process takes an item with one atomic statement (``UPDATE ... WHERE
status = 'pending' ... RETURNING``; on PostgreSQL the candidate row is picked ``FOR UPDATE SKIP LOCKED``),
so two processes sharing a database never take the same item. A lease whose deadline passed, or whose
owner is a dead process on this host, is put back to ``pending``.

Each item's run id is fixed when the item is registered (``run_id_for(batch, key, tries)``), so a rerun
after a crash resumes the very run that was interrupted instead of starting another one.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from functools import cached_property, lru_cache

from sqlalchemy import bindparam, func, select, update

from pydantic import BaseModel

from council.ids import content_id

from .sql import insert_or_ignore
from .tables import BatchItemRow, BatchRow, CallRow, RunRow

__all__ = ["BatchItemRow", "BatchRow", "BatchStore", "ClaimItem", "FINAL_STATUSES", "LeasedItem", "new_owner", "run_id_for"]

FINAL_STATUSES = ("full", "degraded", "failed", "skipped_budget", "invalid")
"""Statuses an item ends in (the others are ``pending`` and ``running``)."""
_CHUNK = 500


class ClaimItem(BaseModel):
    """One claim to check."""

    line: int
    """1-based line of the input where the row starts (position in the list for in-memory input)."""
    key: str
    """Stable identity within the batch: ``id:<id>`` or ``sha:<hash of the content>``."""
    claim_id: str | None = None
    """The id the input gave, if any."""
    claim: str
    context: str | None = None
    sources: list[str] = []
    """File paths or texts."""
    tags: dict[str, str] = {}
    """The row's tags (``risk=high``), given to the run and matched by the policy's ``review_tags``."""

    @property
    def shown_id(self) -> str:
        """The id written in results: the input's id, else the content hash."""
        return self.claim_id if self.claim_id is not None else self.key.removeprefix("sha:")



def run_id_for(batch_id: str, key: str, tries: int) -> str:
    return content_id("batch", batch_id, key, str(tries), length=32)


def _host() -> str:
    """This host, and its PID namespace where there is one: only there can a process id be checked."""
    try:
        ns = os.readlink("/proc/self/ns/pid").removeprefix("pid:")
    except OSError:
        ns = ""
    return socket.gethostname().replace(":", "_") + ns


def new_owner() -> str:
    """A lease owner name: this host and process, plus a token unique to this batch runner."""
    return f"{_host()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _process_gone(owner: str) -> bool:
    """True when ``owner`` names a process on this host that no longer runs (or is a zombie)."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != _host() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


class LeasedItem(ClaimItem):
    """An item this process holds, with its run."""

    run_id: str
    tries: int
    resume: bool
    """The item was taken before (by a process that died, ran out of budget or was stopped)."""


def _now() -> datetime:
    return datetime.now(UTC)


class BatchStore:
    """Batch bookkeeping over a ``Store``'s engine (same database as the runs)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.engine = store.engine
        self.t = BatchItemRow.__table__  # type: ignore[attr-defined]


    def _insert_ignore(self, conn: Any, table: Any, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        stmt = insert_or_ignore(conn.dialect.name, table)
        if stmt is not None:
            conn.execute(stmt, rows)
            return
        pk = [c.name for c in table.primary_key.columns]
        for row in rows:  # other databases: one existence check per row
            cond = [table.c[k] == row[k] for k in pk]
            if conn.execute(select(func.count()).select_from(table).where(*cond)).scalar_one() == 0:
                conn.execute(table.insert(), [row])

    # setup ----------------------------------------------------------------------------------------
    def register(self, batch_id: str, task: str, source: str, items: list[ClaimItem]) -> None:
        """Record the batch and its items; items already recorded keep their status (idempotent)."""
        now = _now()
        with self.store.begin() as conn:
            self._insert_ignore(conn, BatchRow.__table__, [  # type: ignore[attr-defined]
                {"batch_id": batch_id, "task": task, "source": source, "created_at": now}])
            for i in range(0, len(items), _CHUNK):
                self._insert_ignore(conn, self.t, [
                    {"batch_id": batch_id, "item_key": it.key, "line": it.line, "claim_id": it.claim_id,
                     "claim": it.claim, "context": it.context, "sources_json": json.dumps(it.sources),
                     "tags_json": json.dumps(it.tags) if it.tags else None,
                     "status": "pending", "tries": 0, "leases": 0, "run_id": run_id_for(batch_id, it.key, 0),
                     "prior_cost_usd": 0.0, "updated_at": now}
                    for it in items[i : i + _CHUNK]
                ])

    def prepare_rerun(self, batch_id: str, retry_failed: bool) -> None:
        """Make skipped claims pending again (and failed ones, with a fresh run, if asked)."""
        t = self.t
        with self.store.begin() as conn:
            conn.execute(update(t).where(t.c.batch_id == batch_id, t.c.status == "skipped_budget")
                         .values(status="pending", error=None, updated_at=_now()))
            if retry_failed:
                rows = conn.execute(select(t.c.item_key, t.c.tries, t.c.cost_usd, t.c.prior_cost_usd)
                                    .where(t.c.batch_id == batch_id, t.c.status == "failed")).all()
                for key, tries, cost, prior in rows:
                    conn.execute(update(t).where(t.c.batch_id == batch_id, t.c.item_key == key).values(
                        status="pending", tries=tries + 1, leases=0, run_id=run_id_for(batch_id, key, tries + 1),
                        prior_cost_usd=(prior or 0.0) + (cost or 0.0), cost_usd=None, error=None,
                        label=None, confidence=None, agreement=None, degraded=None, contested=None,
                        needs_review=None, review_reasons=None, warnings=None,
                        updated_at=_now()))

    def reclaim(self, batch_id: str) -> int:
        """Put back to ``pending`` the items whose lease expired or whose owner died; return how many."""
        t = self.t
        with self.store.begin() as conn:
            owners = [o for (o,) in conn.execute(select(t.c.lease_owner).distinct().where(
                t.c.batch_id == batch_id, t.c.status == "running")) if o]
            dead = [o for o in owners if _process_gone(o)]
            cond = t.c.lease_until < _now()
            if dead:
                cond = cond | t.c.lease_owner.in_(dead)
            res = conn.execute(update(t).where(t.c.batch_id == batch_id, t.c.status == "running", cond)
                               .values(status="pending", lease_owner=None, lease_until=None, updated_at=_now()))
            return res.rowcount or 0

    # the queue ------------------------------------------------------------------------------------
    @cached_property
    def _lease_stmt(self) -> Any:
        # Built once, with bound parameters: taking an item is on the path of every claim.
        t = self.t
        pick = (select(t.c.item_key).where(t.c.batch_id == bindparam("b"), t.c.status == "pending")
                .order_by(t.c.line).limit(1).with_for_update(skip_locked=True).scalar_subquery())
        return (update(t).where(t.c.batch_id == bindparam("b"), t.c.status == "pending", t.c.item_key == pick)
                .values(status="running", lease_owner=bindparam("owner"), lease_until=bindparam("until"),
                        leases=t.c.leases + 1, updated_at=bindparam("now"))
                .returning(t.c.item_key, t.c.line, t.c.claim_id, t.c.claim, t.c.context, t.c.sources_json,
                           t.c.run_id, t.c.tries, t.c.leases, t.c.tags_json))

    def lease(self, batch_id: str, owner: str, lease_s: float) -> LeasedItem | None:
        """Atomically take the first pending item, or None when there is none."""
        now = _now()
        params = {"b": batch_id, "owner": owner, "until": now + timedelta(seconds=lease_s), "now": now}
        with self.store.begin() as conn:
            row = conn.execute(self._lease_stmt, params).first()
        if row is None:
            return None
        return LeasedItem(key=row.item_key, line=row.line, claim_id=row.claim_id, claim=row.claim, context=row.context,
                          sources=json.loads(row.sources_json), tags=json.loads(row.tags_json or "{}"),
                          run_id=row.run_id, tries=row.tries,
                          resume=row.leases > 1)

    def renew(self, batch_id: str, owner: str, lease_s: float) -> None:
        t = self.t
        with self.store.begin() as conn:
            conn.execute(update(t).where(t.c.batch_id == batch_id, t.c.lease_owner == owner, t.c.status == "running")
                         .values(lease_until=_now() + timedelta(seconds=lease_s)))

    def finish(self, batch_id: str, key: str, owner: str, *, run_cost: bool, **values: Any) -> tuple[bool, float | None]:
        """Record how an item ended (``run_cost``: its cost is its run's total); return whether this
        process still held the lease, and the cost recorded."""
        params = {"b": batch_id, "key": key, "owner": owner, "now": _now(), **{f"v_{k}": v for k, v in values.items()}}
        with self.store.begin() as conn:
            row = conn.execute(self._finish_stmt(run_cost, tuple(sorted(values))), params).first()
        return (row is not None), (row.cost_usd if row is not None else None)

    @lru_cache(maxsize=8)  # noqa: B019  (one BatchStore per batch invocation)
    def _finish_stmt(self, run_cost: bool, fields: tuple[str, ...]) -> Any:
        t, runs = self.t, RunRow.__table__  # type: ignore[attr-defined]
        values: dict[str, Any] = {f: bindparam(f"v_{f}") for f in fields}
        if run_cost:
            values["cost_usd"] = func.coalesce(
                select(runs.c.total_cost_usd).where(runs.c.run_id == t.c.run_id).scalar_subquery(), 0.0)
        return (update(t).where(t.c.batch_id == bindparam("b"), t.c.item_key == bindparam("key"),
                                t.c.lease_owner == bindparam("owner"))
                .values(lease_owner=None, lease_until=None, finished_by=bindparam("owner"), updated_at=bindparam("now"),
                        **values)
                .returning(t.c.cost_usd))

    def release(self, batch_id: str, owner: str) -> None:
        """Give back every item this owner still holds (it was interrupted)."""
        t = self.t
        with self.store.begin() as conn:
            conn.execute(update(t).where(t.c.batch_id == batch_id, t.c.lease_owner == owner, t.c.status == "running")
                         .values(status="pending", lease_owner=None, lease_until=None, updated_at=_now()))

    def skip_pending(self, batch_id: str, reason: str) -> int:
        t = self.t
        with self.store.begin() as conn:
            res = conn.execute(update(t).where(t.c.batch_id == batch_id, t.c.status == "pending")
                               .values(status="skipped_budget", error=reason, updated_at=_now()))
            return res.rowcount or 0

    # reads ----------------------------------------------------------------------------------------
    def spent_usd(self, batch_id: str) -> float:
        """What the batch's runs have cost so far: the sum of their call records (and earlier tries)."""
        t, c = self.t, CallRow.__table__  # type: ignore[attr-defined]
        with self.store.connect() as conn:
            prior = conn.execute(select(func.coalesce(func.sum(t.c.prior_cost_usd), 0.0))
                                 .where(t.c.batch_id == batch_id)).scalar_one()
            calls = conn.execute(select(func.coalesce(func.sum(c.c.cost_usd), 0.0))
                                 .select_from(c.join(t, c.c.run_id == t.c.run_id))
                                 .where(t.c.batch_id == batch_id)).scalar_one()
        return float(prior or 0.0) + float(calls or 0.0)

    def counts(self, batch_id: str) -> dict[str, int]:
        t = self.t
        with self.store.connect() as conn:
            rows = conn.execute(select(t.c.status, func.count()).where(t.c.batch_id == batch_id).group_by(t.c.status)).all()
            contested = conn.execute(select(func.count()).where(t.c.batch_id == batch_id, t.c.contested.is_(True))).scalar_one()
        out = {status: int(n) for status, n in rows}
        out["contested"] = int(contested)
        return out

    def iter_items(self, batch_id: str, page: int = 1000) -> Iterator[Any]:
        """Every item row of the batch in input order, read a page at a time."""
        t = self.t
        last = -1
        while True:
            with self.store.connect() as conn:
                rows = conn.execute(select(t).where(t.c.batch_id == batch_id, t.c.line > last)
                                    .order_by(t.c.line).limit(page)).all()
            if not rows:
                return
            yield from rows
            last = rows[-1].line
