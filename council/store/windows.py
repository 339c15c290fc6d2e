"""Time windows over the store: parse a bound (a date, an ISO string or an age such as ``7d``) and load
the runs or call records started in a window. The monitoring reports and the DataFrame views share them."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlmodel import col, select

from council.calls.records import CallRecord
from council.errors import InputError

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .db import Store
from .mapping import call_from_row
from .tables import CallRow, RunRow

__all__ = ["When", "load_calls", "load_runs", "parse_when"]

When = datetime | date | str | None

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(value: When, *, now: datetime | None = None) -> datetime | None:
    """A window bound as an aware UTC datetime: a datetime (naive = UTC), a date (its midnight UTC), an
    ISO string (``2026-11-01``, ``2026-11-01T12:00``, with or without offset), or a relative age
    (``30m``, ``12h``, ``7d``, ``2w``: that long before ``now``). None stays None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    text = str(value).strip()
    m = _RELATIVE.match(text)
    if m:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"cannot read {text!r} as a date: use 2026-11-01, 2026-11-01T12:00 or an age such as 7d, 12h, 30m"
        ) from None
    return parse_when(parsed)


def _aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _in_window(stmt: Any, since: datetime | None, until: datetime | None) -> Any:
    if since is not None:
        stmt = stmt.where(col(RunRow.created_at) >= since)
    if until is not None:
        stmt = stmt.where(col(RunRow.created_at) < until)
    return stmt


def load_runs(store: Store, since: When = None, until: When = None, limit: int | None = None) -> list[RunRow]:
    """The runs started in the window, oldest first (``limit``: the newest ``limit`` of them)."""
    lo, hi = parse_when(since), parse_when(until)
    with store.session() as s:
        stmt = _in_window(select(RunRow), lo, hi)
        if limit is not None:
            rows = list(s.exec(stmt.order_by(col(RunRow.created_at).desc()).limit(limit)).all())
            return rows[::-1]
        return list(s.exec(stmt.order_by(col(RunRow.created_at))).all())


def load_calls(store: Store, since: When = None, until: When = None, model: str | None = None) -> list[CallRecord]:
    """Call records of the runs started in the window, in order of start; ``model`` keeps the calls sent
    to that model or made for a seat whose first choice it was."""
    lo, hi = parse_when(since), parse_when(until)
    with store.session() as s:
        stmt = _in_window(select(CallRow).join(RunRow, col(RunRow.run_id) == col(CallRow.run_id)), lo, hi)
        if model is not None:
            stmt = stmt.where((col(CallRow.model) == model) | (col(CallRow.model_requested) == model))
        rows = s.exec(stmt.order_by(col(CallRow.started_at), col(CallRow.call_id))).all()
        return [call_from_row(r) for r in rows]
