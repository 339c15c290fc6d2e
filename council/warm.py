"""A warm local panel: one long-lived process that answers ``council ask`` and ``council check-one``.

A command on the built-in local panel pays its start-up every time: importing litellm and the engine, and
starting the llama.cpp server that loads the weights. ``council local start`` starts a worker process that
pays it once: it imports the engine, starts the panel's servers, and then runs the ``ask`` / ``check-one``
commands sent to it over a Unix socket in the user's cache directory (mode 0600: only the same user can
connect), one at a time, exactly as the command would have run in the calling process (same arguments,
working directory, ``COUNCIL_*`` variables and terminal width), and sends back what it printed and its exit
code. The calling process imports almost nothing.

A command is forwarded only when it runs on the built-in local panel (no ``--config`` and no
``COUNCIL_CONFIG``), a worker is listening, the worker serves the same panel (``COUNCIL_LOCAL_PANEL``), and
``COUNCIL_WARM`` is not ``0``; otherwise it runs as before, in its own process. The worker stops after
``idle_s`` seconds without a request, on ``council local stop``, or when killed; its servers stop with it
(they watch their parent, as every local server does).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import socketserver
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["FORWARDED", "socket_path", "forward", "request", "serve", "wants_worker"]

FORWARDED = ("ask", "check-one")
"""The commands a worker runs."""

_MAX_MESSAGE = 64 * 1024 * 1024


def socket_path() -> Path:
    """Where the worker listens: ``COUNCIL_WARM_SOCKET``, else ``warm.sock`` in the user's cache directory."""
    if os.environ.get("COUNCIL_WARM_SOCKET"):
        return Path(os.environ["COUNCIL_WARM_SOCKET"]).expanduser().resolve()
    from council.config.weights import cache_dir

    return cache_dir() / "warm.sock"


def _send(sock: socket.socket, payload: dict[str, Any]) -> None:
    sock.sendall(json.dumps(payload).encode("utf-8") + b"\n")


def _receive(sock: socket.socket) -> dict[str, Any]:
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > _MAX_MESSAGE:
            raise ValueError("message too long")
    if not buf:
        raise ConnectionError("the warm worker closed the connection without a reply")
    return json.loads(buf)


def request(payload: dict[str, Any], *, timeout: float | None = None, path: Path | None = None) -> dict[str, Any]:
    """Send one request to the worker and return its reply; OSError when no worker answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        sock.connect(str(path or socket_path()))
        sock.settimeout(timeout)
        _send(sock, payload)
        return _receive(sock)


def wants_worker(argv: list[str], environ: dict[str, str] | os._Environ[str]) -> bool:
    """True when this command line may go to a warm worker (see the module docstring)."""
    if not argv or argv[0] not in FORWARDED or environ.get("COUNCIL_WARM", "").strip() == "0":
        return False
    if environ.get("COUNCIL_CONFIG"):
        return False
    return not any(a in ("--config", "-c", "--help") or a.startswith("--config=") for a in argv[1:])


def forward(argv: list[str]) -> int | None:
    """Run ``argv`` on the warm worker and print what it printed: its exit code, or None when the command
    must run here (not forwardable, no worker listening, or the worker declined it)."""
    if not wants_worker(argv, os.environ):
        return None
    path = socket_path()
    if not path.exists():
        return None
    import shutil

    payload = {"op": "run", "argv": argv, "cwd": os.getcwd(),
               "env": {k: v for k, v in os.environ.items() if k.startswith("COUNCIL_")},
               "columns": shutil.get_terminal_size().columns}
    try:
        reply = request(payload, path=path)
    except (OSError, ValueError):
        return None  # a stale socket (the worker died) or no reply: run it here
    if reply.get("declined"):
        return None
    sys.stderr.write(reply.get("stderr", ""))
    sys.stdout.write(reply.get("stdout", ""))
    sys.stderr.write(f"note: answered by the warm local panel (worker pid {reply.get('pid')}; "
                     "`council local stop` stops it)\n")
    return int(reply.get("code", 1))


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        try:
            req = _receive(self.connection)
        except (OSError, ValueError):
            return
        self.server.last_request = time.monotonic()
        op = req.get("op")
        if op == "ping":
            reply = self.server.status()
        elif op == "stop":
            reply = {"stopping": True, "pid": os.getpid()}
            self.server.stopping = True
        elif op == "run":
            reply = self.server.run(req)
        else:
            reply = {"declined": f"unknown op {op!r}"}
        with contextlib.suppress(OSError):
            _send(self.connection, reply)


class _Server(socketserver.UnixStreamServer):
    def __init__(self, path: Path, run_cli: Callable[[list[str]], int], panel: str, idle_s: float) -> None:
        super().__init__(str(path), _Handler)
        self.run_cli, self.panel, self.idle_s = run_cli, panel, idle_s
        self.started = time.time()
        self.last_request = time.monotonic()
        self.served = 0
        self.stopping = False
        self.timeout = min(5.0, idle_s)  # handle_request returns this often, for the idle check

    def status(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "panel": self.panel, "served": self.served, "idle_s": self.idle_s,
                "started": self.started, "socket": self.server_address}

    def run(self, req: dict[str, Any]) -> dict[str, Any]:
        argv = [str(a) for a in req.get("argv", [])]
        env = {str(k): str(v) for k, v in dict(req.get("env", {})).items() if str(k).startswith("COUNCIL_")}
        if not wants_worker(argv, env):
            return {"declined": "not a command the warm worker runs"}
        if (env.get("COUNCIL_LOCAL_PANEL", "").strip() or "qwen") != self.panel:
            return {"declined": f"this worker serves the {self.panel!r} panel"}
        out, err = io.StringIO(), io.StringIO()
        saved_env = {k: v for k, v in os.environ.items() if k.startswith("COUNCIL_") or k == "COLUMNS"}
        saved_cwd = os.getcwd()
        try:
            for k in saved_env:
                os.environ.pop(k, None)
            os.environ.update(env)
            if req.get("columns"):
                os.environ["COLUMNS"] = str(int(req["columns"]))
            os.chdir(str(req.get("cwd") or saved_cwd))
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = self.run_cli(argv)
        finally:
            os.chdir(saved_cwd)
            for k in [k for k in os.environ if k.startswith("COUNCIL_") or k == "COLUMNS"]:
                os.environ.pop(k, None)
            os.environ.update(saved_env)
        self.served += 1
        self.last_request = time.monotonic()
        return {"stdout": out.getvalue(), "stderr": err.getvalue(), "code": code, "pid": os.getpid()}


def serve(run_cli: Callable[[list[str]], int], panel: str, idle_s: float, path: Path | None = None) -> None:
    """Listen on ``path`` (default ``socket_path()``) until idle for ``idle_s`` seconds or told to stop.

    ``run_cli`` runs one command line in this process and returns its exit code (its output goes to
    ``sys.stdout`` / ``sys.stderr``, which each request redirects)."""
    path = path or socket_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a stale socket of a worker that died; a live one was checked for before
    old = os.umask(0o177)
    try:
        server = _Server(path, run_cli, panel, idle_s)
    finally:
        os.umask(old)
    try:
        while not server.stopping and time.monotonic() - server.last_request < idle_s:
            server.handle_request()
    finally:
        server.server_close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
