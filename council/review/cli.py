"""``council review``: the human review queue from the shell.

    council review                        # the queue: flagged runs with no decision, oldest first
    council review list --batch B --tag risk=high --condition low_confidence
    council review walk --reviewer ana    # one run at a time in the terminal, then a decision
    council review decide RUN_ID REFUTED --note "..." --reviewer ana [--force]
    council review export --batch B --out queue.csv
    council review import queue.csv --reviewer ana

Only typer is imported here; the store is imported when a command runs. Errors print one line and exit 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from council.errors import one_line_errors

__all__ = ["app"]

app = typer.Typer(
    name="review",
    help="Human review of flagged verdicts: list the queue, walk through it, decide, export/import CSV.",
    add_completion=False,
    pretty_exceptions_enable=False,
)


DbOpt = Annotated[str | None, typer.Option(
    "--db", help="Database URL or SQLite path (default: $COUNCIL_DB, else the user data dir).", show_default=False)]
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="Config TOML file (its database is used when --db is not given).", show_default=False)]
ReviewerOpt = Annotated[str | None, typer.Option(
    "--reviewer", "-r", help="Who is deciding (default: $COUNCIL_REVIEWER).", show_default=False)]
BatchOpt = Annotated[str | None, typer.Option("--batch", "-b", help="Only runs of this batch id.", show_default=False)]
PolicyOpt = Annotated[str | None, typer.Option("--policy", help="Only runs of this members' policy (name or name@version).",
                                               show_default=False)]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", "-t", help="Only runs with this tag, KEY=VALUE; repeatable.",
                                                  show_default=False)]
ConditionOpt = Annotated[str | None, typer.Option(
    "--condition", help="Only runs flagged for this condition: always, contested, low_agreement, low_confidence, "
    "degraded, unverified_evidence, tag, overruled_vote, suspicious_input.", show_default=False)]
AllOpt = Annotated[bool, typer.Option("--all", help="Include runs that already have a decision.")]
LimitOpt = Annotated[int | None, typer.Option("--limit", "-n", min=1, help="At most this many runs.", show_default=False)]


_errors = one_line_errors("\nerror: interrupted (decisions already recorded are kept)", eof_interrupts=True)


def _desk(db: str | None, config: Path | None) -> Any:
    from council.store.db import Store
    from council.store.reviews import ReviewStore

    url = db if db is None or "://" in db else f"sqlite:///{Path(db).expanduser().resolve()}"
    if url is None and config is not None:
        from council.config.settings import load_config

        url = load_config(config).database
    return ReviewStore(Store(url))


def _filter(batch: str | None, policy: str | None, tag: list[str] | None, condition: str | None, all_: bool,
            limit: int | None) -> Any:
    from council.store.reviews import ReviewFilter, parse_tags

    return ReviewFilter(batch_id=batch, policy=policy, tags=parse_tags(tag or []), condition=condition,
                        include_decided=all_, limit=limit)


def _short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


@app.callback(invoke_without_command=True)
def _default(ctx: typer.Context, batch: BatchOpt = None, policy: PolicyOpt = None, tag: TagOpt = None,
             condition: ConditionOpt = None, all_: AllOpt = False, limit: LimitOpt = None, db: DbOpt = None,
             config: ConfigOpt = None,
             as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
             ) -> None:
    """Without a subcommand, ``council review [filters]`` lists the queue, as ``council review list``."""
    if ctx.invoked_subcommand is None:
        list_queue(batch=batch, policy=policy, tag=tag, condition=condition, all_=all_, limit=limit, db=db,
                   config=config, as_json=as_json)


@app.command("list")
@_errors
def list_queue(batch: BatchOpt = None, policy: PolicyOpt = None, tag: TagOpt = None, condition: ConditionOpt = None,
               all_: AllOpt = False, limit: LimitOpt = None, db: DbOpt = None, config: ConfigOpt = None,
               as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
               ) -> None:
    """List flagged runs waiting for a decision, oldest first."""
    items = _desk(db, config).queue(_filter(batch, policy, tag, condition, all_, limit))
    if as_json:
        typer.echo(json.dumps([i.model_dump(mode="json") for i in items], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table("run id", "flagged (UTC)", "policy", "council", "conf.", "why", "tags", "batch:line", "claim",
              "decision", title=f"review queue ({len(items)} run{'s' if len(items) != 1 else ''})")
    for i in items:
        t.add_row(i.run_id[:12], i.flagged_at.strftime("%Y-%m-%d %H:%M:%S"), i.policy.partition("@")[0],
                  i.council_label or _short(i.council_answer or "", 30),
                  "" if i.confidence is None else f"{i.confidence:.2f}", ", ".join(r.condition for r in i.reasons),
                  ",".join(f"{k}={v}" for k, v in sorted(i.tags.items())),
                  f"{_short(i.batch_id, 12)}:{i.line}" if i.batch_id else "", _short(i.question, 50),
                  f"{i.decision.label} ({i.decision.reviewer})" if i.decision else "")
    Console().print(t)


@app.command()
@_errors
def walk(reviewer: ReviewerOpt = None, batch: BatchOpt = None, policy: PolicyOpt = None, tag: TagOpt = None,
         condition: ConditionOpt = None, limit: LimitOpt = None, db: DbOpt = None, config: ConfigOpt = None) -> None:
    """Walk through the queue in the terminal: each run's claim, verdict, members, contested clusters and
    cited passages, then a decision (a label, skip or quit) and an optional note."""
    from rich.console import Console

    from .people import reviewer_name
    from .walk import walk as run_walk

    who = reviewer_name(reviewer)
    desk = _desk(db, config)
    items = desk.queue(_filter(batch, policy, tag, condition, False, limit))
    con = Console(highlight=False)
    if not items:
        con.print("the review queue is empty")
        return
    result = run_walk(desk, items, reviewer=who, console=con)
    con.print(f"{len(result.decided)} decided, {result.skipped} skipped"
              f"{', stopped early' if result.quit else ''} · reviewer {who}")


@app.command()
@_errors
def decide(
    run_id: Annotated[str, typer.Argument(help="Run id (a unique prefix is enough).")],
    label: Annotated[str, typer.Argument(help="Fact check: SUPPORTED, REFUTED or NOT_ENOUGH_INFO; question: ACCEPTED or REJECTED.")],
    note: Annotated[str, typer.Option("--note", help="Why, or where the truth comes from.")] = "",
    reviewer: ReviewerOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Decide on a run that was not flagged (recorded as unsolicited).")] = False,
    db: DbOpt = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the recorded decision as JSON.")] = False,
) -> None:
    """Record a decision on one run's verdict. The council's verdict stays; a later decision supersedes this one."""
    from .people import reviewer_name

    d = _desk(db, config).decide(run_id, label, reviewer=reviewer_name(reviewer), note=note, force=force)
    if as_json:
        typer.echo(d.model_dump_json(indent=2))
        return
    typer.echo(f"recorded {d.label} by {d.reviewer} for run {d.run_id} (council: {d.council_label or _short(d.council_answer, 40)}"
               f"{'; overturned' if d.overturns else '; confirmed'}{'; unsolicited' if not d.solicited else ''}"
               f"{'; supersedes ' + d.supersedes[:12] if d.supersedes else ''})")


@app.command("export")
@_errors
def export_cmd(
    out: Annotated[str, typer.Option("--out", "-o", help="CSV file to write (- for stdout).")] = "-",
    batch: BatchOpt = None, policy: PolicyOpt = None, tag: TagOpt = None, condition: ConditionOpt = None,
    all_: AllOpt = False, db: DbOpt = None, config: ConfigOpt = None,
) -> None:
    """Export the queue (e.g. a batch's) to CSV; fill the label column and import it back."""
    from .csvio import export_queue

    if out != "-" and not out.lower().endswith(".csv"):
        from council.errors import InputError

        raise InputError(f"--out {out}: the export is CSV: name a .csv file (or - for stdout)")
    n = export_queue(_desk(db, config).queue(_filter(batch, policy, tag, condition, all_, None)), out)
    if out != "-":
        typer.echo(f"wrote {n} runs to {out}", err=True)


@app.command("import")
@_errors
def import_cmd(
    file: Annotated[Path, typer.Argument(help="CSV with run_id and label columns (optional note, reviewer).")],
    reviewer: ReviewerOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Accept rows for runs that were not flagged (unsolicited).")] = False,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Record the decisions of a CSV file. Bad rows are reported by line and recorded nowhere; the
    others are recorded. Exit 1 when some row was bad."""
    import os

    from .csvio import import_decisions
    from .people import REVIEWER_ENV

    who = reviewer if reviewer is not None else os.environ.get(REVIEWER_ENV) or None
    report = import_decisions(_desk(db, config), file, reviewer=who, force=force)
    for p in report.problems:
        typer.echo(f"error: line {p.line}: {p.reason}", err=True)
    typer.echo(f"recorded {len(report.recorded)} decisions, {len(report.problems)} bad rows, "
               f"{report.undecided} rows left undecided")
    if report.problems:
        raise typer.Exit(1)
