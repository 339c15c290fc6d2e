"""Budget ceilings enforced by reservation.

Before a call, the worst case of its cost (prompt estimate at the input price plus ``max_tokens`` at the
output price) is reserved; after it, the reservation is settled to the real cost. Parallel calls therefore
cannot overspend together: a reservation that would take the total past the limit is refused up front.
A call of unknown cost stays charged at its worst case.
"""

from __future__ import annotations

import threading

__all__ = ["Budget", "Reservation"]


class Reservation:
    """Money held for one call until it is settled."""

    __slots__ = ("amount", "settled")

    def __init__(self, amount: float) -> None:
        self.amount = amount
        self.settled = False


class Budget:
    """A spending limit in USD shared by every call that reserves from it (thread-safe)."""

    def __init__(self, limit_usd: float) -> None:
        if limit_usd <= 0:
            raise ValueError("a budget must be positive")
        self.limit_usd = limit_usd
        self._spent = 0.0
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

    def reserve(self, amount: float) -> Reservation | None:
        """Hold ``amount``; None when it would take spent+held past the limit."""
        with self._lock:
            if self._spent + self._held + amount > self.limit_usd + 1e-12:
                return None
            self._held += amount
            return Reservation(amount)

    def settle(self, reservation: Reservation, actual: float | None) -> None:
        """Release the hold and charge ``actual`` (the held worst case when the cost is unknown)."""
        with self._lock:
            if reservation.settled:
                return
            reservation.settled = True
            self._held -= reservation.amount
            self._spent += reservation.amount if actual is None else actual
