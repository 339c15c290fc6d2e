"""What a terminal shows: tables for any width (identifiers and numbers never cut, long text shortened), a
run's printout, and live progress while a run works.

A table is given as columns (:class:`Col`: an identifier, a number or free text) and rows of strings.
:func:`print_table` prints it as a rich table when the identifiers and numbers fit the console on one line
each, the free text shortened to a few lines in the room left; otherwise, one block per row (``header
value`` pairs wrapped at spaces), so that a model name, run id, status or cost is never truncated at 80
columns. The full text is always in the commands' ``--json`` output. Only rich is imported, when called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

__all__ = ["Col", "RunProgress", "build_table", "busy", "print_run", "print_table", "shorten"]

_MIN_TEXT = 16  # below this many columns for free text, the table turns into blocks


class Col(NamedTuple):
    """One column: its header and what its cells are."""

    header: str
    kind: Literal["id", "num", "text"] = "id"
    """``id`` (model names, run ids, statuses, labels) and ``num`` are never wrapped or cut; ``text`` is
    wrapped and shortened to fit."""


def shorten(text: str, n: int) -> str:
    """``text`` on one line, cut to ``n`` characters with an ellipsis when longer."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: max(n - 1, 0)].rstrip() + "…"


def build_table(cols: list[Col], rows: list[list[str]], *, title: str | None = None, caption: str | None = None) -> Any:
    """A rich Table with the columns' wrapping rules (identifiers and numbers on one line)."""
    from rich.table import Table
    from rich.text import Text

    # Cells are text, never markup: a claim may well contain "[1]".
    t = Table(title=Text(title, style="bold") if title else None, caption=Text(caption, style="dim") if caption else None)
    for c in cols:
        if c.kind == "text":
            t.add_column(c.header, overflow="fold", ratio=1)
        else:
            t.add_column(c.header, no_wrap=True, justify="right" if c.kind == "num" else "left")
    for r in rows:
        t.add_row(*(Text(cell) for cell in r))
    return t


def print_table(console: Any, cols: list[Col], rows: list[list[str]], *, title: str | None = None,
                caption: str | None = None, text_lines: int = 2) -> None:
    """Print the rows as a table fitted to ``console.width`` (see the module docstring)."""
    from rich.measure import Measurement

    texts = [i for i, c in enumerate(cols) if c.kind == "text"]
    blank = [[("" if i in texts else cell) for i, cell in enumerate(r)] for r in rows]
    natural = console.options.update_width(100_000)  # the table's own width, not clipped to the console
    fixed = Measurement.get(console, natural, build_table(cols, blank, title=title)).maximum
    room = console.width - fixed
    per_text = room // len(texts) if texts else room
    if per_text >= (_MIN_TEXT if texts else 0):
        limit = max(per_text - 2, 8) * text_lines
        fitted = [[shorten(cell, limit) if i in texts else cell for i, cell in enumerate(r)] for r in rows]
        console.print(build_table(cols, fitted, title=title, caption=caption))
        return
    _print_blocks(console, cols, rows, title=title, caption=caption, text_lines=text_lines)


def _print_blocks(console: Any, cols: list[Col], rows: list[list[str]], *, title: str | None, caption: str | None,
                  text_lines: int) -> None:
    """One block per row: the identifiers and numbers on a line (wrapped at spaces, never cut), then each
    free-text cell on lines of its own, indented."""
    from rich.padding import Padding
    from rich.text import Text

    if title:
        console.print(Text(title, style="bold"))
    limit = max(console.width - 4, 20) * text_lines
    for r in rows:
        lines = [Text("•")]
        texts = []
        for c, cell in zip(cols, r):
            if not cell:
                continue
            if c.kind == "text":
                texts.append(Text.assemble((f"{c.header}: ", "dim"), shorten(cell, limit)))
                continue
            pair = Text.assemble((f"{c.header} ", "dim"), cell)  # a pair is never split across lines
            sep = " " if len(lines[-1]) == 1 else " · "
            if len(lines[-1]) + len(sep) + len(pair) > console.width and len(lines[-1]) > 1:
                lines.append(Text(" "))
                sep = " "
            lines[-1].append(sep)
            lines[-1].append_text(pair)
        for line in lines:
            console.print(line, overflow="fold", no_wrap=True, crop=False)
        for t in texts:
            console.print(Padding(t, (0, 0, 0, 2)), overflow="fold")
    if caption:
        console.print(Text(caption, style="dim"))


def _decided(v: Any) -> str:
    """How the verdict was reached, in words that agree with the cluster counts printed under it."""
    if v.decided_by == "none":
        return "NO VERDICT"
    if v.decided_by == "adjudicator":
        ruled = len(v.settled_by_adjudicator)
        return "decided by adjudicator" + (
            f" (it ruled on {ruled} of {ruled + len(v.unresolved)} contested clusters)" if v.unresolved else "")
    if any("unsettled" in r for r in v.degraded_reasons):
        return "NOT SETTLED by vote: the best-backed answer of an unsettled vote (the adjudicator could not rule)"
    return "decided by vote"


def _verdict_panel(v: Any, decisions: list[Any] | None = None) -> Any:
    from rich.panel import Panel
    from rich.text import Text

    head = Text()
    head.append(f"{v.label + ': ' if v.label else ''}{v.answer}\n", style="bold")
    if v.decided_by == "none":
        head.append(f"{_decided(v)} · {v.members_answered}/{v.members_total} members answered (quorum {v.quorum})")
    else:
        head.append(f"confidence {v.confidence:.2f} · agreement {v.agreement:.2f} · {_decided(v)} · "
                    f"{v.members_answered}/{v.members_total} members answered (quorum {v.quorum})")
    if v.degraded:
        head.append("\nDEGRADED COUNCIL: ", style="yellow")
        head.append("; ".join(v.degraded_reasons))
    for w in v.warnings() if hasattr(v, "warnings") else []:
        head.append("\nWARNING: ", style="bold red")
        head.append(w)
    decision = next((d for d in decisions or [] if d.latest), None)
    if decision is not None:
        head.append(f"\nhuman verdict: {decision.label}", style="bold")
        head.append(f" by {decision.reviewer} {decision.decided_at:%Y-%m-%d %H:%M} UTC "
                    f"({'overturns' if decision.overturns else 'confirms'} the council"
                    f"{'; unsolicited' if not decision.solicited else ''}"
                    f"{f'; {len(decisions) - 1} earlier decision(s)' if len(decisions or []) > 1 else ''})"
                    + (f": {shorten(decision.note, 80)}" if decision.note else ""))
    elif v.needs_human_review:
        head.append("\nneeds human review (policy): ", style="yellow")
        head.append("; ".join(f"{r.condition} ({r.detail})" for r in v.review_reasons))
    if v.clusters_total:
        head.append(f"\n{v.clusters_total} claim clusters: {len(v.settled_by_vote)} settled by vote, "
                    f"{len(v.settled_by_adjudicator)} by the adjudicator, {len(v.unresolved)} unresolved")
    if v.majority_answer is not None:
        head.append(f"\nplain majority: {shorten(v.majority_answer, 100)}")
    if v.best_member is not None:
        head.append(" · " if v.majority_answer is not None else "\n")
        head.append(f"best single member ({v.best_member}, {v.best_member_model}): "
                    f"{shorten(v.best_member_answer or '', 100)}")
    return Panel(head, title="verdict", expand=False)


def print_run(con: Any, result: Any, before_total: Callable[[], None] | None = None) -> None:
    """A run (``RunResult``) as ``council ask`` and ``council show`` print it: the verdict (and a person's
    decision on it), the claims, the clusters and every call, fitted to the console's width;
    ``before_total`` prints more sections (a recipe's stages) before the closing total line."""
    v = result.verdict
    if v is not None:
        con.print(_verdict_panel(v, getattr(result, "decisions", [])))
    support = set(v.support if v else [])
    against = set(v.contradicted if v else [])
    cluster_label = {cid: k.label for k in result.clusters for cid in k.claim_ids}
    rows = []
    for c in result.claims:
        mark = "supports" if c.claim_id in support else ("rejected" if c.claim_id in against else "")
        evidence = ", ".join(f"{x.source_id}{' ✓' if x.verified else (' ✗' if x.verified is False else '')}" for x in c.citations)
        rows.append([c.text, c.member_label, c.model, f"{c.confidence:.2f}", mark, cluster_label.get(c.claim_id, ""),
                     evidence])
    print_table(con, [Col("claim", "text"), Col("member"), Col("model"), Col("conf.", "num"), Col("verdict"),
                      Col("cluster"), Col("evidence")], rows, title="claims")
    if result.clusters:
        print_table(con, [Col("cluster"), Col("status"), Col("settled by"), Col("support", "num"), Col("members"),
                          Col("claim", "text")],
                    [[k.label, k.status, k.settled_by, f"{k.support:.2f}", ",".join(k.member_labels), k.text]
                     for k in result.clusters], title="clusters")
    calls = []
    for r in result.calls:
        status = r.status + (f" ({r.error_kind})" if r.error_kind else "")
        calls.append([r.member_label, r.node, str(r.attempt),
                      r.model + ("" if r.model == r.model_requested else f" (for {r.model_requested})"), status,
                      f"{r.prompt_tokens}/{r.completion_tokens}", f"{r.cost_usd:.6f}", r.cost_source, f"{r.latency_s:.2f}",
                      f"{r.queued_s:.2f}"])
    print_table(con, [Col("member"), Col("node"), Col("try", "num"), Col("model"), Col("status"), Col("tokens in/out", "num"),
                      Col("cost USD", "num"), Col("cost source"), Col("latency s", "num"), Col("queued s", "num")],
                calls, title="calls")
    if before_total is not None:
        before_total()
    con.print(f"run {result.run_id} · total cost ${result.total_cost_usd:.6f} · {len(result.calls)} calls",
              markup=False, highlight=False)


class RunProgress:
    """Live progress of one run on a terminal (stderr): a line per member and the adjudicator, fed by the
    call records as ``store`` writes them (``Store.on_call``), so what it shows is what is recorded. Off when stderr is not a
    terminal; gone once the run ends (the result is printed instead)."""

    def __init__(self, store: Any) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.store = store
        self.live: Any = None
        self.started = 0.0
        self.seats: dict[str, tuple[str, str, int, float]] = {}  # label -> (model, status, attempt, since)

    def __enter__(self) -> RunProgress:
        if not self.console.is_terminal:
            return self
        import time

        from rich.live import Live

        self.started = time.monotonic()
        self.store.on_call(self._record)
        self.live = Live(self, console=self.console, refresh_per_second=4, transient=True)
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def _record(self, r: Any) -> None:
        import time

        label = {"adjudicate": "adjudicator", "cluster": "clustering"}.get(r.node, r.member_label)
        status = "answering" if r.status == "pending" else r.status + (f" ({r.error_kind})" if r.error_kind else "")
        self.seats[label] = (r.model, status, r.attempt, time.monotonic())

    def __rich__(self) -> Any:
        import time

        from rich.console import Group
        from rich.spinner import Spinner
        from rich.table import Table

        elapsed = time.monotonic() - self.started
        what = "preparing the council (loading models)" if not self.seats else "council at work"
        t = Table.grid(padding=(0, 2))
        for label, (model, status, attempt, _since) in sorted(self.seats.items()):
            t.add_row(label, model, f"try {attempt}", status)
        return Group(Spinner("dots", text=f"{what} · {elapsed:.0f} s"), t)




def busy(message: str) -> Any:
    """A spinner on stderr while a slow step runs (loading litellm's model map, reading many runs); only on
    a terminal."""
    import contextlib

    from rich.console import Console

    err = Console(stderr=True)
    return err.status(message) if err.is_terminal else contextlib.nullcontext()
