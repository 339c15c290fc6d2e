"""Monitoring human review, per policy: how often verdicts are flagged, how often reviewers overturn the
council, and how long a flag waits for a decision.

Every figure is a count over stored rows (runs with a verdict, ``review_flags``, ``review_decisions``) in
the runs' time window; a run's decision in force is its latest one.

- review rate: flagged runs / runs with a verdict (the escalation rate).
- overturn rate: decided runs whose decision differs from the council's verdict / decided runs.
- false-safe rate: of decided runs where the council let the claim pass (SUPPORTED; for a question: any
  answer), the share the reviewer did not (REFUTED or NOT_ENOUGH_INFO; REJECTED).
- false-alarm rate: of decided runs where the council raised the alarm (REFUTED), the share the reviewer
  labelled SUPPORTED.
- missed: unsolicited decisions (on runs no condition flagged) that overturned the council: errors the
  review conditions let through.
- median time to decision: from the flag to the run's first decision, over flagged runs with one.
- reviewer disagreement: of runs decided by two or more people, the share whose people's latest labels differ.
"""

from __future__ import annotations

import statistics
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from council.store.reviews import ReviewDecision, ReviewStore
from council.store.windows import When, parse_when

__all__ = ["PolicyReviewStats", "review_stats", "review_table"]


class PolicyReviewStats(BaseModel):
    """Human review of one policy's verdicts."""

    policy: str
    """The members' policy name (all its versions)."""
    runs: int
    """Runs with a verdict."""
    flagged: int
    """Runs whose verdict was flagged for review."""
    review_rate: float | None
    decided: int
    """Runs with a decision in force (flagged or not)."""
    pending: int
    """Flagged runs with no decision yet."""
    unsolicited: int
    """Decided runs that were not flagged (``--force``)."""
    overturned: int
    overturn_rate: float | None
    passed: int
    """Decided runs where the council let the claim pass (SUPPORTED, or a question's answer)."""
    false_safe: int
    false_safe_rate: float | None
    alarms: int
    """Decided runs where the council said REFUTED."""
    false_alarm: int
    false_alarm_rate: float | None
    missed: int
    """Unsolicited decisions that overturned the council."""
    median_time_to_decision_s: float | None
    multi_reviewed: int
    """Runs decided by two or more people."""
    reviewer_disagreement: int
    """Of those, runs whose people's latest labels differ."""


def _rate(n: int, d: int) -> float | None:
    return n / d if d else None


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def _one(policy: str, rows: list[Any], history: dict[str, list[ReviewDecision]]) -> PolicyReviewStats:
    flagged = [r for r in rows if r.flagged_at is not None]
    decided = [(r, history[r.run_id][-1]) for r in rows if r.run_id in history]
    latest = [(r, next(d for d in history[r.run_id] if d.latest)) for r, _ in decided]
    passed = [(r, d) for r, d in latest if (r.verdict_label == "SUPPORTED" if r.task == "check" else True)]
    alarms = [(r, d) for r, d in latest if r.task == "check" and r.verdict_label == "REFUTED"]
    waits = [(min(_aware(d.decided_at) for d in history[r.run_id]) - _aware(r.flagged_at)).total_seconds()
             for r in flagged if r.run_id in history]
    multi = disagree = 0
    for r, _ in decided:
        by_person: dict[str, str] = {}
        for d in history[r.run_id]:  # oldest first: each person's last label wins
            by_person[d.reviewer] = d.label
        if len(by_person) > 1:
            multi += 1
            disagree += len(set(by_person.values())) > 1
    overturned = sum(d.overturns for _, d in latest)
    false_safe = sum(d.overturns for _, d in passed)
    false_alarm = sum(d.label == "SUPPORTED" for _, d in alarms)
    return PolicyReviewStats(
        policy=policy, runs=len(rows), flagged=len(flagged), review_rate=_rate(len(flagged), len(rows)),
        decided=len(latest), pending=sum(r.run_id not in history for r in flagged),
        unsolicited=sum(r.flagged_at is None for r, _ in latest),
        overturned=overturned, overturn_rate=_rate(overturned, len(latest)),
        passed=len(passed), false_safe=false_safe, false_safe_rate=_rate(false_safe, len(passed)),
        alarms=len(alarms), false_alarm=false_alarm, false_alarm_rate=_rate(false_alarm, len(alarms)),
        missed=sum(r.flagged_at is None and d.overturns for r, d in latest),
        median_time_to_decision_s=statistics.median(waits) if waits else None,
        multi_reviewed=multi, reviewer_disagreement=disagree,
    )


def review_stats(store: Any, since: When = None, until: When = None, policy: str | None = None) -> list[PolicyReviewStats]:
    """Review figures per members' policy for the runs started in [since, until) (see the module docstring)."""
    desk = ReviewStore(store)
    rows = desk.policy_rows(parse_when(since), parse_when(until))
    history = desk.all_decisions(r.run_id for r in rows)
    by_policy: dict[str, list[Any]] = {}
    for r in rows:
        by_policy.setdefault(r.member_policy.partition("@")[0], []).append(r)
    return [_one(name, by_policy[name], history) for name in sorted(by_policy) if policy in (None, name)]


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.0f} s"
    return f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def review_table(stats: list[PolicyReviewStats]) -> Any:
    """A rich table of the review figures."""
    from rich.table import Table

    t = Table("policy", "runs", "flagged", "review rate", "decided", "pending", "overturned", "false-safe",
              "false-alarm", "missed", "median flag→decision", "reviewers disagree", title="human review by policy")
    for s in stats:
        t.add_row(s.policy, str(s.runs), str(s.flagged), _pct(s.review_rate), str(s.decided), str(s.pending),
                  f"{s.overturned} ({_pct(s.overturn_rate)})", f"{s.false_safe}/{s.passed} ({_pct(s.false_safe_rate)})",
                  f"{s.false_alarm}/{s.alarms} ({_pct(s.false_alarm_rate)})", str(s.missed),
                  _duration(s.median_time_to_decision_s), f"{s.reviewer_disagreement}/{s.multi_reviewed}")
    return t
