"""``council check FILE`` (and ``python -m council.batch FILE``): a batch of fact checks from the shell.

Only typer is imported here; the batch machinery (litellm, langgraph, the store) is imported when the
command runs, so ``council --help`` stays fast.

Exit status: 0 when every claim was checked and none failed or is contested; 1 when some claim failed,
is contested, was skipped for budget or is an invalid row (``--allow-contested`` accepts contested
claims, ``--exit-zero`` accepts everything); 2 when the batch could not run (unreadable input, bad
config, database error); 3 with ``--require-review`` when the batch is otherwise clean but some claim
flagged for human review has no decision yet (``council review``); 130 when interrupted (rerun the same
command to resume).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["EXIT_CANNOT_RUN", "EXIT_INTERRUPTED", "EXIT_UNCLEAN", "EXIT_UNREVIEWED", "check", "main"]

EXIT_UNCLEAN = 1
EXIT_CANNOT_RUN = 2
EXIT_UNREVIEWED = 3
EXIT_INTERRUPTED = 130
_SHOWN_PROBLEMS = 20


def check(
    claims: Annotated[Path, typer.Argument(
        help="JSONL file (one {\"claim\": ..., \"id\": ..., \"context\": ..., \"sources\": [...]} per line) or CSV "
             "file with a 'claim' column (optional id, context, sources columns).", show_default=False)],
    out: Annotated[str | None, typer.Option(
        "--out", "-o", help="Write one result per claim: .jsonl or .csv by extension; - is JSONL on stdout.",
        show_default=False)] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-j", min=1, max=1024, show_default=False,
                                                    help="Councils running at once (in all processes together); "
                                                         "default 8, 2 on the built-in local panel.")] = None,
    processes: Annotated[int, typer.Option("--processes", "-p", min=1, max=64, help=(
        "Processes sharing the batch through the database (one uses one CPU core); the budget is split "
        "evenly between them."))] = 1,
    budget_usd: Annotated[float | None, typer.Option(
        "--budget-usd", help="Never spend more than this on the batch (earlier invocations of it included); "
        "claims left over end skipped_budget.", show_default=False)] = None,
    allow_contested: Annotated[bool, typer.Option("--allow-contested", help="Exit 0 even if claims are contested.")] = False,
    require_review: Annotated[bool, typer.Option(
        "--require-review", help="Exit 3 while some claim flagged for human review has no decision (council review).")] = False,
    exit_zero: Annotated[bool, typer.Option("--exit-zero", help="Exit 0 whenever the batch ran, whatever the claims' statuses.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Check failed claims again (otherwise a rerun keeps them).")] = False,
    batch_id: Annotated[str | None, typer.Option(
        "--batch-id", help="Name the batch (default: a hash of the file's content); reuse it to resume a file "
        "that has changed since.", show_default=False)] = None,
    max_claim_chars: Annotated[int, typer.Option("--max-claim-chars", min=1, help="Longer claims are skipped as bad rows.")] = 4000,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Config TOML file (default: $COUNCIL_CONFIG).",
                                                show_default=False)] = None,
    db: Annotated[str | None, typer.Option("--db", help="Database URL or SQLite path (default: $COUNCIL_DB, else the user "
                                           "data dir).", show_default=False)] = None,
    recipe: Annotated[str | None, typer.Option("--recipe", "-r", help="Deliberation recipe (council recipes lists them; "
                                               "default: the config's, else council).", show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    engine: Annotated[str, typer.Option("--engine", help="Where the councils run: local (this machine's processes) or "
                                        "ray (Ray actors; pip install \"council[ray]\").")] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="With --engine ray: an existing cluster "
                                                    "(auto, HOST:PORT or ray://HOST:PORT); default: start a local one.",
                                                    show_default=False)] = None,
    workers: Annotated[int | None, typer.Option("--workers", "-w", min=1, max=4096, help=(
        "With --engine ray: actors, one CPU each (default: the cluster's CPUs); -j is shared between them."),
        show_default=False)] = None,
    helper_of: Annotated[int | None, typer.Option("--helper-of", hidden=True)] = None,
    rate_limit_share: Annotated[int | None, typer.Option("--rate-limit-share", hidden=True, min=1)] = None,
) -> None:
    """Fact-check every claim of a JSONL or CSV file: many councils at once, resumable, within a budget.

    Rerun the same command to finish an interrupted batch: finished claims are skipped, interrupted ones resume.

    Exit status: 0 every claim checked and settled; 1 some failed, contested, skipped or invalid; 2 the batch could not run; 3 (with --require-review) flagged claims not yet reviewed; 130 interrupted.
    """
    from rich.console import Console

    from council._sync import run_sync
    from .api import acheck_many
    from council.errors import CouncilError

    if helper_of is not None:
        from .procs import die_with_parent

        die_with_parent(helper_of)
    err = Console(stderr=True, highlight=False)
    summary_console = err if out == "-" else Console(highlight=False)

    def bad_row(b: Any) -> None:
        err.print(f"warning: line {b.line}: {b.reason} (skipped)", markup=False)

    bar = _ProgressBar(err, enabled=not quiet and err.is_terminal)
    try:
        with bar:
            report = run_sync(acheck_many(
                claims, config=config, db=db, concurrency=concurrency, budget_usd=budget_usd, out=out,
                batch_id=batch_id, retry_failed=retry_failed, max_claim_chars=max_claim_chars, processes=processes,
                on_progress=bar.update, on_bad_row=None if helper_of else bad_row, recipe=recipe,
                _helper=helper_of is not None, _rate_limit_share=rate_limit_share,
                engine=engine, ray_address=ray_address, workers=workers,
            ))
    except CouncilError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_CANNOT_RUN) from None
    except KeyboardInterrupt:
        typer.echo("error: interrupted (rerun the same command to resume the batch)", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if helper_of is not None:
        return  # the parent reports
    if as_json:
        summary_console.print_json(json.dumps(report.model_dump(mode="json", exclude={"results"})))
    else:
        _print_summary(summary_console, report)
    if out is not None and out != "-":
        err.print(f"wrote {len(report.results)} results to {out}", markup=False)
    code = 0 if exit_zero else report.exit_code(allow_contested, require_review)
    if code:
        raise typer.Exit(code)


class _ProgressBar:
    """A rich progress bar fed from the batch's event loop thread (rich's Progress is thread-safe)."""

    def __init__(self, console: Any, enabled: bool) -> None:
        self.enabled = enabled
        self.progress: Any = None
        self.task: Any = None
        if enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.progress = Progress(
                TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=console, transient=False,
            )

    def __enter__(self) -> _ProgressBar:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, p: Any) -> None:
        if self.progress is None:
            return
        stats = (f"failed {p.failed} · contested {p.contested} · skipped {p.skipped_budget} · "
                 f"${p.spent_usd:.4f} · {p.rate:.1f}/s{rate_limit_note(p.waiting)}")
        if self.task is None:
            self.task = self.progress.add_task("batch", total=p.total, completed=p.done, stats=stats)
        else:
            self.progress.update(self.task, completed=p.done, stats=stats)


def rate_limit_note(waiting: list[Any]) -> str:
    """What the progress bar says of calls waiting on rate limits: `` · waiting on rate limit: m-a (3 calls,
    rpm)``; empty when nothing waits."""
    if not waiting:
        return ""
    shown = ", ".join(f"{w.model} ({w.calls} call{'s' if w.calls != 1 else ''}, {w.reason})" for w in waiting[:3])
    more = f" +{len(waiting) - 3} more" if len(waiting) > 3 else ""
    return f" · waiting on rate limit: {shown}{more}"


def _print_summary(con: Any, report: Any) -> None:
    from rich.table import Table

    t = Table(title=f"batch {report.batch_id}", show_header=True)
    t.add_column("status")
    t.add_column("claims", justify="right")
    for status in ("full", "degraded", "failed", "skipped_budget", "invalid", "pending", "running"):
        n = report.counts.get(status, 0)
        if n or status in ("full", "degraded", "failed"):
            t.add_row(status, str(n))
    t.add_row("contested", str(report.contested))
    t.add_row("needs review", f"{report.needs_review} ({report.unreviewed} not yet reviewed)")
    t.add_section()
    t.add_row("total", str(sum(report.counts.values())))
    con.print(t)
    rate = report.checked / report.elapsed_s if report.elapsed_s > 0 else 0.0
    budget = f" of ${report.budget_usd:g}" + (" (exhausted)" if report.budget_exhausted else "") if report.budget_usd else ""
    con.print(f"checked {report.checked} claims in {report.elapsed_s:.1f} s ({rate:.1f}/s) · spent ${report.spent_usd:.6f}"
              f"{budget} · batch total ${report.total_cost_usd:.6f} · {report.database}", markup=False, highlight=False)
    problems = [r for r in report.results if r.status in ("failed", "invalid", "skipped_budget") or r.contested
                or (r.needs_review and r.review_label is None) or r.warnings]
    if problems:
        from council.display import Col, print_table

        more = len(problems) - _SHOWN_PROBLEMS

        def review(r: Any) -> str:
            return (f"reviewed: {r.review_label}" if r.review_label else "needs review") if r.needs_review else ""

        print_table(con, [Col("line", "num"), Col("id"), Col("status"), Col("contested"), Col("review"),
                          Col("why", "text")],
                    [[str(r.line), r.id, r.status, "yes" if r.contested else "", review(r),
                      "; ".join(x for x in (r.error or r.review_reasons, r.warnings) if x)]
                     for r in problems[:_SHOWN_PROBLEMS]],
                    title="claims needing attention", caption=f"… and {more} more (see --out)" if more > 0 else None,
                    text_lines=3)


def main() -> None:
    """``python -m council.batch``: the ``council check`` command on its own."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(check)
    app(prog_name="python -m council.batch")


if __name__ == "__main__":
    sys.exit(main())
