"""``council budget``: standing ceilings on what a database's batches spend (``council.store.ledger``).

    council budget set team-a --usd 50 --per day --policy fact_check --db postgresql://...
    council budget show --db postgresql://...
    council budget rm team-a --db postgresql://...

Every batch call (``council check FILE``, any engine that reserves in the database: ``--engine ray``)
governed by the policy reserves its worst case in the ceiling's current window before it is sent, so
several invocations on several machines cannot spend more together. Only typer is imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["budget_app"]

budget_app = typer.Typer(help="Standing budget ceilings kept in the database (shared by every batch using it).",
                         no_args_is_help=True, add_completion=False)

_Db = Annotated[str | None, typer.Option("--db", help="Database URL or SQLite path (default: $COUNCIL_DB, else the "
                                         "user data dir).", show_default=False)]


def _store(db: str | None):  # -> Store
    from council.store.db import Store

    return Store(db if db is None or "://" in db else f"sqlite:///{Path(db).expanduser().resolve()}")


def _run(fn):  # noqa: ANN001, ANN202  (a tiny wrapper: project errors become one line and exit 2)
    from council.errors import CouncilError

    try:
        return fn()
    except CouncilError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@budget_app.command("set")
def set_ceiling(
    name: Annotated[str, typer.Argument(help="The ceiling's name (e.g. team-a).")],
    usd: Annotated[float, typer.Option("--usd", min=0.0, help="What may be spent in one period, in USD.")],
    per: Annotated[str, typer.Option("--per", help="hour, day, month (UTC calendar windows) or total.")] = "day",
    policy: Annotated[str, typer.Option("--policy", help="The task policy whose calls it covers (fact_check, "
                                        "adjudication, ...); * for every call.")] = "*",
    db: _Db = None,
) -> None:
    """Create or change a ceiling; the current window takes the new limit at once."""
    from pydantic import ValidationError

    from council.store.ledger import Ceiling, set_ceiling as put

    try:
        ceiling = Ceiling(name=name, policy=policy, limit_usd=usd, period=per)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        typer.echo(f"error: {'.'.join(str(x) for x in err['loc'])}: {err['msg']}", err=True)
        raise typer.Exit(2) from None
    _run(lambda: put(_store(db), ceiling))
    typer.echo(f"ceiling {name}: ${usd:g} per {per} for policy {policy}")


@budget_app.command("show")
def show(db: _Db = None) -> None:
    """Each ceiling with what its current window has spent and holds."""
    from rich.console import Console
    from rich.table import Table

    from council.store.ledger import ceilings, ledger_state

    store = _run(lambda: _store(db))
    t = Table("ceiling", "policy", "per", "window", "limit $", "spent $", "held $", "left $", title="budget ceilings")
    for c in _run(lambda: ceilings(store)):
        state = _run(lambda: ledger_state(store, c.window())) or (c.limit_usd, 0.0, 0.0)
        limit, spent, held = state
        t.add_row(c.name, c.policy, c.period, c.window().rsplit(":", 1)[-1], f"{limit:.6f}", f"{spent:.6f}",
                  f"{held:.6f}", f"{max(0.0, limit - spent - held):.6f}")
    Console(highlight=False).print(t)


@budget_app.command("rm")
def remove(name: Annotated[str, typer.Argument(help="The ceiling to remove.")], db: _Db = None) -> None:
    """Remove a ceiling (what its windows spent stays recorded)."""
    from council.store.ledger import remove_ceiling

    _run(lambda: remove_ceiling(_store(db), name))
    typer.echo(f"removed ceiling {name}")
