"""The README works as written: its shell and Python blocks run, in order, in one fresh directory, as a new
user would paste them (the real ``council`` command, the scripted server over loopback), and its config
and script blocks are valid. A block that cannot run here says why in a marker on the line above it, and
is skipped with that reason:

    <!-- readme-test: skip REASON -->       not run (needs real keys, real models, a fresh install...)
    <!-- readme-test: file NAME -->         written to NAME in the directory, for the blocks after it
    <!-- readme-test: config REASON -->     a council config: validated, not run

The policy table between ``<!-- policies:start -->`` and ``<!-- policies:end -->`` must be exactly what
``council policies --markdown`` prints.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUN = {"bash", "sh", "python"}
NOISE = ("Traceback", "Task was destroyed", "Unclosed client session", "was never awaited", "Unclosed connector")


@dataclass
class Block:
    index: int
    heading: str
    lang: str
    body: str
    marker: str
    line: int

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")
        return f"{self.index:02d}-{slug}-{self.lang or 'text'}"


def readme_blocks() -> list[Block]:
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    heading, i = "", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        m = re.match(r"^```(\w*)\s*$", line)
        if m:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            prev = lines[i - 1] if i else ""
            marker = re.match(r"^<!-- readme-test: (.*) -->$", prev)
            blocks.append(Block(len(blocks), heading, m.group(1), "\n".join(lines[i + 1:end]) + "\n",
                                marker.group(1) if marker else "", i + 1))
            i = end
        i += 1
    return blocks


BLOCKS = [b for b in readme_blocks() if b.lang in RUN | {"toml", "json"}]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("readme")


def _env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("COUNCIL_CONFIG", "FORCE_COLOR", "PYTHONWARNINGS"):
        env.pop(var, None)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        COUNCIL_DB=str(workdir / "default-council.db"), LITELLM_LOCAL_MODEL_COST_MAP="True", COLUMNS="100",
        NO_COLOR="1",
    )
    return env


def _run(argv: list[str], workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run in its own process group, so a server a failed block started in the background is stopped too."""
    p = subprocess.Popen(argv, cwd=workdir, env=_env(workdir), text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=600)
    finally:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if p.poll() is None:
            p.kill()
            p.communicate()
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block_runs_as_written(block: Block, workdir: Path) -> None:
    kind, _, arg = block.marker.partition(" ")
    where = f"README.md line {block.line} ({block.heading})"
    if kind == "skip":
        pytest.skip(f"{where}: {arg}")
    if kind == "file":
        (workdir / arg).write_text(block.body, encoding="utf-8")
    if block.lang == "json":
        json.loads(block.body)
        return
    if block.lang == "toml":
        tables = tomllib.loads(block.body)
        if kind == "config":
            from council.config.settings import config_from_dict

            config_from_dict(tables, source=where)
        return
    assert kind in ("", "file"), f"{where}: unknown marker {block.marker!r}"
    if block.lang == "python":
        script = workdir / f"readme_block_{block.index:02d}.py"
        script.write_text(block.body, encoding="utf-8")
        done = _run([sys.executable, str(script)], workdir)
    else:
        done = _run(["bash", "-e", "-c", block.body], workdir)
    assert done.returncode == 0, f"{where} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    for noise in NOISE:
        assert noise not in done.stderr + done.stdout, f"{where} printed {noise!r}:\n{done.stderr[-3000:]}"
    if block.heading.startswith("Try it in one minute"):
        assert "verdict" in done.stdout and "decided by adjudicator" in done.stdout
        assert re.search(r"^run [0-9a-f]{32} · total cost \$", done.stdout, re.M)
        assert "PROV records to demo-prov.json" in done.stderr and (workdir / "demo-prov.json").is_file()
        assert (workdir / "demo.db").is_file() and not (workdir / "default-council.db").exists()


def test_every_runnable_block_is_run_or_skipped_with_a_reason() -> None:
    blocks = readme_blocks()
    assert any(b.heading.startswith("Try it in one minute") and b.lang == "bash" and not b.marker for b in blocks)
    for b in blocks:
        if b.marker.startswith("skip"):
            assert len(b.marker.split(" ", 1)) == 2 and len(b.marker) > 20, f"line {b.line}: a skip says why"


def test_the_policy_table_is_what_council_policies_prints(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    start, end = "<!-- policies:start -->\n", "<!-- policies:end -->"
    table = text[text.index(start) + len(start):text.index(end)]
    done = subprocess.run([sys.executable, "-m", "council", "policies", "--markdown"], cwd=ROOT, text=True,
                          capture_output=True, env=_env(tmp_path), timeout=120)
    assert done.returncode == 0, done.stderr
    assert table == done.stdout, "README policy table is stale: paste `council policies --markdown` between the markers"
    from council.config.policy import policy_fields

    for f in policy_fields():  # every field is documented, from its own docstring
        if f.name not in ("name", "description"):
            assert f"| `{f.name}` |" in table and f.description and f.description in table
