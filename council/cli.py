"""The ``council`` command line (typer). Heavy imports (litellm, langgraph) happen inside the commands
that need them, so ``council --help`` and ``council runs`` start fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from council.errors import one_line_errors

app = typer.Typer(
    name="council",
    help="Ask several language models at once, reconcile their claims, and keep the provenance of every claim.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Config TOML file (default: $COUNCIL_CONFIG).", show_default=False)
]
DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="Database URL or SQLite path (default: $COUNCIL_DB, else the user data dir).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
RecipeOpt = Annotated[str | None, typer.Option("--recipe", "-r", help="Deliberation recipe: council, review, cascade "
                                               "(council recipes), or a recipe .toml file; default: the config's.",
                                               show_default=False)]
SourceOpt = Annotated[
    list[Path] | None,
    typer.Option("--source", "-s", help="A source document (text file) given to every member; repeatable.", show_default=False),
]


_errors = one_line_errors()
"""Turn council's own errors into one line on stderr and exit code 1, never a traceback."""


def _store(db: str | None, config: Path | None = None) -> Any:
    """The store a read command looks at: --db, else the config's database, else COUNCIL_DB or the default."""
    from council.store.db import Store, resolve_db_url

    if db is None and config is not None:
        from council.config.settings import load_config

        return Store(resolve_db_url(None, config=load_config(config)))
    return Store(resolve_db_url(db))


@app.command()
@_errors
def policies(
    config: ConfigOpt = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table (the README's).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Every policy field: what it means, its type and default, and its value in each policy (with the config's overrides)."""
    from council.config.policy import policy_fields
    from council.config.settings import config_from_dict, load_config

    cfg = load_config(config) if config is not None else config_from_dict({}, source="(shipped policies)")
    if markdown:
        typer.echo(policies_markdown(cfg.policies), nl=False)
        return
    fields = [f for f in policy_fields() if f.name not in ("name", "description")]
    if as_json:
        typer.echo(json.dumps({"fields": [f.model_dump(mode="json") for f in fields],
                               "policies": {n: p.model_dump(mode="json") | {"version": p.version}
                                            for n, p in cfg.policies.items()}}, indent=2))
        return
    from rich.console import Console

    from council.display import Col, print_table

    names = sorted(cfg.policies)
    cols = [Col("field"), Col("type", "text"), Col("default")] + [Col(n) for n in names] + [Col("what it means", "text")]
    rows = [[f.name, f.type, _value(f.default), *(_value(getattr(cfg.policies[n], f.name)) for n in names), f.description]
            for f in fields]
    con = Console()
    for n in names:
        con.print(f"{n}: {cfg.policies[n].description}", markup=False, highlight=False)
    print_table(con, cols, rows, title="policy fields (override any of them under [policies.NAME] in the config)",
                caption="versions: " + ", ".join(f"{n}@{cfg.policies[n].version}" for n in names), text_lines=6)


def _run_ref(store: Any, ref: str) -> str:
    """A run id, a unique prefix of one, or ``last`` (the newest run in the database)."""
    if ref.strip().lower() != "last":
        return ref
    from council.errors import RunNotFound

    newest = store.list_runs(1)
    if not newest:
        raise RunNotFound(f"no run in {store.safe_url} yet, so no last run")
    return newest[0].run_id


@app.command()
@_errors
def ask(
    question: Annotated[str, typer.Argument(help="The question to put to the council.")],
    config: ConfigOpt = None,
    db: DbOpt = None,
    image: Annotated[Path | None, typer.Option("--image", help="Attach an image (only vision models qualify).")] = None,
    source: SourceOpt = None,
    recipe: RecipeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a council on QUESTION and print the verdict, the claims and every call with its cost."""
    council = _council(config, db, recipe)
    with _progress(council):
        result = council.ask(question, image=image, sources=_sources(source))
    _print_result(result, as_json)
    _exit_without_verdict(result)


def _exit_without_verdict(result: Any) -> None:
    """A run that reached no verdict exits 1, saying why in one line per failed member (on stderr)."""
    v = result.verdict
    if v is not None and v.decided_by != "none":
        return
    # The members' own failures follow, one line each; the first line says what else went wrong.
    reasons = [r for r in (v.degraded_reasons if v else [result.status]) if not r.startswith("member ")]
    typer.echo(f"error: no verdict (run {result.run_id}): " + "; ".join(reasons), err=True)
    for f in result.failures:
        typer.echo(f"  member {f.member_label} ({f.model_requested}): {f.error_kind}: {' '.join(f.reason.split())}",
                   err=True)
    raise typer.Exit(1)


def _council(config: Path | None, db: str | None, recipe: str | None = None) -> Any:
    """The Council of a run command; says on stderr when it is the local demonstration panel."""
    from council.pipeline.engine import Council

    council = Council(config, db=db, recipe=recipe)
    if council.demo:
        from council.config.local import demo_notice

        typer.echo(demo_notice(), err=True)
    return council


def _sources(paths: list[Path] | None) -> list[Path]:
    from council.errors import InputError

    for p in paths or []:
        if not p.is_file():
            raise InputError(f"--source {p}: no such file")
    return list(paths or [])


from council.batch.cli import check as _check_batch  # noqa: E402  (typer only: importing it costs nothing)
from council.recipes_cli import print_stages, recipes, revision_rows, stage_payload  # noqa: E402  (typer only, as above)

app.command("check")(_check_batch)
app.command("recipes")(recipes)

from council.review.cli import app as _review_app  # noqa: E402  (typer only)

app.add_typer(_review_app, name="review")

from council.serve.cli import serve as _serve  # noqa: E402  (typer only; fastapi is imported when it runs)

app.command("serve")(_errors(_serve))

from council.batch.budget_cli import budget_app  # noqa: E402  (typer only)

app.add_typer(budget_app, name="budget")

__import__("council.eval.cli", fromlist=["register"]).register(app)  # council eval, council eval compare, council evals
__import__("council.local_cli", fromlist=["register"]).register(app)  # council local start|stop|status


@app.command("check-one")
@_errors
def check_one(
    claim: Annotated[str, typer.Argument(help="The claim to fact-check.")],
    config: ConfigOpt = None,
    db: DbOpt = None,
    source: SourceOpt = None,
    recipe: RecipeOpt = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Tag the claim, KEY=VALUE (e.g. risk=high); "
                                                  "repeatable. A policy's review_tags flag matching runs.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Fact-check one CLAIM: SUPPORTED, REFUTED or NOT_ENOUGH_INFO."""
    from council.store.reviews import parse_tags

    tags = parse_tags(tag or [])
    council = _council(config, db, recipe)
    with _progress(council):
        result = council.check(claim, sources=_sources(source), tags=tags)
    _print_result(result, as_json)
    _exit_without_verdict(result)


@app.command()
@_errors
def feedback(
    run_id: Annotated[str, typer.Argument(help="Run id of a fact check (a unique prefix is enough, or 'last').")],
    label: Annotated[str, typer.Argument(help="The true label: SUPPORTED, REFUTED or NOT_ENOUGH_INFO.")],
    note: Annotated[str, typer.Option("--note", help="Why, or where the truth comes from.")] = "",
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Record the true label of a fact check; members' reliabilities learn from it."""
    store = _store(db, config)
    run_id = _run_ref(store, run_id)
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

    from council.display import Col, print_table

    cols = [Col("run id"), Col("time (UTC)"), Col("task"), Col("question", "text"), Col("verdict", "text"),
            Col("status"), Col("cost USD", "num")]
    print_table(Console(), cols, [[r.run_id, r.created_at.strftime("%Y-%m-%d %H:%M:%S"), r.task, r.question,
                                   r.verdict or "", r.status, f"{r.total_cost_usd:.6f}"] for r in rows])


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
    """Per-model quality over past runs: reliability, failure and fallback rates, cost, latency, rate-limit queueing; and drift (a model's recent failure rate, agreement or feedback accuracy significantly off its history)."""
    from council.provenance.drift import detect_drift, drift_table
    from council.provenance.monitoring import stats_report
    from council.review.stats import review_stats, review_table

    store = _store(db, config)
    with _busy("reading the call records"):
        report = stats_report(store, since, model, until=until, by=by)  # type: ignore[arg-type]
        review = review_stats(store, since, until)
        drift = detect_drift(store, recent, since=since, model=model, alpha=alpha)
    if as_json:
        payload = report.model_dump(mode="json")
        payload["review"] = [r.model_dump(mode="json") for r in review]
        payload["drift"] = json.loads(drift.model_dump_json())
        typer.echo(json.dumps(payload, indent=2))
        return
    from rich.console import Console

    from council.display import print_table
    from council.provenance.monitoring import report_rows

    con = Console()
    cols, rows, caption = report_rows(report)
    print_table(con, cols, rows, title="model quality", caption=caption)
    if review:
        con.print(review_table(review))
    if drift.flags:
        con.print(drift_table(drift))
    else:
        testable = sum(c.testable for c in drift.checks)
        con.print(f"no quality drift flagged ({testable} of {len(drift.checks)} checks had enough runs on both sides of {recent})")


@app.command()
@_errors
def show(
    run_id: Annotated[str, typer.Argument(help="Run id (a unique prefix is enough), or 'last' for the newest run.")],
    db: DbOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reprint a past run from the database."""
    from council.pipeline.engine import RunResult

    store = _store(db, config)
    _print_result(RunResult.from_stored(store.load_run(_run_ref(store, run_id)), store), as_json)


@app.command()
@_errors
def graph(
    run_id: Annotated[str, typer.Argument(help="Run id (a unique prefix is enough), or 'last' for the newest run.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="node-link, graphml, prov-json (W3C PROV) or html (interactive, offline).")] = "node-link",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file (default: stdout).")] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Export a run's provenance graph, rebuilt from the database."""
    from council.errors import InputError
    from council.provenance.graph import build_graph, export_graph, to_prov

    if fmt not in ("node-link", "graphml", "prov-json", "html"):
        raise InputError(f"unknown --format {fmt!r}: use node-link, graphml, prov-json or html")
    store = _store(db, config)
    run = store.load_run(_run_ref(store, run_id))
    if fmt == "html":
        from council.provenance.html import graph_view

        view = graph_view(build_graph(run))
        text = view.html()
        if out is not None:
            out.write_text(text, encoding="utf-8")
        summary = f"an interactive page of {len(view.nodes)} nodes and {len(view.edges)} edges"
    elif fmt == "prov-json":
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
    with _busy("resolving the catalog against litellm's model map"):
        catalog = c.catalog
    for e in catalog:
        qualifies = {p: exclusion_reason(e, pol, RequestNeeds()) for p, pol in c.config.policies.items()}
        rows.append((e, qualifies))
    if as_json:
        typer.echo(json.dumps([
            {**e.model_dump(mode="json"), "policies": {p: (r is None) for p, r in q.items()}, "excluded_because": {p: r for p, r in q.items() if r}}
            for e, q in rows
        ], indent=2))
        return
    from rich.console import Console

    from council.display import Col, print_table

    cols = [Col("name"), Col("model"), Col("provider"), Col("capabilities", "text"), Col("quality", "num"),
            Col("$/Mtok in", "num"), Col("$/Mtok out", "num"), Col("context", "num"), Col("qualifies for", "text")]
    out = []
    for e, q in rows:
        price = (lambda v: "local" if e.local else ("?" if v is None else f"{v:g}"))
        out.append([e.name, e.model + (f"\n{e.api_base}" if e.api_base else "") + (f"\n{e.weights_path}" if e.weights_path else "")
                    + (f"\nsha256 {e.weights_sha256}" if e.weights_sha256 else ""),
                    e.provider or "?", ", ".join(sorted(e.capabilities or [])), f"{e.quality:g}",
                    price(e.input_usd_per_mtok), price(e.output_usd_per_mtok), str(e.context_window or "?"),
                    ", ".join(p for p, r in q.items() if r is None) or "none"])
    print_table(Console(), cols, out, text_lines=4)


def _value(v: Any) -> str:
    if v is None:
        return "unset"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (tuple, list)):
        return ", ".join(str(x) for x in v) or "(none)"
    return f"{v:g}" if isinstance(v, float) else str(v)


def policies_markdown(policies: dict[str, Any]) -> str:
    """The policy fields as a Markdown table: type, default, each policy's value, description (the README's
    table is this text for the shipped policies)."""
    from council.config.policy import policy_fields

    names = sorted(policies)
    esc = (lambda t: t.replace("|", "\\|"))
    lines = [f"- `{n}`: {policies[n].description}" for n in names] + [""]
    lines += ["| field | type | default | " + " | ".join(f"`{n}`" for n in names) + " | what it means |",
             "|---" * (len(names) + 4) + "|"]
    for f in policy_fields():
        if f.name in ("name", "description"):
            continue
        values = [esc(_value(getattr(policies[n], f.name))) for n in names]
        lines.append(f"| `{f.name}` | {esc(f.type)} | {esc(_value(f.default))} | " + " | ".join(values)
                     + f" | {esc(f.description)} |")
    return "\n".join(lines) + "\n"


def _print_result(result: Any, as_json: bool) -> None:
    if as_json:
        payload = result.model_dump(mode="json")
        payload["claims"] = [c.model_dump(mode="json") for c in result.claims]
        payload["stages"] = stage_payload(result)
        payload["rounds"] = revision_rows(result)
        typer.echo(json.dumps(payload, indent=2))
        return
    from rich.console import Console

    from council.display import print_run

    con = Console()
    print_run(con, result, before_total=lambda: print_stages(con, result))


def _progress(council: Any) -> Any:
    from council.display import RunProgress

    return RunProgress(council.store)


def _busy(message: str) -> Any:
    from council.display import busy

    return busy(message)


def main() -> None:
    """Run the CLI, then exit without interpreter teardown.

    Exit handlers still run (litellm's clients are closed, local model servers stopped, logs flushed);
    only the garbage collection of every loaded module is skipped, which after litellm is loaded costs
    about two seconds and changes nothing for a process that is about to end.
    """
    import atexit
    import os
    import sys

    from council.warm import forward

    forwarded = forward(sys.argv[1:])  # a warm local panel answers, when one is running (council local start)
    if forwarded is not None:
        sys.stdout.flush()
        os._exit(forwarded)
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
