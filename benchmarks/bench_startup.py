"""Startup benchmark: ``council --help`` and ``council runs`` must not import litellm or langgraph.

Both are what a user types first and most often; importing litellm (and its provider SDKs) or langgraph
would cost seconds each time. council imports them lazily, only where a model is called or a graph is
built, so these commands should cost little more than Python itself.

Measured, each as a fresh subprocess, median of ``--repeat`` runs after one untimed warm-up (byte code
compiled, files cached): ``python -c pass`` (the baseline), ``python -c "import council"``,
``council --help`` and ``council runs`` (against a temporary empty database given by COUNCIL_DB), plus,
for contrast, ``python -c "import litellm, langgraph.graph"``: the import cost that ``council ask`` pays
and the other commands avoid. For each row a separate subprocess runs the same command in-process and
reports which of litellm, langgraph and sqlmodel ended up in ``sys.modules``.

Goal: neither ``council --help`` nor ``council runs`` imports litellm or langgraph (PASS/MISS line; the
exit status is 0 either way, this is a measurement, not a test). Nothing here touches the network.

    python benchmarks/bench_startup.py [--repeat 7]
"""

from __future__ import annotations

import os

# litellm fetches its model cost map from the network at import unless told otherwise; every
# subprocess below inherits this.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

WATCHED = ("litellm", "langgraph", "sqlmodel")
GOAL_FREE_OF = ("litellm", "langgraph")
_MARK = "__council_bench_modules__"

# Runs the CLI in-process with the given arguments, then prints which watched modules were imported.
_CLI_PROBE = f"""
import json, sys
sys.argv = ["council", *json.loads(sys.argv[1])]
import council.cli
try:
    council.cli.app()
except SystemExit:
    pass
print("\\n{_MARK}" + json.dumps({{m: m in sys.modules for m in {WATCHED!r}}}))
"""

_CODE_PROBE = """
import json, sys
exec(sys.argv[1])
print("\\n{mark}" + json.dumps({{m: m in sys.modules for m in {watched!r}}}))
""".format(mark=_MARK, watched=WATCHED)


@dataclass
class Case:
    label: str
    argv: list[str]
    """The command that is timed."""
    probe: list[str]
    """The same work in-process, printing the watched modules."""
    goal: bool = False
    """Whether this row is held to the goal (must not import litellm/langgraph)."""


def council_command() -> list[str]:
    """The installed ``council`` console script next to this interpreter, else ``python -m council``."""
    script = Path(sys.executable).parent / "council"
    if script.exists():
        return [str(script)]
    found = shutil.which("council")
    return [found] if found else [sys.executable, "-m", "council"]


def cases() -> list[Case]:
    py = sys.executable
    council = council_command()

    def code(label: str, src: str) -> Case:
        return Case(label, [py, "-c", src], [py, "-c", _CODE_PROBE, src])

    def cli(args: list[str], goal: bool) -> Case:
        return Case("council " + " ".join(args), [*council, *args], [py, "-c", _CLI_PROBE, json.dumps(args)], goal)

    return [
        code("python -c pass", "pass"),
        code("import council", "import council"),
        cli(["--help"], goal=True),
        cli(["runs"], goal=True),
        code("import litellm, langgraph", "import litellm, langgraph.graph"),
    ]


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)!r} failed with status {proc.returncode}:\n{proc.stderr.strip()}")
    return proc


def median_seconds(argv: list[str], env: dict[str, str], repeat: int) -> float:
    run(argv, env)  # warm-up: compile byte code, fill the page cache, create the database
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run(argv, env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def imported(argv: list[str], env: dict[str, str]) -> dict[str, bool]:
    out = run(argv, env).stdout
    line = next(ln for ln in reversed(out.splitlines()) if ln.startswith(_MARK))
    return json.loads(line.removeprefix(_MARK))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per command; the median is shown (default 7)")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")  # others' work skews timings
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    from rich import box
    from rich.console import Console
    from rich.table import Table

    rows: list[tuple[Case, float, dict[str, bool]]] = []
    with tempfile.TemporaryDirectory(prefix="council-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "COUNCIL_CONFIG"}
        env["COUNCIL_DB"] = str(Path(tmp) / "council.db")
        for case in cases():
            rows.append((case, median_seconds(case.argv, env, args.repeat), imported(case.probe, env)))

    base = rows[0][1]
    table = Table(title=f"startup time, median of {args.repeat} subprocess runs", box=box.SIMPLE_HEAD, pad_edge=False,
                  caption="ratio: median / median of `python -c pass`\n"
                          "litellm? etc.: whether the module is in sys.modules afterwards\n"
                          "import X: python -c 'import X'; the last row (langgraph.graph) is for\n"
                          "contrast: the imports that `council ask` pays and the others avoid")
    table.add_column("command", no_wrap=True)
    for col in ("median s", "ratio"):
        table.add_column(col, justify="right")
    for mod in WATCHED:
        table.add_column(f"{mod}?", justify="center", min_width=len(mod) + 1)
    for case, seconds, mods in rows:
        table.add_row(case.label, f"{seconds:.3f}", f"{seconds / base:.1f}",
                      *("yes" if mods[m] else "no" for m in WATCHED), style="dim" if "litellm" in case.label else None)
    # Piped output (e.g. for a README) gets 100 columns rather than rich's 80, so the table does not wrap.
    console = Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=100)
    console.print(table)
    offenders = [f"{case.label} imports {m}" for case, _, mods in rows if case.goal for m in GOAL_FREE_OF if mods[m]]
    if offenders:
        console.print("MISS: " + "; ".join(offenders))
    else:
        console.print("PASS: neither `council --help` nor `council runs` imports litellm or langgraph")
    console.print(f"host: {os.cpu_count()} CPUs, 1-min load average {load:.2f} at start; Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
