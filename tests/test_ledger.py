"""Budgets kept in the database (``council.store.ledger``): reservations decided by one conditional update,
settled once, ceilings per policy and window, and many independent budget objects (as many processes or
machines would hold) that together never reserve past the limit, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from council.errors import BudgetExceeded

from council.calls.budget import Budget
from council.store.db import Store
from council.store.ledger import (Ceiling, LedgerBudget, ceilings, ledger_state, open_batch_ledger, remove_ceiling,
                                  set_ceiling)
from council.errors import InputError


def test_reserve_settle_and_refuse_on_one_ledger(db_url: str) -> None:
    store = Store(db_url)
    lid = open_batch_ledger(store, "b1", 1.0, recorded_usd=0.25)
    budget = LedgerBudget(store, batch_ledger=lid, owner="host:1:a")
    assert budget.remaining_usd == pytest.approx(0.75)
    r = budget.reserve(0.5)
    assert r is not None and ledger_state(store, lid) == pytest.approx((1.0, 0.25, 0.5))
    with pytest.raises(BudgetExceeded):  # 0.25 spent + 0.5 held + 0.3 > 1.0
        budget.reserve(0.3)
    budget.settle(r, 0.1)
    budget.settle(r, 0.1)  # a second settle is a no-op
    assert ledger_state(store, lid) == pytest.approx((1.0, 0.35, 0.0))
    assert budget.spent_usd == pytest.approx(0.1)
    unknown = budget.reserve(0.2)
    assert unknown is not None
    budget.settle(unknown, None)  # unknown cost: the worst case stays charged
    assert ledger_state(store, lid) == pytest.approx((1.0, 0.55, 0.0))
    # A rerun with a larger budget raises the limit and keeps what was spent.
    open_batch_ledger(store, "b1", 2.0, recorded_usd=0.3)
    assert ledger_state(store, lid) == pytest.approx((2.0, 0.55, 0.0))


def test_a_hold_left_by_a_dead_process_stays_charged(db_url: str) -> None:
    store = Store(db_url)
    lid = open_batch_ledger(store, "b2", 1.0, recorded_usd=0.0)
    dead = LedgerBudget(store, batch_ledger=lid, owner="host:2:dead")
    assert dead.reserve(0.6) is not None  # ... and the process dies before settling
    other = LedgerBudget(Store(db_url), batch_ledger=lid, owner="host:3:b")
    with pytest.raises(BudgetExceeded):
        other.reserve(0.5) and other.reserve(0.4) is not None


def test_ceilings_apply_per_policy_and_window(db_url: str) -> None:
    store = Store(db_url)
    set_ceiling(store, Ceiling(name="judges", policy="adjudication", limit_usd=0.5, period="day"))
    set_ceiling(store, Ceiling(name="all", limit_usd=1.0, period="month"))
    assert [c.name for c in ceilings(store)] == ["all", "judges"]
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    assert Ceiling(name="judges", policy="adjudication", limit_usd=0.5).window() == f"ceiling:judges:{day}"
    budget = LedgerBudget(store, batch_ledger=None, owner="host:4:c")
    assert budget.reserve(0.4, "adjudication") is not None
    with pytest.raises(BudgetExceeded):  # the judges' ceiling
        budget.reserve(0.2, "adjudication")
    assert budget.reserve(0.5, "fact_check") is not None  # only the database-wide one
    with pytest.raises(BudgetExceeded):  # 0.4 + 0.5 + 0.2 > 1.0
        budget.reserve(0.2, "fact_check")
    # A run's own budget drawing from the database's: both must have room.
    child = Budget(10.0, parent=budget)
    with pytest.raises(BudgetExceeded):
        child.reserve(0.2, "fact_check") and child.remaining_usd == pytest.approx(0.1)
    set_ceiling(store, Ceiling(name="all", limit_usd=2.0, period="month"))  # raised: takes effect at once
    assert child.reserve(0.2, "fact_check") is not None
    remove_ceiling(store, "judges")
    with pytest.raises(InputError, match="no budget ceiling named 'judges'"):
        remove_ceiling(store, "judges")


def test_forty_budget_objects_never_overspend_together_on_postgres(pg_url: str) -> None:  # noqa: F811
    """40 threads, each with its own store (its own connections, as a separate process would have), race to
    reserve $0.03 at a time from one $1 ledger: exactly 33 reservations succeed."""
    store = Store(pg_url)
    lid = open_batch_ledger(store, "race", 1.0, recorded_usd=0.0)
    got: list[int] = []
    barrier = threading.Barrier(40)

    def worker(i: int) -> None:
        budget = LedgerBudget(Store(pg_url), batch_ledger=lid, owner=f"host:{i}:x")
        barrier.wait()
        n = 0
        while True:
            try:
                budget.reserve(0.03)
            except BudgetExceeded:
                break
            n += 1
        got.append(n)
        budget.store.engine.dispose()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(got) == 33
    limit, spent, held = ledger_state(store, lid)  # type: ignore[misc]
    assert held == pytest.approx(0.99) and spent == 0.0 and held <= limit
    store.engine.dispose()


def test_a_local_batch_stops_at_the_database_ceiling(scripted, tmp_path, db_url: str) -> None:
    from council.batch import check_many
    from support import batch_config, claims, members_script, write_jsonl

    server = scripted(members_script())
    set_ceiling(Store(db_url), Ceiling(name="team", limit_usd=0.004, period="day"))
    path = write_jsonl(tmp_path / "claims.jsonl", claims(12))
    report = check_many(path, config=batch_config(server.base_url), db=db_url, concurrency=4)
    assert report.budget_exhausted and report.counts.get("skipped_budget", 0) > 0 and report.counts.get("full", 0) > 0
    store = Store(db_url)
    with store.engine.connect() as conn:
        from sqlalchemy import text

        spent = conn.execute(text("SELECT SUM(cost_usd) FROM calls")).scalar_one()
    limit, charged, held = ledger_state(store, Ceiling(name="team", limit_usd=0.004).window())  # type: ignore[misc]
    assert spent <= 0.004 and charged == pytest.approx(spent) and held == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(InputError, match="--workers and --ray-address need --engine ray"):
        check_many(path, config=batch_config(server.base_url), db=db_url, workers=2)
