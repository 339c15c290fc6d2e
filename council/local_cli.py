"""``council local start|stop|status``: the warm local panel (``council.warm``) from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Annotated, Any

import typer

from council.errors import one_line_errors

__all__ = ["register"]

local_app = typer.Typer(help="A warm local panel: start it once, and `council ask` / `check-one` on the built-in "
                             "local panel answer without paying start-up each time.", no_args_is_help=True)
_errors = one_line_errors()


def _status() -> dict[str, Any] | None:
    from council.warm import request

    try:
        return request({"op": "ping"}, timeout=5.0)
    except (OSError, ValueError):
        return None


@local_app.command()
@_errors
def start(
    idle_minutes: Annotated[float, typer.Option("--idle-minutes", help="Stop after this long without a request.")] = 30.0,
    wait_s: Annotated[float, typer.Option("--wait", help="Seconds to wait for the panel to be ready.")] = 600.0,
) -> None:
    """Start the warm local panel in the background (the panel of COUNCIL_LOCAL_PANEL, default qwen)."""
    from council.config.local import local_panel
    from council.config.weights import cache_dir
    from council.errors import ConfigError
    from council.warm import socket_path

    if os.environ.get("COUNCIL_CONFIG"):
        raise ConfigError("COUNCIL_CONFIG is set: the warm worker serves the built-in local panel only "
                          "(commands with a config run in their own process)")
    if idle_minutes <= 0:
        raise ConfigError(f"--idle-minutes {idle_minutes:g}: must be above 0")
    panel = local_panel()
    running = _status()
    if running is not None:
        typer.echo(f"already running: the {running['panel']!r} panel, worker pid {running['pid']}, "
                   f"socket {running['socket']}")
        return
    log = cache_dir() / "warm.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "council", "local", "worker", "--idle-minutes", str(idle_minutes)],
            stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, start_new_session=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
            raise ConfigError(f"the warm worker exited with code {proc.returncode}: {' | '.join(tail)} (log: {log})")
        st = _status()
        if st is not None and st["pid"] == proc.pid:
            typer.echo(f"warm local panel {panel!r} ready: worker pid {proc.pid}, socket {socket_path()}; "
                       f"`council ask` and `council check-one` without a config now run on it; it stops after "
                       f"{idle_minutes:g} idle minutes or on `council local stop` (log: {log})")
            return
        time.sleep(0.2)
    proc.kill()
    raise ConfigError(f"the warm worker was not ready within {wait_s:g} s (log: {log}); stopped it")


@local_app.command()
@_errors
def stop() -> None:
    """Stop the warm local panel (its model servers stop with it)."""
    from council.warm import request, socket_path

    try:
        reply = request({"op": "stop"}, timeout=10.0)
    except (OSError, ValueError):
        typer.echo("no warm local panel is running")
        return
    for _ in range(100):
        if not socket_path().exists():
            break
        time.sleep(0.1)
    typer.echo(f"stopped the warm local panel (worker pid {reply['pid']})")


@local_app.command()
@_errors
def status() -> None:
    """Whether a warm local panel is running: its panel, pid and how many commands it answered."""
    st = _status()
    if st is None:
        typer.echo("no warm local panel is running")
        raise typer.Exit(1)
    up = time.time() - st["started"]
    typer.echo(f"warm local panel {st['panel']!r}: worker pid {st['pid']}, up {up:.0f} s, answered {st['served']} "
               f"command(s), stops after {st['idle_s'] / 60:g} idle minutes; socket {st['socket']}")


def register(app: typer.Typer) -> None:
    """Add ``council local ...`` to ``app``; the worker runs ``app``'s own commands in its process."""

    @local_app.command("worker", hidden=True)
    @_errors
    def worker(idle_minutes: Annotated[float, typer.Option("--idle-minutes")] = 30.0) -> None:
        """The worker process itself (started by ``council local start``)."""
        import tempfile

        from council.config.local import local_panel
        from council.errors import ConfigError
        from council.pipeline.engine import Council
        from council.warm import serve

        with tempfile.TemporaryDirectory(prefix="council-warm-up-") as tmp:
            # One real fact check into a throwaway database (its call records included) imports and warms
            # everything a command uses: the engine, litellm's handlers, the graph, and the model servers
            # (started by the run, process-wide), which stay up for the commands that follow.
            council = Council(db=f"sqlite:///{tmp}/warm-up.db")
            if not council.demo:
                raise ConfigError("the warm worker serves the built-in local panel only")
            council.check("Paris is the capital of France.")
            council.store.engine.dispose()
        print(f"warm worker pid {os.getpid()} serving the {local_panel()!r} panel", flush=True)
        serve(lambda argv: run_in_process(app, argv), local_panel(), idle_minutes * 60.0)

    app.add_typer(local_app, name="local")


def run_in_process(app: typer.Typer, argv: list[str]) -> int:
    """Run one command line of ``app`` in this process and return its exit code (never exits)."""
    import click

    try:
        code = app(args=argv, standalone_mode=False)
        return code if isinstance(code, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        return 1
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
