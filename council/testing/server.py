"""A scripted OpenAI-compatible chat server on loopback, for tests, benchmarks, notebooks and demos.

No machine here reaches an LLM API, so the whole litellm path is exercised against this server instead:
``litellm.acompletion(model="openai/member-a", api_base=srv.base_url, api_key="x", messages=[...])``.
Each model name in the :class:`~council.testing.script.Script` is a member; the server answers from the
script with the scripted latency, token usage and injected faults.

Endpoints (OpenAI wire format where one exists):

- ``POST /v1/chat/completions``: a chat completion (``id`` = ``chatcmpl-<uuid hex>``, also sent as the
  ``x-request-id`` header; ``model`` echoes the request; ``usage`` from the script or estimated).
  Message content may be a string or a list of parts (only text parts are read). ``response_format``,
  ``temperature`` and the like are ignored. Errors use the OpenAI error body
  ``{"error": {"message", "type", "code"}}``: ``stream: true`` -> 400, unknown model -> 404
  ``model_not_found``, no matching answer -> 400, fault "429" -> 429 ``rate_limit_error`` (with
  ``Retry-After`` when scripted), faults "500"/"503" -> 500/503. A model with ``rpm`` in the script answers
  a request above its limit with 429 ``rate_limit_error`` and ``Retry-After`` (recorded with fault
  ``"rpm"``), and its answers announce the remaining quota in ``x-ratelimit-*`` headers.
  With ``logprobs: true``, an answer's scripted ``top_logprobs`` come back as the first token's OpenAI
  ``logprobs`` (at most ``top_logprobs`` alternatives).
- ``POST /v1/completions``: the legacy text completion (for base models in completion mode): the
  ``prompt`` is matched like a last user message; same faults, latency and usage; ``choices[0].text``.
- ``POST /v1/embeddings``: for models with ``embedding_dims``, deterministic hashed-word vectors (texts
  sharing words get similar vectors), with usage; faults "429"/"500"/"503" apply as for chat.
- ``GET /v1/models``: the scripted model names.
- ``GET /_stats``: request counts per model and the peak number of requests in flight, overall and per
  model, so tests can prove a fan-out really ran in parallel without timing anything.

The server keeps an in-process log, :attr:`ScriptedServer.requests` (one :class:`RequestRecord` per chat
request, written when the request ends), plus :attr:`~ScriptedServer.max_in_flight`. It binds only to a
loopback address. Use it from synchronous code (``with ScriptedServer(script) as srv:`` runs it on a
background thread with its own event loop) or inside a running loop (``async with``). A client that
disconnects mid-answer (e.g. its timeout fired during a "timeout" fault) just cancels the handler; the
record then has status 499.

Command line: ``python -m council.testing.server --script FILE [--host 127.0.0.1] [--port N]`` prints
exactly one line, ``listening on http://127.0.0.1:N/v1``, and serves until SIGINT/SIGTERM. A bad script
prints one error line on stderr and exits with status 2. ``--example`` plays the shipped demonstration
panel instead (:mod:`council.testing.demo`). ``--write-config FILE`` writes a council config for the
served models (on the port actually bound) before the line is printed; with ``--script`` it needs
``--adjudicator MODEL``, the script's model that adjudicates (every other model is a member).

Importing this module starts nothing and reads no environment.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from .script import (
    FAULT_CONTENT,
    Script,
    load_script,
    read_messages,
)

__all__ = ["RequestRecord", "ScriptedServer", "main"]

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_EXCERPT = 80
# fault kind -> (status, OpenAI error type, error code, message template)
_HTTP_FAULTS = {
    "429": (429, "rate_limit_error", "rate_limit_exceeded", "rate limit reached for model '{}'"),
    "500": (500, "server_error", "internal_error", "internal error serving model '{}'"),
    "503": (503, "service_unavailable_error", "service_unavailable", "model '{}' is overloaded"),
}
_CLIENT_GONE = 499  # nginx's "client closed request": the handler was cancelled mid-answer


@dataclass(frozen=True)
class RequestRecord:
    """One chat-completion request as the server saw it."""

    model: str
    """Model name requested ("" when the body had none)."""
    question: str
    """The first 80 characters of the last user message."""
    attempt: int
    """Attempt number for (model, matched answer), 1-based; 0 when no answer was matched."""
    fault: str | None
    """The fault kind injected (``"rpm"``: refused by the model's rpm limit), or None."""
    status: int
    """HTTP status sent; 499 when the client went away and the handler was cancelled."""
    started: float
    """Wall-clock time (``time.time()``) the request arrived."""
    finished: float
    """Wall-clock time the response was ready (or the handler was cancelled)."""
    request_id: str | None = None
    """The ``chatcmpl-...`` id of a 200 response, else None."""


def _error(status: int, message: str, type_: str, code: str | None,
           headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class ScriptedServer:
    """An OpenAI-compatible chat server that plays the members of a script, on loopback.

    ``script`` is a :class:`Script`, a dict (validated as one) or a path to a .toml/.json script
    (ValueError if invalid). ``port=0`` picks a free port; :attr:`port` and :attr:`base_url` are known
    once started.
    """

    def __init__(self, script: Script | dict[str, Any] | str | Path, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        if isinstance(script, Script):
            self.script = script
        elif isinstance(script, dict):
            self.script = Script.model_validate(script)
        else:
            self.script = load_script(script)
        if host not in _LOOPBACK:
            raise ValueError(f"the scripted server binds only to loopback, not {host!r}")
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._lock = threading.Lock()
        self.reset()

    # ----------------------------------------------------------------- observations

    def reset(self) -> None:
        """Forget the request log, counters and attempt numbers (the script is kept)."""
        with self._lock:
            self._records: list[RequestRecord] = []
            self._attempts: dict[tuple[str, int], int] = defaultdict(int)
            self._counts: dict[str, int] = defaultdict(int)
            self._in_flight = 0
            self._in_flight_by_model: dict[str, int] = defaultdict(int)
            self._max_in_flight = 0
            self._max_in_flight_by_model: dict[str, int] = defaultdict(int)
            self._window: dict[str, deque[float]] = defaultdict(deque)
            self._rpm_refused: dict[str, int] = defaultdict(int)

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, in order of completion."""
        with self._lock:
            return list(self._records)

    @property
    def max_in_flight(self) -> int:
        """The most chat requests that were being handled at the same moment."""
        return self._max_in_flight

    def stats(self) -> dict[str, Any]:
        """What ``GET /_stats`` returns."""
        with self._lock:
            return {
                "requests": dict(self._counts),
                "total_requests": sum(self._counts.values()),
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "max_in_flight_by_model": dict(self._max_in_flight_by_model),
                "rpm_refused": dict(self._rpm_refused),
            }

    @property
    def port(self) -> int:
        """The TCP port listened on (RuntimeError before start)."""
        if self._port is None:
            raise RuntimeError("the scripted server is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """The OpenAI base URL to give clients, e.g. ``http://127.0.0.1:PORT/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    # ----------------------------------------------------------------- lifecycle

    async def astart(self) -> None:
        """Start serving on the running event loop; returns once listening."""
        if self._runner is not None:
            raise RuntimeError("the scripted server is already started")
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/_stats", self._stats)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        # handler_cancellation: a client that hangs up (its timeout fired) cancels the sleeping handler.
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0,
                               handler_cancellation=True)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        self._runner = runner
        self._port = sock.getsockname()[1]

    async def astop(self) -> None:
        """Stop serving: in-progress handlers are cancelled, connections closed."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for task in list(self._handlers):
            task.cancel()
        await runner.cleanup()

    def start(self) -> ScriptedServer:
        """Serve from a background thread with its own event loop; returns once listening."""
        if self._thread is not None or self._runner is not None:
            raise RuntimeError("the scripted server is already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        async def run() -> None:
            self._stop_event = asyncio.Event()
            try:
                await self.astart()
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            await self._stop_event.wait()
            await self.astop()

        def target() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(run())
            finally:
                loop.close()

        self._thread = threading.Thread(target=target, name="council-scripted-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = self._loop = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop a server started with :meth:`start` and wait for its thread (idempotent)."""
        thread, loop, event = self._thread, self._loop, self._stop_event
        if thread is None or loop is None or event is None:
            return
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # loop already closed
            pass
        thread.join(timeout=10)
        self._thread = self._loop = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> ScriptedServer:
        await self.astart()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.astop()

    # ----------------------------------------------------------------- handlers

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "council-scripted"}
                for name in self.script.models]
        return web.json_response({"object": "list", "data": data})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    def _enter(self, model: str) -> None:
        with self._lock:
            self._counts[model] += 1
            self._in_flight += 1
            self._in_flight_by_model[model] += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._max_in_flight_by_model[model] = max(self._max_in_flight_by_model[model],
                                                      self._in_flight_by_model[model])

    def _admit(self, model: str, member: Any) -> tuple[web.Response | None, dict[str, str]]:
        """Apply the model's ``rpm`` limit: a 429 response when the moving window is full (the request is not
        counted), else None and the ``x-ratelimit-*`` headers to send with the answer."""
        allowed = member.window_requests
        if allowed is None:
            return None, {}
        now = time.monotonic()
        with self._lock:
            window = self._window[model]
            while window and window[0] <= now - member.rpm_window_s:
                window.popleft()
            if len(window) >= allowed:
                self._rpm_refused[model] += 1
                wait = window[0] + member.rpm_window_s - now
                retry = f"{max(0.01, wait):.2f}"
                return _error(429, f"rate limit reached for model '{model}': {member.rpm} requests per minute",
                              "rate_limit_error", "rate_limit_exceeded", {"Retry-After": retry}), {}
            window.append(now)
            remaining, reset = allowed - len(window), window[0] + member.rpm_window_s - now
        if not member.rate_headers:
            return None, {}
        return None, {"x-ratelimit-limit-requests": str(allowed), "x-ratelimit-remaining-requests": str(remaining),
                      "x-ratelimit-reset-requests": f"{max(0.0, reset):.3f}s"}

    def _leave(self, model: str) -> None:
        with self._lock:
            self._in_flight -= 1
            self._in_flight_by_model[model] -= 1

    async def _chat(self, request: web.Request) -> web.Response:
        started = time.time()
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        note: dict[str, Any] = {"model": "", "question": "", "attempt": 0, "fault": None,
                                "status": 500, "request_id": None}
        try:
            response = await self._answer(request, note)
            note["status"] = response.status
            return response
        except asyncio.CancelledError:
            note["status"] = _CLIENT_GONE
            raise
        finally:
            self._handlers.discard(task)
            record = RequestRecord(started=started, finished=time.time(), **note)
            with self._lock:
                self._records.append(record)

    async def _embeddings(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body is not valid JSON", "invalid_request_error", None)
        model = body.get("model") if isinstance(body, dict) else None
        member = self.script.models.get(model) if isinstance(model, str) else None
        if member is None or member.embedding_dims is None:
            return _error(404, f"model {model!r} is not an embedding model in the script", "invalid_request_error",
                          "model_not_found")
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
            return _error(400, "'input' must be a string or a list of strings", "invalid_request_error", None)
        self._enter(model)
        try:
            refused, rate_headers = self._admit(model, member)
            if refused is not None:
                return refused
            with self._lock:
                self._attempts[(model, -1)] += 1
                attempt = self._attempts[(model, -1)]
            fault = member.find_fault(seed=self.script.seed, model=model, answer_index=-1, attempt=attempt,
                                      question=" ".join(inputs))
            if fault is not None and fault.kind in _HTTP_FAULTS:
                status, error_type, code, template = _HTTP_FAULTS[fault.kind]
                return _error(status, template.format(model) + " (scripted fault)", error_type, code)
            await asyncio.sleep(member.latency)
            data = [{"object": "embedding", "index": i, "embedding": member.embed(t)} for i, t in enumerate(inputs)]
            tokens = sum(len(t) for t in inputs) // 4 + len(inputs)
            return web.json_response({"object": "list", "data": data, "model": model,
                                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, headers=rate_headers)
        finally:
            self._leave(model)

    async def _answer(self, request: web.Request, note: dict[str, Any]) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body is not valid JSON", "invalid_request_error", None)
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _error(400, "request body must be a JSON object with a string 'model'",
                          "invalid_request_error", None)
        model: str = body["model"]
        note["model"] = model
        self._enter(model)
        try:
            return await self._complete(model, body, note)
        finally:
            self._leave(model)

    async def _complete(self, model: str, body: dict[str, Any], note: dict[str, Any]) -> web.Response:
        if body.get("stream"):
            return _error(400, "streaming not supported by the scripted server",
                          "invalid_request_error", "stream_not_supported")
        completion = "prompt" in body and "messages" not in body
        if completion:
            prompt = body.get("prompt")
            prompt = "".join(prompt) if isinstance(prompt, list) else prompt
            if not isinstance(prompt, str):
                return _error(400, "'prompt' must be a string", "invalid_request_error", None)
            question, prompt_chars = prompt, len(prompt)
        else:
            messages = body.get("messages")
            if not isinstance(messages, list):
                return _error(400, "'messages' must be a list", "invalid_request_error", None)
            question, prompt_chars = read_messages(messages)
        note["question"] = question[:_EXCERPT]

        member = self.script.models.get(model)
        if member is None:
            return _error(404, f"model '{model}' is not in the script", "invalid_request_error",
                          "model_not_found")
        refused, rate_headers = self._admit(model, member)
        if refused is not None:
            note["fault"] = "rpm"
            return refused
        found = member.find_answer(question)
        if found is None:
            start = question[:60] + ("..." if len(question) > 60 else "")
            return _error(400, f"no scripted answer of model '{model}' matches the question {start!r}",
                          "invalid_request_error", "no_scripted_answer")
        answer_index, answer = found
        with self._lock:
            self._attempts[(model, answer_index)] += 1
            attempt = self._attempts[(model, answer_index)]
        note["attempt"] = attempt
        fault = member.find_fault(seed=self.script.seed, model=model, answer_index=answer_index,
                                  attempt=attempt, question=question)
        kind = fault.kind if fault is not None else None
        note["fault"] = kind

        if fault is not None and kind in _HTTP_FAULTS:
            status, error_type, code, template = _HTTP_FAULTS[fault.kind]
            headers = ({"Retry-After": _format_seconds(fault.retry_after)}
                       if fault.retry_after is not None else None)
            message = template.format(model) + f" (scripted fault, attempt {attempt})"
            return _error(status, message, error_type, code, headers)

        await asyncio.sleep(member.timeout_sleep if kind == "timeout" else member.latency)
        content = FAULT_CONTENT.get(kind or "") or answer.text()
        prompt_tokens, completion_tokens = member.usage(prompt_chars, content)
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        note["request_id"] = request_id
        choice: dict[str, Any] = (
            {"index": 0, "text": content, "finish_reason": "stop", "logprobs": None} if completion
            else {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        )
        if not completion and body.get("logprobs") and answer.top_logprobs and kind is None:
            ranked = sorted(answer.top_logprobs.items(), key=lambda kv: -kv[1])[: int(body.get("top_logprobs") or 1)]
            alts = [{"token": t, "logprob": lp, "bytes": None} for t, lp in ranked]
            choice["logprobs"] = {"content": [{**alts[0], "top_logprobs": alts}]}
        payload = {
            "id": request_id, "object": "text_completion" if completion else "chat.completion",
            "created": int(time.time()), "model": model, "choices": [choice],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }
        return web.json_response(payload, headers={"x-request-id": request_id, **rate_headers})


# --------------------------------------------------------------------- command line

async def _serve_until_signalled(server: ScriptedServer, write_config: str | None = None,
                                 adjudicator: str | None = None) -> None:
    import os
    import signal

    await server.astart()
    if write_config is not None:
        from .example import demo_config_toml, script_config

        # Written once listening (a script can wait for the file), atomically (never half a file).
        target = Path(write_config)
        database = f"{target.stem}.db"
        tables = (None if adjudicator is None
                  else script_config(list(server.script.models), server.base_url, adjudicator, database))
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(demo_config_toml(server.base_url, database, tables), encoding="utf-8")
        os.replace(tmp, target)
    print(f"listening on {server.base_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.astop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m council.testing.server``; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m council.testing.server",
        description="Serve a scripted OpenAI-compatible chat API on loopback until SIGINT/SIGTERM.",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--script", help="script file (.toml or .json)")
    what.add_argument("--example", action="store_true",
                      help="play the shipped demonstration panel (council.testing.demo: atlas, borealis, cirrus, "
                           "dune and the adjudicator judge)")
    parser.add_argument("--write-config", metavar="FILE",
                        help="once listening, write a council config for the served models to FILE (its database: "
                             "FILE's name with .db, next to it); with --script, name the adjudicator too")
    parser.add_argument("--adjudicator", metavar="MODEL",
                        help="with --script and --write-config: the script's model that adjudicates (the others "
                             "are members)")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one (default)")
    args = parser.parse_args(argv)
    if args.write_config and args.script and not args.adjudicator:
        parser.error("--write-config with --script needs --adjudicator MODEL (the script's adjudicator)")
    if args.adjudicator and not (args.script and args.write_config):
        parser.error("--adjudicator goes with --script and --write-config")
    try:
        if args.example:
            from .example import demo_script

            server = ScriptedServer(demo_script(), host=args.host, port=args.port)
        else:
            server = ScriptedServer(args.script, host=args.host, port=args.port)
        if args.adjudicator:
            from .example import script_config

            script_config(list(server.script.models), "http://check", args.adjudicator)  # fail before listening
    except ValueError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve_until_signalled(server, args.write_config, args.adjudicator))
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a signal that arrived before the handlers were installed
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
