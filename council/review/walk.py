"""The interactive review: one flagged run at a time in the terminal, then a decision (``council review walk``).

For each run the reviewer sees the claim, the council's verdict and why it was flagged, each member's
label, confidence and answer, the clusters the members disagreed on, and the passages the members cited
(with whether each quote was found in its passage); then picks a label (or skips, or quits) and may add a
note. Decisions are recorded one by one, so quitting half-way loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from council.store.reviews import REVIEW_LABELS, QueueItem, ReviewDecision, ReviewStore

__all__ = ["WalkResult", "render_item", "walk"]


class WalkResult(BaseModel):
    """What one walk through the queue did."""

    decided: list[ReviewDecision] = Field(default_factory=list)
    skipped: int = 0
    quit: bool = False
    """The reviewer stopped before the end of the queue."""


def _short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def render_item(run: Any, item: QueueItem, position: int, total: int) -> list[Any]:
    """The rich renderables that show one flagged run (``run``: its ``StoredRun``)."""
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    v = run.verdict
    head = f"[bold]{_short(run.question, 400)}[/bold]\n\n"
    if v is not None:
        head += (f"council: [bold]{v.label + ' · ' if v.label else ''}{_short(v.answer, 200)}[/bold]\n"
                 f"confidence {v.confidence:.2f} · agreement {v.agreement:.2f} · decided by {v.decided_by}"
                 f"{' · DEGRADED' if v.degraded else ''}\n")
    head += "flagged: " + "; ".join(f"{r.condition} ({r.detail})" for r in item.reasons)
    for w in v.warnings() if v is not None else []:
        head += f"\n[bold red]warning:[/bold red] {escape(w)}"
    if item.tags:
        head += "\ntags: " + ", ".join(f"{k}={val}" for k, val in sorted(item.tags.items()))
    if item.batch_id:
        head += f"\nbatch {item.batch_id} line {item.line} (id {item.item_id})"
    out: list[Any] = [Panel(head, title=f"review {position} of {total} · run {run.run_id[:12]}", expand=False)]
    members = Table("member", "model", "label", "conf.", "answer", title="members")
    for a in run.answers:
        members.add_row(a.member_label, a.model, a.label or "", "" if a.confidence is None else f"{a.confidence:.2f}",
                        _short(a.answer, 80))
    for f in run.failures:
        members.add_row(f.member_label, f.model_requested, "failed", "", f"{f.error_kind}: {_short(f.reason, 60)}")
    out.append(members)
    disputed = [k for k in run.clusters if k.contradicts or k.settled_by == "adjudicator" or k.status == "unresolved"]
    if disputed:
        kt = Table("cluster", "status", "settled by", "support", "members", "claim", title="contested clusters")
        for k in disputed:
            kt.add_row(k.label, k.status, k.settled_by, f"{k.support:.2f}", ",".join(k.member_labels), _short(k.text, 60))
        out.append(kt)
    passages = {p.passage_id: p for p in run.passages}
    cited = [(c, x) for a in run.answers for c in a.claims for x in c.citations]
    if cited:
        ct = Table("member", "passage", "quote", "found", "passage text", title="cited passages")
        for c, x in cited:
            p = passages.get(x.source_id)
            ct.add_row(c.member_label, x.source_id, _short(x.quote, 60),
                       "yes" if x.verified else ("no" if x.verified is False else "?"),
                       _short(p.text, 80) if p else "(no such passage)")
        out.append(ct)
    return out


def walk(desk: ReviewStore, items: list[QueueItem], *, reviewer: str, console: Any,
         ask: Callable[..., str] | None = None) -> WalkResult:
    """Show each item, ask for a decision, record it. ``ask`` is ``rich.prompt.Prompt.ask`` (a seam for
    other front ends); answers are matched case-insensitively."""
    from rich.prompt import Prompt

    ask = ask or Prompt.ask
    result = WalkResult()
    for i, item in enumerate(items, start=1):
        if desk.latest([item.run_id]).get(item.run_id) is not None and item.decision is None:
            continue  # decided by someone else since the queue was listed
        run = desk.store.load_run(item.run_id)
        for part in render_item(run, item, i, len(items)):
            console.print(part)
        labels = list(REVIEW_LABELS.get(item.task, ()))
        choice = ask("decision", choices=[*labels, "skip", "quit"], case_sensitive=False, console=console)
        choice = str(choice).strip()
        if choice.lower() == "quit":
            result.quit = True
            break
        if choice.lower() == "skip":
            result.skipped += 1
            continue
        note = ask("note (optional)", default="", show_default=False, console=console)
        decision = desk.decide(item.run_id, choice, reviewer=reviewer, note=str(note))
        result.decided.append(decision)
        console.print(f"recorded {decision.label} for run {item.run_id[:12]}"
                      f"{' (overturns the council)' if decision.overturns else ''}", highlight=False)
    return result
