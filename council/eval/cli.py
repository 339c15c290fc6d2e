"""``council eval GOLDEN ...``, ``council eval compare A B`` and ``council evals``.

Only typer is imported here; the harness (litellm, langgraph, scipy) is imported when a command runs.

Exit status of ``council eval``: 0 every item ran; 1 the budget stopped it (rerun with a larger
``--budget-usd`` to finish); 2 it could not run (bad golden file, unknown arm, bad config, database
error); 130 interrupted (rerun the same command to resume). ``council eval compare``: 0 no regression;
1 B is significantly less accurate than A, or its cost per correct answer rose past ``--max-cost-rise``;
2 the comparison could not be made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

__all__ = ["eval_app", "evals", "register"]

EXIT_REGRESSION = 1
EXIT_CANNOT_RUN = 2


class _RunByDefault(TyperGroup):
    """``council eval GOLDEN ...`` is ``council eval run GOLDEN ...``: a first argument that is not a
    sub-command is the golden file."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(cls=_RunByDefault, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                       help="Evaluate arms (single models, a plain majority, recipes) on a golden set; compare evals.")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Config TOML file (default: $COUNCIL_CONFIG).",
                                                show_default=False)]
DbOpt = Annotated[str | None, typer.Option("--db", help="Database URL or SQLite path (default: $COUNCIL_DB, else the "
                                           "user data dir).", show_default=False)]


def _db_url(db: str | None) -> str | None:
    return db if db is None or "://" in db else f"sqlite:///{Path(db).expanduser().resolve()}"


def _store(db: str | None, config: Path | None) -> Any:
    from council.store.db import Store

    url = _db_url(db)
    if url is None and config is not None:
        from council.config.settings import load_config

        url = load_config(config).database
    return Store(url)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _usd(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.6f}"


@eval_app.command("run")
def run(
    golden: Annotated[Path, typer.Argument(help="Golden set: .jsonl or .csv (id, claim|question, label|answer, "
                                           "aliases, tags, sources).", show_default=False)],
    task: Annotated[str, typer.Option("--task", "-t", help="check (labels) or ask (short answers).")] = "check",
    arms: Annotated[str, typer.Option("--arms", "-a", help="Comma-separated: single:MODEL, majority, council, or "
                                      "any other recipe name.")] = "majority,council",
    config: ConfigOpt = None,
    db: DbOpt = None,
    budget_usd: Annotated[float | None, typer.Option("--budget-usd", help="Never spend more than this on the eval "
                                                     "(earlier invocations included).", show_default=False)] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-j", min=1, max=256, help="Items at once.")] = 4,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the report: .html (self-contained, with "
                                             "figures) or .json.", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the per-arm table as JSON.")] = False,
) -> None:
    """Run every arm on every golden item and print accuracy (95% bootstrap interval), cost per correct,
    cost, tokens, latency p50/p90, abstention, calibration (ECE), escalation, and a breakdown by tag.

    Rerun the same command to resume an interrupted eval. Exit: 0 done; 1 stopped by the budget; 2 cannot run; 130 interrupted.
    """
    from rich.console import Console

    from council._sync import run_sync
    from council.errors import CouncilError
    from .golden import read_golden
    from .runner import aevaluate

    err = Console(stderr=True, highlight=False)
    if task not in ("check", "ask"):
        typer.echo(f"error: unknown --task {task!r}: use check or ask", err=True)
        raise typer.Exit(EXIT_CANNOT_RUN)
    try:
        for b in read_golden(golden, task).bad_rows:  # type: ignore[arg-type]
            err.print(f"warning: {golden}: line {b.line}: {b.reason} (skipped)", markup=False)
        if config is None:
            import os

            from council.config.settings import CONFIG_ENV

            if not os.environ.get(CONFIG_ENV):
                from council.config.local import DEMO_NOTICE

                err.print(DEMO_NOTICE, markup=False)
        progress = _Progress(err)
        with progress:
            report = run_sync(aevaluate(golden, task=task, arms=arms, config=config, db=_db_url(db),  # type: ignore[arg-type]
                                        budget_usd=budget_usd, concurrency=concurrency, out=out,
                                        on_progress=progress.update))
    except CouncilError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_CANNOT_RUN) from None
    except KeyboardInterrupt:
        typer.echo("error: interrupted (rerun the same command to resume the eval)", err=True)
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps({"eval_id": report.info.eval_id, "arms": [a.model_dump() for a in report.arms],
                               "spent_usd": report.spent_usd, "as_if_alone_usd": report.as_if_alone_usd,
                               "budget_exhausted": report.budget_exhausted}, indent=2))
    else:
        print_report(Console(highlight=False), report)
    if out is not None:
        err.print(f"wrote the report to {out}", markup=False)
    if report.budget_exhausted:
        raise typer.Exit(1)


class _Progress:
    def __init__(self, console: Any) -> None:
        self.progress: Any = None
        self.task: Any = None
        if console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[spent]}"), TimeElapsedColumn(), console=console)

    def __enter__(self) -> _Progress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, done: int, total: int, spent: float) -> None:
        if self.progress is None:
            return
        if self.task is None:
            self.task = self.progress.add_task("eval", total=total, completed=done, spent=f"${spent:.4f}")
        else:
            self.progress.update(self.task, completed=done, spent=f"${spent:.4f}")


def print_report(con: Any, report: Any) -> None:
    """The per-arm table, the tag breakdown and what was spent."""
    from rich.table import Table

    i = report.info
    t = Table(title=f"eval {i.eval_id} · {i.task} · {i.golden_path} ({i.items_total} items)")
    for h in ("arm", "correct", "accuracy", "95% interval", "$ / correct", "$ alone", "tokens", "p50 s", "p90 s",
              "abstain", "ECE", "escalated", "failed", "skipped"):
        t.add_column(h, justify="left" if h == "arm" else "right")
    notes: list[str] = []
    for a in report.arms:
        ci = f"{_pct(a.ci_low)}–{_pct(a.ci_high)}{'*' if a.ci_note else ''}" if a.ci_low is not None else "n/a*"
        if a.ci_note:
            notes.append(f"{a.arm}: {a.ci_note}")
        if a.ece_note:
            notes.append(f"{a.arm}: {a.ece_note}")
        t.add_row(a.arm, f"{a.correct}/{a.scored}", _pct(a.accuracy), ci, _usd(a.cost_per_correct_usd), _usd(a.cost_usd),
                  str(a.tokens), "n/a" if a.latency_p50_s is None else f"{a.latency_p50_s:.2f}",
                  "n/a" if a.latency_p90_s is None else f"{a.latency_p90_s:.2f}", _pct(a.abstention_rate),
                  "n/a" if a.ece is None else f"{a.ece:.3f}", _pct(a.escalation_rate), str(a.failed),
                  str(a.skipped_budget))
    con.print(t)
    if report.tags:
        tt = Table("arm", "tag", "scored", "accuracy", "95% interval", title="by tag")
        for x in report.tags:
            tt.add_row(x.arm, x.tag, str(x.scored), _pct(x.accuracy),
                       f"{_pct(x.ci_low)}–{_pct(x.ci_high)}{'*' if x.ci_note else ''}" if x.ci_low is not None else "n/a*")
            if x.ci_note and x.ci_low is None:
                notes.append(f"{x.arm} {x.tag}: {x.ci_note}")
        con.print(tt)
    for n in dict.fromkeys(notes):
        con.print(f"* {n}", markup=False)
    con.print(f"spent ${report.spent_usd:.6f} in all (this invocation ${report.spent_now_usd:.6f}); the arms run "
              f"alone would have cost ${report.as_if_alone_usd:.6f}"
              + (" · STOPPED BY THE BUDGET: rerun with a larger --budget-usd" if report.budget_exhausted else ""),
              markup=False)
    con.print("policies: " + ", ".join(f"{k}={v}" for k, v in i.policies.items()), markup=False)


@eval_app.command("compare")
def compare(
    a: Annotated[str, typer.Argument(help="Baseline: eval id (a unique prefix) or a JSON report.", show_default=False)],
    b: Annotated[str, typer.Argument(help="Candidate: eval id or a JSON report.", show_default=False)],
    arm: Annotated[str | None, typer.Option("--arm", help="Compare only this arm (default: every shared arm).",
                                            show_default=False)] = None,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="Significance level of McNemar's test.")] = 0.05,
    max_cost_rise: Annotated[float, typer.Option("--max-cost-rise", min=0.0, help="Largest allowed relative rise of "
                                                 "the cost per correct answer (0.1 = 10%).")] = 0.10,
    db: DbOpt = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Paired comparison of two evals on the same golden set (exact McNemar test per arm).

    Exit: 0 no regression; 1 B significantly less accurate, or cost per correct up by more than --max-cost-rise; 2 cannot compare.
    """
    from council.errors import CouncilError
    from .compare import compare_evals

    try:
        results = compare_evals(a, b, arm=arm, store=_store(db, config), alpha=alpha, cost_threshold=max_cost_rise)
    except CouncilError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_CANNOT_RUN) from None
    if as_json:
        typer.echo(json.dumps([{**r.model_dump(), "regression": r.regression} for r in results], indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table("arm", "paired", "accuracy A", "accuracy B", "A only right", "B only right", "McNemar p",
                  "$/correct A", "$/correct B", "change", "verdict", title=f"{a} (A) vs {b} (B)")
        for r in results:
            why = [w for w, on in (("accuracy dropped", r.accuracy_dropped), ("cost rose", r.cost_rose)) if on]
            t.add_row(r.arm, str(r.paired), _pct(r.accuracy_a), _pct(r.accuracy_b), str(r.only_a_right),
                      str(r.only_b_right), "n/a" if r.p_value is None else f"{r.p_value:.4f}",
                      _usd(r.cost_per_correct_a), _usd(r.cost_per_correct_b), _pct(r.cost_per_correct_change),
                      "REGRESSION: " + ", ".join(why) if why else "ok")
        Console(highlight=False).print(t)
        for r in results:
            if r.note:
                typer.echo(f"note: {r.arm}: {r.note}")
    if any(r.regression for r in results):
        raise typer.Exit(EXIT_REGRESSION)


@eval_app.command("show")
def show(
    eval_id: Annotated[str, typer.Argument(help="Eval id (a unique prefix is enough).", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the report: .html or .json.",
                                             show_default=False)] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Reprint a stored eval's table from the database (an unfinished one shows the items done so far)."""
    from rich.console import Console

    from council.errors import CouncilError
    from .compare import stored_report

    try:
        report = stored_report(eval_id, _store(db, config))
        if out is not None:
            from .files import write_report

            write_report(report, out)
    except CouncilError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_CANNOT_RUN) from None
    print_report(Console(highlight=False), report)
    done = len({o.item_id for o in report.outcomes})
    if done < report.info.items_total:
        typer.echo(f"partial: {done} of {report.info.items_total} items have outcomes (rerun the eval to finish it)")


def evals(
    db: DbOpt = None,
    config: ConfigOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many evals, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List stored evals: id, time, task, golden set, arms, items, status, policy versions."""
    from council.errors import CouncilError

    try:
        from .store import EvalStore

        rows = EvalStore(_store(db, config)).list(limit)
    except CouncilError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table("eval id", "time (UTC)", "task", "golden set", "arms", "items", "status", "policies")
    for r in rows:
        t.add_row(r.eval_id, r.created_at.strftime("%Y-%m-%d %H:%M:%S"), r.task,
                  f"{Path(r.golden_path).name} ({r.golden_hash[:8]})", ", ".join(r.arms), str(r.items_total), r.status,
                  "\n".join(sorted(set(r.policies.values()))))
    Console(highlight=False).print(t)


def register(app: typer.Typer) -> None:
    """Add ``eval`` (with ``compare``) and ``evals`` to the ``council`` command."""
    app.add_typer(eval_app, name="eval")
    app.command("evals")(evals)
