"""Parallelism benchmark: does a council's wall time follow its critical path, not the sum of its calls?

Setup: the scripted OpenAI-compatible server (``council.testing.ScriptedServer``, loopback only) plays
three members with latencies 0.3, 0.6 and 0.9 s and an adjudicator ("judge") of 0.3 s. Members are asked
in parallel (LangGraph ``Send`` fan-out), then the adjudicator runs, so the critical path is
0.9 + 0.3 = 1.2 s; asking them one after another would take 0.3 + 0.6 + 0.9 + 0.3 = 2.1 s.

One member contradicts the other two and the research policy sets ``vote_settle_at = 1.0``, so the
weighted vote never settles the dispute and every run consults the adjudicator; everything else is the
shipped default (embedding "auto", a SQLite file in a temporary directory).

Measured: ``time.perf_counter`` around ``Council.ask``, which also covers planning, claim clustering, the
SQLite store writes and reading the run back. One cold run is reported on its own (it pays one-off setup:
importing litellm and langgraph, compiling the graph, loading the embedder, opening HTTP clients), then
``--runs`` warm runs on the same Council.

Goal: the median warm wall time over the critical path is at most 1.05 (MISS otherwise; the exit status
is 0 either way, this is a measurement, not a test).

    python benchmarks/bench_parallel.py [--runs 10] [--goal 1.05]
"""

from __future__ import annotations

import os

# litellm fetches its model cost map from the network at import unless told otherwise.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MEMBER_LATENCIES = {"m-a": 0.3, "m-b": 0.6, "m-c": 0.9}
JUDGE_LATENCY = 0.3
CRITICAL_PATH_S = max(MEMBER_LATENCIES.values()) + JUDGE_LATENCY
SEQUENTIAL_S = sum(MEMBER_LATENCIES.values()) + JUDGE_LATENCY
QUESTION = "Is the Great Wall of China visible from low Earth orbit with the naked eye?"


def _answer(text: str, claims: list[tuple[str, float]]) -> dict[str, Any]:
    return {"answer": text, "claims": [{"text": t, "confidence": c} for t, c in claims]}


def script() -> dict[str, Any]:
    """Three members, one of whom contradicts the other two, and the judge."""
    replies = {
        "m-a": _answer("No, it is not visible.", [
            ("The Great Wall is not visible to the naked eye from low Earth orbit.", 0.9),
            ("The wall is only about 6 m wide.", 0.8)]),
        "m-b": _answer("Yes.", [("The Great Wall is visible to the naked eye from low Earth orbit.", 0.6)]),
        "m-c": _answer("No.", [("The Great Wall is not visible to the naked eye from low Earth orbit.", 0.85)]),
    }
    models: dict[str, Any] = {
        name: {"latency": MEMBER_LATENCIES[name], "answers": [{"content": replies[name]}]} for name in MEMBER_LATENCIES
    }
    models["judge"] = {"latency": JUDGE_LATENCY, "answers": [{"content": {
        "answer": "No: the Great Wall is not visible to the naked eye from low Earth orbit.",
        "confidence": 0.8, "supported": ["C1"], "contradicted": [], "rationale": "scripted"}}]}
    return {"seed": 3, "models": models}


def config(base_url: str) -> dict[str, Any]:
    """Three members of distinct providers and one adjudicator, all served by the scripted server."""
    def entry(name: str, quality: float, provider: str) -> dict[str, Any]:
        return {"model": f"openai/{name}", "api_base": base_url, "quality": quality, "provider": provider,
                "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}

    return {
        "models": {
            "m-a": entry("m-a", 80, "prov-a"),
            "m-b": entry("m-b", 70, "prov-b"),
            "m-c": entry("m-c", 60, "prov-c"),
            "judge": entry("judge", 90, "prov-j"),
        },
        "policies": {
            # A disputed claim is never settled by the vote alone (posterior < 1 always), so every run
            # goes member -> adjudicator: the critical path below holds even as reliabilities are learned.
            "research": {"allowed_models": list(MEMBER_LATENCIES), "panel_size": 3, "timeout_s": 10.0,
                         "vote_settle_at": 1.0},
            "adjudication": {"allowed_models": ["judge"], "timeout_s": 10.0},
        },
    }


def timed_ask(council: Any) -> float:
    """Wall seconds of one ``Council.ask``; fails loudly unless all four calls succeeded."""
    start = time.perf_counter()
    result = council.ask(QUESTION)
    wall = time.perf_counter() - start
    ok = [c for c in result.calls if c.status == "ok"]
    if result.verdict is None or result.verdict.degraded or len(ok) != 4 or len(result.calls) != 4:
        # The critical path assumes three member calls and one adjudicator call, all successful.
        raise SystemExit(f"run {result.run_id} was not 3 member calls + 1 adjudicator call, all ok: "
                         f"status={result.status}, calls={[(c.model, c.status, c.error_kind) for c in result.calls]}")
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="warm runs after the cold one (default 10)")
    parser.add_argument("--goal", type=float, default=1.05, help="max median wall/critical-path ratio (default 1.05)")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")  # others' work skews timings
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    from rich.console import Console
    from rich.table import Table

    import council
    from council.testing import ScriptedServer

    # Piped output (e.g. for a README) gets 100 columns rather than rich's 80, so the table does not wrap.
    console = Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=100)
    with tempfile.TemporaryDirectory(prefix="council-bench-") as tmp, ScriptedServer(script()) as srv:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        c = council.Council(config(srv.base_url), db=db)
        cold = timed_ask(c)
        walls = [timed_ask(c) for _ in range(args.runs)]
        peak = srv.max_in_flight
        c.store.engine.dispose()  # release the SQLite file before the temp directory goes

    ratios = [w / CRITICAL_PATH_S for w in walls]
    table = Table(title=f"Council.ask wall time vs its critical path ({CRITICAL_PATH_S:.1f} s)",
                  caption=f"ratio: wall / critical path; overhead: wall - critical path;\n"
                          f"seq. ratio: wall / {SEQUENTIAL_S:.1f} s, the sum of all four latencies")
    for col in ("run", "wall s", "critical path s", "ratio", "overhead ms", "seq. ratio"):
        table.add_column(col, justify="right")

    def row(name: str, wall: float, **style: Any) -> None:
        table.add_row(name, f"{wall:.3f}", f"{CRITICAL_PATH_S:.1f}", f"{wall / CRITICAL_PATH_S:.3f}",
                      f"{(wall - CRITICAL_PATH_S) * 1000:.0f}", f"{wall / SEQUENTIAL_S:.3f}", **style)

    row("cold", cold, style="dim")
    table.add_section()
    for i, w in enumerate(walls, start=1):
        row(str(i), w)
    table.add_section()
    row("median", statistics.median(walls), style="bold")
    row("max", max(walls), style="bold")
    console.print(table)
    med = statistics.median(ratios)
    verdict = "PASS" if med <= args.goal else "MISS"
    console.print(f"{verdict}: median ratio {med:.3f} (max {max(ratios):.3f}) over {args.runs} warm runs; goal <= {args.goal:.2f}")
    console.print(f"contrast: the four calls one after another would take {SEQUENTIAL_S:.1f} s "
                  f"(ratio {SEQUENTIAL_S / CRITICAL_PATH_S:.2f})")
    console.print(f"peak chat requests in flight at the scripted server: {peak}")
    console.print(f"host: {os.cpu_count()} CPUs, 1-min load average {load:.2f} at start; Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
