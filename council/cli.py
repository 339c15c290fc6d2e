"""The ``council`` command line (typer). Heavy imports (litellm, langgraph) happen inside the commands
that need them, so ``council --help`` and ``council runs`` start fast."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

app = typer.Typer(
    name="council",
    help="Ask several language models at once, reconcile their claims, and keep the provenance of every claim.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Config TOML file (default: $COUNCIL_CONFIG).", show_default=False)
]
DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="Database URL or SQLite path (default: $COUNCIL_DB, else the user data dir).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
SourceOpt = Annotated[
    list[Path] | None,
    typer.Option("--source", "-s", help="A source document (text file) given to every member; repeatable.", show_default=False),
]


def _db_url(db: str | None) -> str | None:
    if db is None or "://" in db:
        return db
    return f"sqlite:///{Path(db).expanduser().resolve()}"


def _errors(fn: F) -> F:
    """Turn council's own errors into one line on stderr and exit code 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from council.errors import CouncilError

        try:
            return fn(*args, **kwargs)
        except CouncilError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("error: interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _store(db: str | None, config: Path | None = None) -> Any:
    from council.store.db import Store

    url = _db_url(db)
    if url is None and config is not None:
        from council.config.settings import load_config

        url = load_config(config).database
    return Store(url)


@app.command()
@_errors
def ask(
    question: Annotated[str, typer.Argument(help="The question to put to the council.")],
    config: ConfigOpt = None,
    db: DbOpt = None,
    image: Annotated[Path | None, typer.Option("--image", help="Attach an image (only vision models qualify).")] = None,
    source: SourceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a council on QUESTION and print the verdict, the claims and every call with its cost."""
    council = _council(config, db)
    result = council.ask(question, image=image, sources=_sources(source))
    _print_result(result, as_json)


def _council(config: Path | None, db: str | None) -> Any:
    """The Council of a run command; says on stderr when it is the local demonstration panel."""
    from council.pipeline.engine import Council

    council = Council(config, db=_db_url(db))
    if council.demo:
        from council.config.local import DEMO_NOTICE

        typer.echo(DEMO_NOTICE, err=True)
    return council


def _sources(paths: list[Path] | None) -> list[Path]:
    from council.errors import InputError

    for p in paths or []:
        if not p.is_file():
            raise InputError(f"--source {p}: no such file")
    return list(paths or [])


from council.batch.cli import check as _check_batch  # noqa: E402  (typer only: importing it costs nothing)

app.command("check")(_check_batch)
__import__("council.eval.cli", fromlist=["register"]).register(app)  # council eval, council eval compare, council evals


@app.command("check-one")
@_errors
def check_one(
    claim: Annotated[str, typer.Argument(help="The claim to fact-check.")],
    config: ConfigOpt = None,
    db: DbOpt = None,
    source: SourceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fact-check one CLAIM: SUPPORTED, REFUTED or NOT_ENOUGH_INFO."""
    _print_result(_council(config, db).check(claim, sources=_sources(source)), as_json)


@app.command()
@_errors
def feedback(
    run_id: Annotated[str, typer.Argument(help="Run id of a fact check (a unique prefix is enough).")],
    label: Annotated[str, typer.Argument(help="The true label: SUPPORTED, REFUTED or NOT_ENOUGH_INFO.")],
    note: Annotated[str, typer.Option("--note", help="Why, or where the truth comes from.")] = "",
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Record the true label of a fact check; members' reliabilities learn from it."""
    store = _store(db, config)
    store.add_feedback(run_id, label.upper(), note)
    typer.echo(f"recorded {label.upper()} for run {store.resolve_run_id(run_id)}")


@app.command()
@_errors
def runs(
    db: DbOpt = None,
    config: ConfigOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many runs, newest first.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List past runs: id, time, question, verdict, cost."""
    rows = _store(db, config).list_runs(limit)
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table("run id", "time (UTC)", "task", "question", "verdict", "status", "cost USD")
    for r in rows:
        t.add_row(r.run_id[:12], r.created_at.strftime("%Y-%m-%d %H:%M:%S"), r.task, _short(r.question, 50),
                  _short(r.verdict or "", 40), r.status, f"{r.total_cost_usd:.6f}")
    Console().print(t)


@app.command()
@_errors
def stats(
    since: Annotated[str | None, typer.Option("--since", help="Runs started at or after: 2026-11-01, 2026-11-01T12:00, or an age such as 7d, 12h.", show_default=False)] = None,
    until: Annotated[str | None, typer.Option("--until", help="Runs started before this (same forms as --since).", show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Only this model (catalog name).", show_default=False)] = None,
    by: Annotated[str | None, typer.Option("--by", help="One row per model and minute, hour, day or week.", show_default=False)] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    recent: Annotated[str, typer.Option("--recent", help="Drift: compare each model's runs since this (an age such as 1d, or a date) with its earlier ones.")] = "1d",
    alpha: Annotated[float, typer.Option("--drift-alpha", min=0.0, max=1.0, help="Drift: significance level of Fisher's exact test.")] = 0.01,
) -> None:
    """Per-model quality over past runs: reliability, failure and fallback rates, cost, latency; and drift (a model's recent failure rate, agreement or feedback accuracy significantly off its history)."""
    from council.provenance.drift import detect_drift, drift_table
    from council.provenance.monitoring import report_table, stats_report

    store = _store(db, config)
    report = stats_report(store, since, model, until=until, by=by)  # type: ignore[arg-type]
    drift = detect_drift(store, recent, since=since, model=model, alpha=alpha)
    if as_json:
        typer.echo(json.dumps({**json.loads(report.model_dump_json()), "drift": json.loads(drift.model_dump_json())}, indent=2))
        return
    from rich.console import Console

    con = Console()
    con.print(report_table(report))
    if drift.flags:
        con.print(drift_table(drift))
    else:
        testable = sum(c.testable for c in drift.checks)
        con.print(f"no quality drift flagged ({testable} of {len(drift.checks)} checks had enough runs on both sides of {recent})")


@app.command()
@_errors
def show(
    run_id: Annotated[str, typer.Argument(help="Run id (a unique prefix is enough).")],
    db: DbOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reprint a past run from the database."""
    from council.pipeline.engine import RunResult

    store = _store(db, config)
    _print_result(RunResult.from_stored(store.load_run(run_id), store), as_json)


@app.command()
@_errors
def graph(
    run_id: Annotated[str, typer.Argument(help="Run id (a unique prefix is enough).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="node-link, graphml or prov-json (W3C PROV).")] = "node-link",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file (default: stdout).")] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Export a run's provenance graph, rebuilt from the database."""
    from council.errors import InputError
    from council.provenance.graph import build_graph, export_graph, to_prov

    if fmt not in ("node-link", "graphml", "prov-json"):
        raise InputError(f"unknown --format {fmt!r}: use node-link, graphml or prov-json")
    run = _store(db, config).load_run(run_id)
    if fmt == "prov-json":
        doc = to_prov(run)
        text = doc.serialize(format="json", indent=2)
        if out is not None:
            out.write_text(text, encoding="utf-8")
        summary = f"{len(list(doc.get_records()))} PROV records"
    else:
        g = build_graph(run)
        text = export_graph(g, fmt, out)  # type: ignore[arg-type]
        summary = f"{g.number_of_nodes()} nodes and {g.number_of_edges()} edges"
    if out is None:
        typer.echo(text)
    else:
        typer.echo(f"wrote {summary} to {out}", err=True)


@app.command()
@_errors
def models(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List the model catalog: capabilities, prices, context window, and the policies each qualifies for."""
    from council.pipeline.engine import Council
    from council.config.qualify import RequestNeeds, exclusion_reason

    c = Council(config)
    rows = []
    for e in c.catalog:
        qualifies = {p: exclusion_reason(e, pol, RequestNeeds()) for p, pol in c.config.policies.items()}
        rows.append((e, qualifies))
    if as_json:
        typer.echo(json.dumps([
            {**e.model_dump(mode="json"), "policies": {p: (r is None) for p, r in q.items()}, "excluded_because": {p: r for p, r in q.items() if r}}
            for e, q in rows
        ], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table("name", "model", "provider", "capabilities", "quality", "$/Mtok in", "$/Mtok out", "context", "qualifies for")
    for e, q in rows:
        price = (lambda v: "local" if e.local else ("?" if v is None else f"{v:g}"))
        t.add_row(e.name, e.model + (f"\n{e.api_base}" if e.api_base else "") + (f"\n{e.weights_path}" if e.weights_path else ""),
                  e.provider or "?", ", ".join(sorted(e.capabilities or [])), f"{e.quality:g}",
                  price(e.input_usd_per_mtok), price(e.output_usd_per_mtok), str(e.context_window or "?"),
                  ", ".join(p for p, r in q.items() if r is None) or "none")
    Console().print(t)


def _short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _print_result(result: Any, as_json: bool) -> None:
    if as_json:
        payload = result.model_dump(mode="json")
        payload["claims"] = [c.model_dump(mode="json") for c in result.claims]
        typer.echo(json.dumps(payload, indent=2))
        return
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    con = Console()
    v = result.verdict
    if v is not None:
        head = f"[bold]{v.label + ': ' if v.label else ''}{v.answer}[/bold]\n"
        head += f"confidence {v.confidence:.2f} · agreement {v.agreement:.2f} · decided by {v.decided_by} · "
        head += f"{v.members_answered}/{v.members_total} members answered (quorum {v.quorum})"
        if v.degraded:
            head += "\n[yellow]DEGRADED COUNCIL:[/yellow] " + "; ".join(v.degraded_reasons)
        if v.needs_human_review:
            head += "\n[yellow]needs human review (policy)[/yellow]"
        if v.clusters_total:
            head += (f"\n{v.clusters_total} claim clusters: {len(v.settled_by_vote)} settled by vote, "
                     f"{len(v.settled_by_adjudicator)} by the adjudicator, {len(v.unresolved)} unresolved")
        if v.majority_answer is not None:
            head += f"\nplain majority: {_short(v.majority_answer, 60)}"
        if v.best_member is not None:
            head += f" · best single member ({v.best_member}, {v.best_member_model}): {_short(v.best_member_answer or '', 60)}"
        con.print(Panel(head, title="verdict", expand=False))
    support = set(v.support if v else [])
    against = set(v.contradicted if v else [])
    cluster_label = {cid: k.label for k in result.clusters for cid in k.claim_ids}
    ct = Table("claim", "member", "model", "conf.", "verdict uses it", "cluster", "evidence", title="claims")
    for c in result.claims:
        mark = "supports" if c.claim_id in support else ("rejected" if c.claim_id in against else "")
        evidence = ", ".join(f"{x.source_id}{' ✓' if x.verified else (' ✗' if x.verified is False else '')}" for x in c.citations)
        ct.add_row(_short(c.text, 70), c.member_label, c.model, f"{c.confidence:.2f}", mark,
                   cluster_label.get(c.claim_id, ""), evidence)
    con.print(ct)
    if result.clusters:
        kt = Table("cluster", "status", "settled by", "support", "members", "claim", title="clusters")
        for k in result.clusters:
            kt.add_row(k.label, k.status, k.settled_by, f"{k.support:.2f}", ",".join(k.member_labels), _short(k.text, 60))
        con.print(kt)
    kt = Table("member", "try", "model", "status", "tokens in/out", "cost USD", "cost source", "latency s", title="calls")
    for r in result.calls:
        status = r.status + (f" ({r.error_kind})" if r.error_kind else "")
        kt.add_row(r.member_label, str(r.attempt), r.model + ("" if r.model == r.model_requested else f" (for {r.model_requested})"),
                   status, f"{r.prompt_tokens}/{r.completion_tokens}", f"{r.cost_usd:.6f}", r.cost_source, f"{r.latency_s:.2f}")
    con.print(kt)
    con.print(f"run {result.run_id} · total cost ${result.total_cost_usd:.6f} · {len(result.calls)} calls")


def main() -> None:
    """Run the CLI, then exit without interpreter teardown.

    Exit handlers still run (litellm's clients are closed, local model servers stopped, logs flushed);
    only the garbage collection of every loaded module is skipped, which after litellm is loaded costs
    about two seconds and changes nothing for a process that is about to end.
    """
    import atexit
    import os
    import sys

    try:
        app()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
