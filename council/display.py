"""Tables for a terminal of any width: identifiers and numbers are never cut, long text is shortened.

A table is given as columns (:class:`Col`: an identifier, a number or free text) and rows of strings.
:func:`print_table` prints it as a rich table when the identifiers and numbers fit the console on one line
each, the free text shortened to a few lines in the room left; otherwise, one block per row (``header
value`` pairs wrapped at spaces), so that a model name, run id, status or cost is never truncated at 80
columns. The full text is always in the commands' ``--json`` output. Only rich is imported, when called.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

__all__ = ["Col", "build_table", "print_table", "shorten"]

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
