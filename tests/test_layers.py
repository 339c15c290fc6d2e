"""The package's layers point down only, with no import cycle anywhere, and only the gateway imports
litellm: import-linter's contracts in pyproject.toml, checked here so that a violation fails the suite."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
         "sys.exit(lint_imports(no_cache=True, no_logo=True))"],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )


def test_contracts_are_declared() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert {c["type"] for c in contracts} >= {"layers", "acyclic_siblings", "forbidden"}
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    assert layers[0] == "council.cli" and layers[-2] == "council.config"


def test_import_linter_contracts_hold() -> None:
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "BROKEN" not in out.stdout and out.stdout.count("KEPT") >= 4


def test_an_upward_import_breaks_the_contracts(tmp_path: Path) -> None:
    """The check is live: a copy of the package with one upward import (config -> pipeline) fails it."""
    import shutil

    shutil.copytree(ROOT / "council", tmp_path / "council", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    policy = tmp_path / "council" / "config" / "policy.py"
    policy.write_text(policy.read_text() + "\n\ndef _upward():\n    from council.pipeline import engine\n")
    out = _lint(tmp_path)
    assert out.returncode != 0
    assert "council.config.policy -> council.pipeline.engine" in out.stdout
