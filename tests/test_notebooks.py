"""The notebooks in notebooks/ run headless, top to bottom, and draw their figures; committed, they are clean.

Each notebook is executed with nbclient in a Jupyter kernel of this very interpreter (the ``python3``
kernelspec that ipykernel installs into the environment), against the scripted demonstration panel it
starts itself on loopback. The kernel is another process, out of reach of conftest's network guard, so the
same guard is run as a first cell injected into the executed copy: any connection or name lookup beyond
loopback fails the notebook. Figures render with matplotlib's inline backend (Agg underneath), so each
figure becomes an image/png output. The notebooks run concurrently, each in its own kernel.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
import pytest_asyncio

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
MIN_FIGURES = {"01_ask.ipynb": 1, "02_provenance.ipynb": 2, "03_monitoring.ipynb": 3, "04_eval.ipynb": 2}
CELL_TIMEOUT_S = 240

GUARD = '''\
# injected by tests/test_notebooks.py: only loopback, as in the test suite itself
import ipaddress as _ip, json as _json, socket as _socket, sys as _sys

def _loopback(host):
    if host in (None, "", "localhost"):
        return True
    try:
        return _ip.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False

_connect, _connect_ex, _getaddrinfo = _socket.socket.connect, _socket.socket.connect_ex, _socket.getaddrinfo

def _guard(address):
    if isinstance(address, tuple) and not _loopback(address[0]):
        raise ConnectionRefusedError(f"notebook tests may not reach {address[0]!r}: only loopback is allowed")

def _guarded_connect(self, address):
    _guard(address)
    return _connect(self, address)

def _guarded_connect_ex(self, address):
    _guard(address)
    return _connect_ex(self, address)

def _guarded_getaddrinfo(host, *args, **kwargs):
    h = host.decode() if isinstance(host, bytes) else host
    if not _loopback(h):
        raise _socket.gaierror(f"notebook tests may not resolve {h!r}: only loopback is allowed")
    return _getaddrinfo(host, *args, **kwargs)

_socket.socket.connect, _socket.socket.connect_ex = _guarded_connect, _guarded_connect_ex
_socket.getaddrinfo = _guarded_getaddrinfo
print("@@kernel@@" + _json.dumps({"prefix": _sys.prefix, "executable": _sys.executable}))
'''


@dataclass
class Executed:
    name: str
    notebook: Any
    """The executed copy, the guard cell removed."""
    kernel: dict[str, str]
    """sys.prefix and sys.executable of the kernel, as the guard cell printed them."""
    error: str | None


def _kernel_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COUNCIL_CONFIG", "PYTHONWARNINGS")}
    env.update(
        COUNCIL_DB=str(tmp / "default-council.db"),  # the notebooks use their own database; never the user's
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        MPLBACKEND="module://matplotlib_inline.backend_inline",
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    return env


async def _execute(name: str, tmp: Path) -> Executed:
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(GUARD))
    workdir = tmp / name.removesuffix(".ipynb")
    workdir.mkdir()
    # graceful: the kernel exits normally, so demo_panel's temporary database is removed at its exit
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S, startup_timeout=120,
                            shutdown_kernel="graceful", resources={"metadata": {"path": str(workdir)}})
    error = None
    try:
        await client.async_execute(env=_kernel_env(tmp))
    except CellExecutionError as exc:
        error = str(exc)
    guard = nb.cells.pop(0)
    line = next((o["text"] for o in guard.get("outputs", []) if o.get("name") == "stdout"), "")
    kernel = json.loads(line.split("@@kernel@@", 1)[1]) if "@@kernel@@" in line else {}
    return Executed(name, nb, kernel, error)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def executed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, Executed]]:
    tmp = tmp_path_factory.mktemp("notebooks")
    runs = await asyncio.gather(*(_execute(name, tmp) for name in NOTEBOOKS))
    yield {r.name: r for r in runs}


def _outputs(nb: Any) -> list[dict[str, Any]]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


# ------------------------------------------------------------------------------------------ committed files


def test_the_notebooks_are_there() -> None:
    assert NOTEBOOKS == ["01_ask.ipynb", "02_provenance.ipynb", "03_monitoring.ipynb", "04_eval.ipynb"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_clean(name: str) -> None:
    raw = (NOTEBOOK_DIR / name).read_text(encoding="utf-8")
    nb = nbformat.reads(raw, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    for cell in code:
        assert cell.get("outputs") == [], f"{name}: committed with outputs (clear them first)"
        assert cell.get("execution_count") is None, f"{name}: committed with an execution count"
    for pattern in (r"/work/", r"/tmp/", r"/home/", r"/root/", r"/Users/", r"[A-Za-z]:\\\\Users"):
        assert not re.search(pattern, raw), f"{name}: contains a machine path ({pattern})"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    assert "widgets" not in nb.metadata
    first = nb.cells[0]
    assert first.cell_type == "markdown" and "real models" in first.source.lower(), \
        f"{name}: the first cell should say how to use real models"


# ------------------------------------------------------------------------------------------ executed


def test_kernel_is_this_environment(executed: dict[str, Executed]) -> None:
    """The ``python3`` kernelspec of this environment is found, and it runs this interpreter."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    assert Path(spec.resource_dir).resolve().is_relative_to(Path(sys.prefix).resolve()) or spec.argv[0] == sys.executable
    for run in executed.values():
        assert run.kernel.get("prefix") == sys.prefix, run.kernel
        assert Path(run.kernel["executable"]).resolve() == Path(sys.executable).resolve()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_without_error(executed: dict[str, Executed], name: str) -> None:
    run = executed[name]
    assert run.error is None, run.error[-4000:]
    errors = [o for o in _outputs(run.notebook) if o.get("output_type") == "error"]
    assert not errors, errors
    code = [c for c in run.notebook.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "a cell did not run"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_draws_its_figures(executed: dict[str, Executed], name: str) -> None:
    pngs = [o for o in _outputs(executed[name].notebook) if "image/png" in o.get("data", {})]
    assert len(pngs) >= MIN_FIGURES[name], f"{name}: {len(pngs)} figures"
    for o in pngs:
        assert len(o["data"]["image/png"]) > 5_000  # base64 of a real picture, not an empty canvas


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_prints_no_warning_or_traceback(executed: dict[str, Executed], name: str) -> None:
    stderr = "".join(o.get("text", "") for o in _outputs(executed[name].notebook) if o.get("name") == "stderr")
    assert "Traceback" not in stderr and "Warning" not in stderr, stderr[-2000:]


def test_notebooks_show_what_they_promise(executed: dict[str, Executed]) -> None:
    def text(name: str) -> str:
        parts = []
        for o in _outputs(executed[name].notebook):
            parts.append(o.get("text", ""))
            parts.append(o.get("data", {}).get("text/plain", ""))
        return "\n".join(parts)

    ask = text("01_ask.ipynb")
    assert "No: the Great Wall is not visible" in ask
    assert "supports" in ask and "contradicts" in ask and "S2 ✓" in ask and "S2 ✗" in ask
    assert "cost_usd" in ask and "latency_s" in ask
    prov = text("02_provenance.ipynb")
    assert "stated_in" in prov and "generated_by" in prov and "governed_by" in prov
    assert "run.prov.json" in prov and "run.graphml" in prov and "GraphML read back" in prov
    assert "interactive viewer:" in prov
    viewers = [o["data"]["text/html"] for o in _outputs(executed["02_provenance.ipynb"].notebook)
               if "text/html" in o.get("data", {}) and "council-graph" in o["data"]["text/html"]]
    assert len(viewers) == 1 and viewers[0].startswith("<iframe srcdoc=")  # the interactive graph, inline
    mon = text("03_monitoring.ipynb")
    assert "degraded" in mon and "reliability" in mon and "cirrus: reliability" in mon
    assert "model quality" in mon  # the council stats table
    ev = text("04_eval.ipynb")
    assert "single:m90" in ev and "majority" in ev and "ci_low" in ev and "set accuracy" in ev
    assert "REGRESSION" in ev and "McNemar p" in ev


async def test_sync_calls_inside_an_event_loop_are_refused_outside_jupyter() -> None:
    """Only a Jupyter cell may call the sync API from inside a running loop (the notebooks above do)."""
    from council._sync import _in_jupyter_cell, run_sync

    async def nothing() -> int:
        return 1

    assert not _in_jupyter_cell()
    with pytest.raises(RuntimeError, match="use the a-prefixed async one"):
        run_sync(nothing())
