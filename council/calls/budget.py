"""Budget ceilings enforced by reservation.

Before a call, the worst case of its cost (prompt estimate at the input price plus ``max_tokens`` at the
output price) is reserved; after it, the reservation is settled to the real cost. Parallel calls therefore
cannot overspend together: a reservation that would take the total past the limit is refused up front.
A call of unknown cost stays charged at its worst case.
"""

from __future__ import annotations

import threading

from council.errors import BudgetExceeded

__all__ = ["Budget", "Reservation"]


class Reservation:
    """Money held for one call until it is settled."""

    __slots__ = ("amount", "settled", "parent")

    def __init__(self, amount: float, parent: Reservation | None = None) -> None:
        self.amount = amount
        self.settled = False
        self.parent = parent
        """The same money held in the parent budget, if the budget has one."""


class Budget:
    """A spending limit in USD shared by every call that reserves from it (thread-safe).

    ``parent``: a budget this one draws from as well (a run's own ceiling inside a batch's budget): a
    reservation must fit both. ``spent_usd``: money already spent before this budget object existed
    (e.g. by an interrupted earlier invocation of the same batch).
    """

    def __init__(self, limit_usd: float, *, parent: Budget | None = None, spent_usd: float = 0.0) -> None:
        if limit_usd <= 0:
            raise ValueError("a budget must be positive")
        self.limit_usd = limit_usd
        self.parent = parent
        self._spent = max(0.0, spent_usd)
        self._held = 0.0
        self._lock = threading.Lock()

    @property
    def spent_usd(self) -> float:
        return self._spent

    @property
    def committed_usd(self) -> float:
        """Spent plus held: what the limit is checked against."""
        with self._lock:
            return self._spent + self._held

    @property
    def remaining_usd(self) -> float:
        """What can still be reserved (in this budget and its parent)."""
        with self._lock:
            own = self.limit_usd - self._spent - self._held
        return min(own, self.parent.remaining_usd) if self.parent is not None else own

    def reserve(self, amount: float, policy: str | None = None) -> Reservation:
        """Hold ``amount``; raise ``BudgetExceeded`` when it would take spent+held past the limit (here or
        in the parent), holding nothing. ``policy``: the name of the task policy governing the call (a
        budget kept in the database applies the ceilings set for it; this one ignores it)."""
        with self._lock:
            committed = self._spent + self._held
            if committed + amount > self.limit_usd + 1e-12:
                raise BudgetExceeded(f"${amount:.4f} more would exceed the budget of ${self.limit_usd:g} "
                                     f"(${committed:.4f} spent or held)")
            parent = self.parent.reserve(amount, policy) if self.parent is not None else None
            self._held += amount
            return Reservation(amount, parent)

    def settle(self, reservation: Reservation, actual: float | None) -> None:
        """Release the hold and charge ``actual`` (the held worst case when the cost is unknown)."""
        with self._lock:
            if reservation.settled:
                return
            reservation.settled = True
            self._held -= reservation.amount
            self._spent += reservation.amount if actual is None else actual
        if reservation.parent is not None and self.parent is not None:
            self.parent.settle(reservation.parent, actual)
