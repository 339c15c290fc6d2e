"""Startup stays light: the commands a user types most never import litellm or langgraph.

litellm and langgraph each cost seconds to import, so council imports them lazily, only where a model is
called (``council.gateway``) or a graph is built. These tests pin that down by what ends up in
``sys.modules`` of a fresh interpreter, never by timing (``benchmarks/bench_startup.py`` measures time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path



HEAVY = ("litellm", "langgraph", "sqlmodel", "networkx")

_CLI_PROBE = """
import json, sys
sys.argv = ["council", *json.loads(sys.argv[1])]
import council.cli
code = 0
try:
    council.cli.app()  # the CLI itself; main() adds only the exit without interpreter teardown
except SystemExit as exc:
    code = exc.code or 0
print("\\n@@modules@@" + json.dumps({"exit": code, "modules": sorted(
    m for m in {heavy!r} if m in sys.modules)}))
""".replace("{heavy!r}", repr(HEAVY))


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "COUNCIL_CONFIG"}
    env["COUNCIL_DB"] = str(tmp_path / "env-default.db")
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    return env


def _probe(code: str, args: list[str], tmp_path: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], env=_env(tmp_path), capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("@@modules@@")), None)
    assert line is not None, f"no probe output:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(line.removeprefix("@@modules@@"))


def _cli(args: list[str], tmp_path: Path) -> dict:
    return _probe(_CLI_PROBE, [json.dumps(args)], tmp_path)


def test_help_imports_no_heavy_dependency(tmp_path: Path) -> None:
    out = _cli(["--help"], tmp_path)
    assert out["exit"] == 0
    assert out["modules"] == [], f"`council --help` imported {out['modules']}"


def test_runs_imports_neither_litellm_nor_langgraph(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    out = _cli(["runs", "--db", str(db)], tmp_path)
    assert out["exit"] == 0
    assert "litellm" not in out["modules"]
    assert "langgraph" not in out["modules"]


def test_import_council_is_light(tmp_path: Path) -> None:
    code = ("import json, sys, council\n"
            f"print('@@modules@@' + json.dumps({{'modules': sorted(m for m in {HEAVY!r} if m in sys.modules)}}))")
    out = _probe(code, [], tmp_path)
    assert out["modules"] == [], f"`import council` imported {out['modules']}"
