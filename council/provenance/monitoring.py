"""Quality monitoring over many runs: per model, how reliable, how often failing or replaced, what it costs.

Everything here reads the store; nothing is cached, so a number is always what the database says now.
The window (``since``/``until``) selects *runs* by their start time, and a run counts whole: its calls,
answers and claims are all in or all out, so a run that started just before midnight is not split in two.

Per model (catalog name) the numbers mean:

- **calls**: every call record of the model, any status. ``sent`` leaves out ``skipped`` records
  (never sent: over a price ceiling or the budget). ``failure_rate`` = (failed + invalid) / sent.
- **seats**: member (or adjudicator) seats whose *first choice* was the model. ``fallback_rate`` is the share
  of those seats that moved on to another model of the chain (a call record for another model, sent or
  skipped); ``seat_failure_rate`` the share that ended with no valid answer at all. ``stood_in`` counts
  valid answers the model gave for a seat whose first choice was another model.
- **reliability**: agreement with final verdicts, judged on the same evidence the weighted vote learns from
  (:meth:`council.store.Store.reliabilities`), unsmoothed: in fact checks, a label counts when it and the
  final label (a human's feedback where given, else the verdict) are SUPPORTED or REFUTED; in research
  questions, a claim counts when its cluster was accepted or rejected. ``reliability`` = agree / judged
  over both; ``labels_*`` and ``claims_*`` split it, and ``feedback_*`` counts only labels a human checked
  (the accuracy against ground truth, which the vote relies on alone once a model has enough of it).
- **verdict_support_rate**: share of the model's answers (in runs with a verdict) having at least one claim
  in the verdict's support set.
- **latency**: percentiles over sent calls, linear interpolation between order statistics (the same as
  ``numpy.percentile`` and ``pandas.Series.quantile``), in seconds.
- **queued**: seconds calls waited for rate-limit capacity before they were sent (the record's ``queued_s``,
  never part of its latency): the mean, 95th percentile and total over sent calls; ``rate_limited`` counts
  the model's 429 answers and ``rate_limit_skips`` the calls that fell back because no capacity came within
  the policy's ``rate_limit_wait_s``.

pandas is imported inside the ``*_frame`` functions only, never when council is imported.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field
from sqlmodel import col, select

from council.display import Col, build_table
from council.errors import InputError
from council.calls.records import CallRecord
from council.store.mapping import call_from_row
from council.store.windows import When, _aware, _in_window, load_calls, load_runs, parse_when
from council.store.db import (
    AnswerRow,
    CallRow,
    ClaimRow,
    ClusterRow,
    FeedbackRow,
    RunRow,
    Store,
    VerdictRow,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ModelStats",
    "Period",
    "StatsReport",
    "load_calls",
    "load_runs",
    "model_stats",
    "model_stats_frame",
    "parse_when",
    "percentile",
    "report_rows",
    "report_table",
    "stats_report",
]

Period = Literal["minute", "hour", "day", "week"]

_DECIDED = ("SUPPORTED", "REFUTED")


class ModelStats(BaseModel):
    """Monitoring numbers of one model over a window of runs (or over one period of it)."""

    model: str
    """Catalog name of the model."""
    period: datetime | None = None
    """Start of the period (UTC) when the numbers are split by period; None for the whole window."""
    runs: int = 0
    """Runs in which the model was called or was a seat's first choice."""
    calls: int = 0
    """Call records of the model, any status."""
    sent: int = 0
    """Calls actually sent (all but ``skipped``)."""
    ok: int = 0
    """Calls that returned a valid answer."""
    failed: int = 0
    """Calls that failed (provider error, timeout, connection)."""
    invalid: int = 0
    """Calls answered with output that did not validate."""
    skipped: int = 0
    """Calls not sent: their worst-case cost broke a ceiling or the budget."""
    failure_rate: float | None = None
    """(failed + invalid) / sent; None when nothing was sent."""
    errors: dict[str, int] = Field(default_factory=dict)
    """Error kind -> how many failed, invalid or skipped calls had it."""
    seats: int = 0
    """Seats (member or adjudicator) whose first choice was the model."""
    fallbacks: int = 0
    """Of those seats, how many moved on to another model of their fallback chain (a call record for another
    model, sent or skipped)."""
    fallback_rate: float | None = None
    """fallbacks / seats; None without seats."""
    seats_failed: int = 0
    """Of those seats, how many ended without any valid answer."""
    seat_failure_rate: float | None = None
    """seats_failed / seats; None without seats."""
    stood_in: int = 0
    """Valid answers the model gave for a seat whose first choice was another model."""
    answers: int = 0
    """Member answers the model served."""
    agree: int = 0
    """Judgements (fact-check labels and settled claims of questions) that agreed with the final verdict."""
    judged: int = 0
    """Judgements counted for reliability."""
    reliability: float | None = None
    """agree / judged; None when nothing could be judged."""
    labels_agree: int = 0
    """Fact-check labels equal to the final label (human feedback where given, else the verdict)."""
    labels_judged: int = 0
    """Fact-check labels judged (both the label and the final label SUPPORTED or REFUTED)."""
    claims_agree: int = 0
    """Claims of research questions whose cluster was accepted."""
    claims_judged: int = 0
    """Claims of research questions whose cluster was accepted or rejected."""
    feedback_agree: int = 0
    """Fact-check labels equal to a human's feedback label."""
    feedback_judged: int = 0
    """Fact-check labels of runs with human feedback (SUPPORTED or REFUTED on both sides)."""
    feedback_accuracy: float | None = None
    """feedback_agree / feedback_judged: accuracy against ground truth; None without feedback."""
    verdict_support_rate: float | None = None
    """Share of its answers with a claim in the verdict's support set; None without answers in runs with a verdict."""
    prompt_tokens: int = 0
    """Prompt tokens billed."""
    completion_tokens: int = 0
    """Completion tokens billed."""
    cost_usd: float = 0.0
    """Summed cost of the model's call records."""
    unknown_cost_calls: int = 0
    """Calls whose cost is not known (e.g. timeouts the provider may still bill)."""
    latency_mean_s: float | None = None
    """Mean latency of sent calls, seconds."""
    latency_p50_s: float | None = None
    """Median latency of sent calls."""
    latency_p90_s: float | None = None
    """90th percentile latency of sent calls."""
    latency_p95_s: float | None = None
    """95th percentile latency of sent calls."""
    latency_max_s: float | None = None
    """Slowest sent call."""
    queued_mean_s: float | None = None
    """Mean seconds a sent call waited for rate-limit capacity before it was sent (not part of latency)."""
    queued_p95_s: float | None = None
    """95th percentile of that wait."""
    queued_total_s: float = 0.0
    """Seconds all of the model's calls waited for rate-limit capacity together."""
    rate_limited: int = 0
    """Calls the provider refused with a 429 (error kind ``rate_limit``)."""
    rate_limit_skips: int = 0
    """Calls not sent because no rate-limit capacity came within the policy's wait (they fell back)."""
    first_call: datetime | None = None
    """Start of the model's first call in the window (UTC)."""
    last_call: datetime | None = None
    """Start of the model's last call in the window (UTC)."""


class StatsReport(BaseModel):
    """What ``council stats`` prints: the window, run totals, and one row per model."""

    since: datetime | None
    """Runs started at or after this (UTC); None = from the first run."""
    until: datetime | None
    """Runs started before this (UTC); None = up to now."""
    model: str | None
    """The model the rows were limited to, if any."""
    by: Period | None = None
    """The period the rows are split by (None: one row per model for the whole window)."""
    runs: int
    """Runs in the window."""
    degraded_runs: int
    """Of those, runs whose verdict says the council was degraded."""
    failed_runs: int
    """Runs that ended with status ``failed`` (no verdict recorded)."""
    total_cost_usd: float
    """Summed cost of every call in the window's runs (all models)."""
    models: list[ModelStats]
    """One row per model (and period, when split by period)."""


# ------------------------------------------------------------------------------------------ windows


def _floor(dt: datetime, period: Period) -> datetime:
    dt = _aware(dt)  # type: ignore[assignment]
    if period == "minute":
        return dt.replace(second=0, microsecond=0)
    if period == "hour":
        return dt.replace(minute=0, second=0, microsecond=0)
    day = dt.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == "day" else day - timedelta(days=day.weekday())


# ------------------------------------------------------------------------------------------ loading


@dataclass
class _Window:
    """Everything model_stats needs of the window's runs, read in one session."""

    runs: list[RunRow]
    calls: list[CallRecord]
    answers: list[AnswerRow]
    claims: list[ClaimRow]
    cluster_status: dict[str, str]
    support: dict[str, set[str]]
    """run id -> claim ids of its verdict's support set (runs with a verdict only)."""
    feedback: dict[str, str]


def _load_window(store: Store, since: datetime | None, until: datetime | None) -> _Window:
    def joined(row: Any) -> Any:
        return _in_window(select(row).join(RunRow, col(RunRow.run_id) == col(row.run_id)), since, until)

    with store.session() as s:
        runs = list(s.exec(_in_window(select(RunRow), since, until).order_by(col(RunRow.created_at))).all())
        calls = s.exec(joined(CallRow).order_by(col(CallRow.started_at), col(CallRow.call_id))).all()
        # The answers in force: an answer a revision round replaced is not counted again.
        answers = [a for a in s.exec(joined(AnswerRow)).all() if a.superseded_by is None]
        in_force = {a.answer_id for a in answers}
        claims = [c for c in s.exec(joined(ClaimRow)).all() if c.answer_id in in_force]
        clusters = s.exec(joined(ClusterRow)).all()
        verdicts = s.exec(joined(VerdictRow)).all()
        feedback = s.exec(joined(FeedbackRow)).all()
        return _Window(
            runs=runs,
            calls=[call_from_row(r) for r in calls],
            answers=answers,
            claims=claims,
            cluster_status={k.cluster_id: k.status for k in clusters},
            support={v.run_id: set(json.loads(v.body_json).get("support", [])) for v in verdicts},
            feedback={f.run_id: f.label for f in feedback},
        )


# ------------------------------------------------------------------------------------------ numbers


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation between order statistics; None if empty."""
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _rate(n: int, d: int) -> float | None:
    return n / d if d else None


def _stats_for(model: str, w: _Window, run_ids: set[str], period: datetime | None) -> ModelStats:
    calls = [c for c in w.calls if c.run_id in run_ids]
    mine = [c for c in calls if c.model == model]
    return ModelStats(
        model=model,
        period=period,
        **_seat_fields(model, calls, mine),
        **_call_fields(mine),
        **_agreement_fields(model, w, run_ids),
    )


def _seat_fields(model: str, calls: list[CallRecord], mine: list[CallRecord]) -> dict[str, Any]:
    """``runs``, the seats whose first choice was ``model``, and the valid answers it gave for others' seats."""
    seats: dict[tuple[str, str, str], list[CallRecord]] = defaultdict(list)
    for c in calls:
        if c.model_requested == model:
            seats[(c.run_id, c.node, c.member_label)].append(c)
    fallbacks = sum(1 for seat in seats.values() if any(c.model != model for c in seat))
    seats_failed = sum(1 for seat in seats.values() if not any(c.status == "ok" for c in seat))
    return dict(
        runs=len({c.run_id for c in mine} | {key[0] for key in seats}),
        seats=len(seats),
        fallbacks=fallbacks,
        fallback_rate=_rate(fallbacks, len(seats)),
        seats_failed=seats_failed,
        seat_failure_rate=_rate(seats_failed, len(seats)),
        stood_in=sum(1 for c in mine if c.status == "ok" and c.model_requested != model),
    )


def _call_fields(mine: list[CallRecord]) -> dict[str, Any]:
    """Counts by status, errors, tokens, cost, latency and queueing of the model's own call records."""
    sent = [c for c in mine if c.status != "skipped"]
    errors: dict[str, int] = defaultdict(int)
    for c in mine:
        if c.status != "ok":
            errors[c.error_kind or c.status] += 1
    latencies = [c.latency_s for c in sent]
    queued = [c.queued_s for c in sent]
    starts = [c.started_at for c in mine]
    return dict(
        calls=len(mine),
        sent=len(sent),
        ok=sum(1 for c in mine if c.status == "ok"),
        failed=sum(1 for c in mine if c.status == "failed"),
        invalid=sum(1 for c in mine if c.status == "invalid"),
        skipped=sum(1 for c in mine if c.status == "skipped"),
        failure_rate=_rate(sum(1 for c in sent if c.status in ("failed", "invalid")), len(sent)),
        errors=dict(sorted(errors.items())),
        prompt_tokens=sum(c.prompt_tokens for c in mine),
        completion_tokens=sum(c.completion_tokens for c in mine),
        cost_usd=sum(c.cost_usd for c in mine),
        unknown_cost_calls=sum(1 for c in mine if c.cost_source == "unknown"),
        latency_mean_s=sum(latencies) / len(latencies) if latencies else None,
        latency_p50_s=percentile(latencies, 50),
        latency_p90_s=percentile(latencies, 90),
        latency_p95_s=percentile(latencies, 95),
        latency_max_s=max(latencies) if latencies else None,
        queued_mean_s=sum(queued) / len(queued) if queued else None,
        queued_p95_s=percentile(queued, 95),
        queued_total_s=sum(c.queued_s for c in mine),
        rate_limited=sum(1 for c in mine if c.status == "failed" and c.error_kind == "rate_limit"),
        rate_limit_skips=sum(1 for c in mine if c.status == "skipped" and c.error_kind == "rate_limit_wait"),
        first_call=_aware(min(starts)) if starts else None,
        last_call=_aware(max(starts)) if starts else None,
    )


def _agreement_fields(model: str, w: _Window, run_ids: set[str]) -> dict[str, Any]:
    """The model's agreement with final verdicts (labels of fact checks, claims of questions), its
    accuracy against human feedback, and how often its answers back the verdict."""
    answers = [a for a in w.answers if a.run_id in run_ids and a.model == model]
    task = {r.run_id: r.task for r in w.runs}
    labels, feedback = _label_agreement(w, run_ids, answers, task)
    claims = [c for c in w.claims if c.run_id in run_ids and c.model == model]
    settled = [0, 0]
    for c in claims:
        status = w.cluster_status.get(c.cluster_id or "")
        if task.get(c.run_id) == "ask" and status in ("accepted", "rejected"):
            settled[0] += status == "accepted"
            settled[1] += 1
    agree, judged = labels[0] + settled[0], labels[1] + settled[1]
    claims_of: dict[str, list[str]] = defaultdict(list)
    for c in claims:
        claims_of[c.answer_id].append(c.claim_id)
    with_verdict = [a for a in answers if a.run_id in w.support]
    backed = sum(1 for a in with_verdict if any(cid in w.support[a.run_id] for cid in claims_of[a.answer_id]))
    return dict(
        answers=len(answers),
        agree=agree,
        judged=judged,
        reliability=_rate(agree, judged),
        labels_agree=labels[0],
        labels_judged=labels[1],
        claims_agree=settled[0],
        claims_judged=settled[1],
        feedback_agree=feedback[0],
        feedback_judged=feedback[1],
        feedback_accuracy=_rate(feedback[0], feedback[1]),
        verdict_support_rate=_rate(backed, len(with_verdict)),
    )


def _label_agreement(
    w: _Window, run_ids: set[str], answers: list[AnswerRow], task: dict[str, str]
) -> tuple[list[int], list[int]]:
    """[agree, judged] of the fact-check labels against the final label, over all and over those a human
    labelled."""
    final = {r.run_id: w.feedback.get(r.run_id) or r.verdict_label for r in w.runs if r.run_id in run_ids}
    labels = [0, 0]
    feedback = [0, 0]
    for a in answers:
        truth = final.get(a.run_id)
        if task.get(a.run_id) == "check" and a.label in _DECIDED and truth in _DECIDED:
            labels[0] += a.label == truth
            labels[1] += 1
            if w.feedback.get(a.run_id) in _DECIDED:
                feedback[0] += a.label == truth
                feedback[1] += 1
    return labels, feedback


def _models_in(w: _Window, run_ids: set[str]) -> list[str]:
    return sorted({m for c in w.calls if c.run_id in run_ids for m in (c.model, c.model_requested)})


def model_stats(
    store: Store,
    since: When = None,
    model: str | None = None,
    *,
    until: When = None,
    by: Period | None = None,
) -> list[ModelStats]:
    """One row per model over the runs started in [since, until), sorted by model name; with ``by``, one
    row per model and period (periods without runs of the model are left out), oldest first. ``model``
    keeps only that model's rows. See the module docstring for what each number means."""
    w = _load_window(store, parse_when(since), parse_when(until))
    if by is None:
        groups: dict[datetime | None, set[str]] = {None: {r.run_id for r in w.runs}}
    else:
        if by not in ("minute", "hour", "day", "week"):
            raise InputError(f"unknown period {by!r}: use minute, hour, day or week")
        groups = defaultdict(set)
        for r in w.runs:
            groups[_floor(r.created_at, by)].add(r.run_id)
    rows: list[ModelStats] = []
    for period in sorted(groups, key=lambda p: p or datetime.min.replace(tzinfo=UTC)):
        run_ids = groups[period]
        for name in _models_in(w, run_ids):
            if model is None or name == model:
                rows.append(_stats_for(name, w, run_ids, period))
    return rows


def stats_report(store: Store, since: When = None, model: str | None = None, *, until: When = None,
                 by: Period | None = None) -> StatsReport:
    """The rows of :func:`model_stats` with the window's run totals: what ``council stats`` shows."""
    lo, hi = parse_when(since), parse_when(until)
    runs = load_runs(store, lo, hi)
    return StatsReport(
        since=lo,
        until=hi,
        model=model,
        by=by,
        runs=len(runs),
        degraded_runs=sum(1 for r in runs if r.degraded),
        failed_runs=sum(1 for r in runs if r.status == "failed"),
        total_cost_usd=sum(r.total_cost_usd for r in runs),
        models=model_stats(store, lo, model, until=hi, by=by),
    )


# ------------------------------------------------------------------------------------------ frames


def model_stats_frame(
    store: Store,
    since: When = None,
    model: str | None = None,
    *,
    until: When = None,
    by: Period | None = None,
) -> pd.DataFrame:
    """:func:`model_stats` as a pandas DataFrame, one column per field (``errors`` as a dict column);
    indexed by model, or by (period, model) when ``by`` is given."""
    from council.store.frames import require_pandas

    pd = require_pandas()
    rows = model_stats(store, since, model, until=until, by=by)
    frame = pd.DataFrame([r.model_dump() for r in rows], columns=list(ModelStats.model_fields))
    for column in ("period", "first_call", "last_call"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    if by is None:
        return frame.drop(columns=["period"]).set_index("model")
    return frame.set_index(["period", "model"])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report_rows(report: StatsReport) -> tuple[list[Col], list[list[str]], str]:
    """The report as columns, rows of cells and a caption (what ``council stats`` prints, fitted to the
    terminal by ``council.display.print_table``)."""
    def when(dt: datetime | None, default: str) -> str:
        return dt.strftime("%Y-%m-%d %H:%M UTC") if dt else default

    caption = (f"{report.runs} runs from {when(report.since, 'the first run')} to {when(report.until, 'now')}: "
               f"{report.degraded_runs} degraded, {report.failed_runs} failed, total cost ${report.total_cost_usd:.6f}")
    fmt = {"minute": "%Y-%m-%d %H:%M", "hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d", "week": "week of %Y-%m-%d"}
    cols = ([Col("period")] if report.by else []) + [
        Col("model"), Col("runs", "num"), Col("calls", "num"), Col("failed", "num"), Col("fallback", "num"),
        Col("seat failed", "num"), Col("stood in", "num"), Col("reliability", "num"), Col("vs feedback", "num"),
        Col("in verdict", "num"), Col("cost USD", "num"), Col("p50 s", "num"), Col("p95 s", "num"),
        Col("queued p95 s", "num"), Col("429s", "num")]
    rows = []
    for r in report.models:
        reliability = "-" if r.reliability is None else f"{r.reliability:.2f} ({r.agree}/{r.judged})"
        human = ("-" if r.feedback_accuracy is None
                 else f"{r.feedback_accuracy:.2f} ({r.feedback_agree}/{r.feedback_judged})")
        period = [r.period.strftime(fmt[report.by]) if r.period else ""] if report.by else []
        rows.append([*period, r.model, str(r.runs), str(r.calls), _pct(r.failure_rate), _pct(r.fallback_rate),
                     _pct(r.seat_failure_rate), str(r.stood_in), reliability, human, _pct(r.verdict_support_rate),
                     f"{r.cost_usd:.6f}", _secs(r.latency_p50_s), _secs(r.latency_p95_s), _secs(r.queued_p95_s),
                     str(r.rate_limited)])
    return cols, rows, caption


def report_table(report: StatsReport) -> Any:
    """The report as a rich Table (identifiers and numbers never wrapped)."""
    cols, rows, caption = report_rows(report)
    return build_table(cols, rows, title="model quality", caption=caption)
