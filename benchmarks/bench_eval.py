"""The eval harness on a simulated panel of known accuracies and prices: does every arm land within its
interval of the truth, and what does the harness itself cost?

Part 1. ``--items`` labelled statements; three scripted members right on each item with probability 0.90,
0.75 and 0.60 (independent Bernoulli draws: realized accuracies vary around the set ones, as they would),
each stating its set accuracy as its confidence, with prices that fall with accuracy; a judge right with
probability 0.80. The arms: the three single models, the plain majority and the council (``--recipes``
adds every other recipe in graphs/ as an arm; the simulated members do not play reviewers, revisers or a
strong tier, so those arms only show what a recipe costs when its extra stage fails: bench_deliberation.py
measures the recipes themselves). The truth per arm: a single
model's set accuracy; the majority's P(at least 2 of 3 right) = computed from the set accuracies; the
council has no closed form (learned weights, an adjudicator), so only its measured figures are shown.

Part 2. Overhead: process CPU seconds per item of ``council.evaluate`` (five arms from the shared panel)
against running the same councils directly (``Council.acheck`` on each item, same concurrency, fresh
databases), both with the scripted server in this process.

    python benchmarks/bench_eval.py [--items 200] [--overhead-items 100] [--repeats 4] [--seed 11] [-j 8] [--skip-arms] [--recipes]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ACC = {"m90": 0.90, "m75": 0.75, "m60": 0.60}
PRICES = {"m90": (5.0, 15.0), "m75": (1.0, 3.0), "m60": (0.2, 0.6), "judge": (3.0, 10.0)}


def majority_truth(acc: list[float]) -> float:
    a, b, c = acc
    return a * b * c + a * b * (1 - c) + a * (1 - b) * c + (1 - a) * b * c


def part1(args: argparse.Namespace, tmp: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    import council
    from council.eval.arms import known_recipes
    from council.testing import ScriptedServer
    from council.testing.simulated import simulated_panel

    sim = simulated_panel(args.items, ACC, prices=PRICES, seed=args.seed, exact=False)
    recipes = [r for r in known_recipes() if r != "council"] if args.recipes else []
    arms = [f"single:{m}" for m in ACC] + ["majority", "council"] + recipes
    with ScriptedServer(sim.script) as srv:
        golden = sim.write_golden(tmp / "golden.jsonl")
        t0 = time.perf_counter()
        report = council.evaluate(golden, task="check", arms=",".join(arms), config=sim.config(srv.base_url),
                                  db=f"sqlite:///{tmp / 'part1.db'}", concurrency=args.j)
        wall = time.perf_counter() - t0
    truth = {f"single:{m}": a for m, a in ACC.items()} | {"majority": majority_truth(list(ACC.values()))}
    t = Table("arm", "truth", "accuracy", "95% interval", "truth inside", "$ / correct", "$ alone", "p50 s",
              "ECE", "escalated", title=f"Simulated panel, {args.items} items (seed {args.seed})")
    for a in report.arms:
        tr = truth.get(a.arm)
        inside = "n/a" if tr is None or a.ci_low is None else ("yes" if a.ci_low <= tr <= (a.ci_high or 0) else "NO")
        t.add_row(a.arm, "n/a" if tr is None else f"{tr:.3f}", f"{a.accuracy:.3f}",
                  f"{a.ci_low:.3f}-{a.ci_high:.3f}" if a.ci_low is not None else "n/a",
                  inside, f"{a.cost_per_correct_usd:.6f}" if a.cost_per_correct_usd else "n/a", f"{a.cost_usd:.4f}",
                  f"{a.latency_p50_s:.2f}" if a.latency_p50_s is not None else "n/a",
                  f"{a.ece:.3f}" if a.ece is not None else "n/a",
                  f"{100 * a.escalation_rate:.1f}%" if a.escalation_rate is not None else "")
    con = Console(width=200)
    con.print(t)
    realized = ", ".join(f"{m} {sum(r) / len(r):.3f}" for m, r in sim.right.items())
    con.print(f"realized member accuracies: {realized}")
    con.print(f"eval spent ${report.spent_usd:.4f}; the arms run alone would have cost ${report.as_if_alone_usd:.4f} "
              f"(shared member calls paid once); wall {wall:.1f} s")


async def _direct(config: dict, golden: list[dict], db: str, concurrency: int) -> None:
    from council.pipeline.engine import Council

    c = Council(config, db=db)
    sem = asyncio.Semaphore(concurrency)

    async def one(row: dict) -> None:
        async with sem:
            await c.acheck(row["claim"])

    await asyncio.gather(*(one(r) for r in golden))


def part2(args: argparse.Namespace, tmp: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    import council
    from council._sync import run_sync
    from council.testing import ScriptedServer
    from council.testing.simulated import simulated_panel

    n = args.overhead_items
    sim = simulated_panel(n, ACC, prices=PRICES, seed=args.seed + 1)
    warm = simulated_panel(5, ACC, prices=PRICES, seed=args.seed + 2)
    cpu: dict[str, list[float]] = {}
    wall: dict[str, list[float]] = {}
    with ScriptedServer(sim.script) as srv, ScriptedServer(warm.script) as wsrv:
        golden = sim.write_golden(tmp / "overhead.jsonl")
        # warm-up: imports, first connections, graph compilation
        council.evaluate(warm.write_golden(tmp / "warm.jsonl"), arms="majority,council", config=warm.config(wsrv.base_url),
                         db=f"sqlite:///{tmp / 'warm.db'}", concurrency=args.j)
        runs = {
            "Council.acheck per item (the councils alone)":
                lambda k: run_sync(_direct(sim.config(srv.base_url), sim.golden, f"sqlite:///{tmp / f'direct{k}.db'}", args.j)),
            "council.evaluate, 5 arms from the shared panel":
                lambda k: council.evaluate(golden, arms="single:m90,single:m75,single:m60,majority,council",
                                           config=sim.config(srv.base_url), db=f"sqlite:///{tmp / f'eval{k}.db'}",
                                           concurrency=args.j),
        }
        for k in range(args.repeats):  # alternate the order, fresh databases each time
            for label in (list(runs) if k % 2 == 0 else list(runs)[::-1]):
                c0, w0 = time.process_time(), time.perf_counter()
                runs[label](k)
                cpu.setdefault(label, []).append(time.process_time() - c0)
                wall.setdefault(label, []).append(time.perf_counter() - w0)
    rows = [(label, statistics.median(cpu[label]), statistics.median(wall[label])) for label in runs]
    t = Table("run", "items", "CPU s (median)", "CPU ms / item", "wall s", title=f"Harness overhead, median of {args.repeats} alternating runs")
    for label, cpu, wall in rows:
        t.add_row(label, str(n), f"{cpu:.2f}", f"{1000 * cpu / n:.1f}", f"{wall:.1f}")
    con = Console(width=200)
    con.print(t)
    extra = (rows[1][1] - rows[0][1]) / n
    con.print(f"harness overhead: {1000 * extra:.1f} ms CPU per item ({100 * extra * n / rows[0][1]:.0f}% over the councils alone); "
              f"load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--overhead-items", type=int, default=100)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("-j", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=4, help="overhead runs of each kind, alternating")
    ap.add_argument("--skip-arms", action="store_true", help="only measure the overhead")
    ap.add_argument("--recipes", action="store_true", help="also every other recipe in graphs/ as an arm")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as d:
        if not args.skip_arms:
            part1(args, Path(d))
        part2(args, Path(d))


if __name__ == "__main__":
    main()
