"""Batch benchmark: how close does ``council check`` come to a bare loop of litellm calls, and does its
memory stay flat as the batch grows?

Setup: the scripted OpenAI-compatible server (``python -m council.testing.server``, its own process on
loopback) plays three members and an adjudicator, each answering after ``--latency`` seconds (0.1 s). The
members disagree on every claim and the vote never settles alone (``vote_settle_at = 1.0``), so every
claim costs exactly four calls: 3 members + 1 adjudicator.

Measured, each in a fresh subprocess (imports and one-off warm-up outside the timed part):

- throughput: ``council.check_many`` on ``--claims`` claims (1,000) at ``--concurrency`` councils (64),
  SQLite store, against a bare loop of ``litellm.acompletion`` calls making the same number of calls at
  the same concurrency (an ``asyncio.Semaphore``), same prompt sizes. Ratio = bare wall / batch wall
  (goal >= 0.8). Run ``--repeat`` times, alternating, best of each reported (others' work on a shared
  machine only ever slows a run down);
- the same batch with ``--processes`` (2) processes sharing the store (``check_many(processes=N)``, as
  ``council check -p N``): one process is CPU-bound, so this is how a batch uses more cores. Its wall
  time includes starting the helper processes (their imports are not warmed up);
- peak RSS (``resource.getrusage(...).ru_maxrss``) of the batch process for ``--claims`` and
  ``--big-claims`` claims (10,000): goal flat, under 500 MB;
- database work per claim: commits and SQL statements (SQLAlchemy engine events) of the one-process run;
- where the batch's CPU goes (``--profile``, a separate profiled run: cProfile's own time per function,
  summed by where the function lives: litellm with its HTTP stack, the store (SQLAlchemy, sqlmodel, the
  drivers, council.store), LangGraph, the rest of council, and other (asyncio, pydantic, the stdlib)).

``--tree DIR`` runs the batch workers on another checkout of council (``git worktree add DIR <commit>``),
so a before/after comparison is two runs of this same script; the bare loop is the same in both.

    python benchmarks/bench_batch.py [--claims 1000] [--big-claims 10000] [--concurrency 64] [--latency 0.1]
                                     [--processes 2] [--repeat 1] [--profile] [--tree DIR]
"""

from __future__ import annotations

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MEMBERS = {"m-a": "SUPPORTED", "m-b": "REFUTED", "m-c": "NOT_ENOUGH_INFO"}
RSS_GOAL_MB = 500.0
RATIO_GOAL = 0.8


def script(latency: float) -> dict[str, Any]:
    models: dict[str, Any] = {
        name: {"latency": latency, "answers": [{"content": {
            "answer": f"The claim is {label.lower().replace('_', ' ')}.", "label": label, "confidence": 0.7,
            "claims": [{"text": f"Member {name} finds the claim {label.lower()}.", "confidence": 0.7}]}}]}
        for name, label in MEMBERS.items()
    }
    models["judge"] = {"latency": latency, "answers": [{"content": {
        "answer": "Supported on balance.", "label": "SUPPORTED", "confidence": 0.8, "supported": ["C1"],
        "contradicted": [], "rationale": "scripted"}}]}
    return {"seed": 1, "models": models}


def config_toml(base_url: str) -> str:
    lines = []
    for i, name in enumerate([*MEMBERS, "judge"]):
        lines += [f'[models."{name}"]', f'model = "openai/{name}"', f'api_base = "{base_url}"',
                  f"quality = {90 - 10 * i}", f'provider = "prov-{name}"', "input_usd_per_mtok = 1.0",
                  "output_usd_per_mtok = 2.0", ""]
    lines += ["[policies.fact_check]", f"allowed_models = {json.dumps(list(MEMBERS))}", "timeout_s = 30.0",
              "vote_settle_at = 1.0", "", "[policies.adjudication]", 'allowed_models = ["judge"]', "timeout_s = 30.0", ""]
    return "\n".join(lines)


def write_claims(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"c{i}", "claim": f"Claim {i}: the bridge number {i} opened in {1900 + i % 120}."}) + "\n")


# ---------------------------------------------------------------------------------------- workers

def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


_CPU_GROUPS = (("litellm", ("/litellm/", "/openai/", "/httpx", "/httpcore/", "/aiohttp/", "/tiktoken")),
               ("store", ("/sqlalchemy/", "/sqlmodel/", "sqlite3", "/psycopg", "/council/store/")),
               ("langgraph", ("/langgraph/", "/langchain_core/")), ("council", ("/council/",)))


def _group(filename: str) -> str:
    return next((g for g, marks in _CPU_GROUPS if any(m in filename for m in marks)), "other")


def _cpu_split(profile: Any) -> dict[str, float]:
    """Share of the profiled CPU (own time per function) by where the function lives: litellm with the
    HTTP stack it drives (openai, httpx, aiohttp), the store (SQLAlchemy, sqlmodel, the drivers,
    council.store), LangGraph, the rest of council, other (asyncio, pydantic, the standard library). A
    built-in function's time goes to the code that called it."""
    import pstats

    split = dict.fromkeys([g for g, _ in _CPU_GROUPS] + ["other"], 0.0)
    for (filename, _line, _name), row in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        if filename == "~" and row[4]:  # a built-in: charge its callers
            for (caller_file, _l, _n), caller_row in row[4].items():
                split[_group(caller_file)] += caller_row[2]
        else:
            split[_group(filename)] += row[2]
    total = sum(split.values()) or 1.0
    return {g: v / total for g, v in split.items()}


def worker_batch(claims: str, cfg: str, db: str, concurrency: int, tmp: str, processes: int = 1,
                 profile: bool = False) -> dict[str, Any]:
    import council
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    import asyncio

    from council import acheck_many  # the public API, in this checkout and in older ones (--tree)

    def check_many(*args: Any, **kwargs: Any) -> Any:  # in this thread, so that cProfile sees the work
        return asyncio.run(acheck_many(*args, **kwargs))

    # Warm-up outside the timed part: imports, litellm's HTTP client, wordllama, graph compilation.
    warm = Path(tmp) / "warm.jsonl"
    write_claims(warm, 4)
    check_many(str(warm), config=cfg, db=f"sqlite:///{Path(tmp) / 'warm.db'}", concurrency=4)
    rss_before = _rss_mb()
    sql = {"commits": 0, "statements": 0}
    event.listen(Engine, "commit", lambda conn: sql.__setitem__("commits", sql["commits"] + 1))
    event.listen(Engine, "before_cursor_execute",
                 lambda *a: sql.__setitem__("statements", sql["statements"] + 1))
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile(time.process_time)  # CPU time, not time spent waiting on the network
        prof.enable()
    start = time.perf_counter()
    cpu0 = time.process_time()
    report = check_many(claims, config=cfg, db=f"sqlite:///{db}", concurrency=concurrency, processes=processes)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    if prof is not None:
        prof.disable()
    store = council.Store(f"sqlite:///{db}")
    calls = store.engine.connect().exec_driver_sql("SELECT COUNT(*) FROM calls WHERE status != 'skipped'").scalar()
    return {"wall": wall, "cpu": cpu, "claims": report.checked, "calls": calls, "counts": report.counts,
            "rss_mb": _rss_mb(), "rss_before_mb": rss_before, "commits": sql["commits"],
            "statements": sql["statements"], "cpu_split": _cpu_split(prof) if prof is not None else None}


def worker_bare(base_url: str, calls: int, concurrency: int) -> dict[str, Any]:
    import asyncio

    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    system = "You are one member of a fact-checking council. " * 40  # about the size of the member prompt
    names = [*MEMBERS, "judge"]

    async def run() -> float:
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                await litellm.acompletion(
                    model=f"openai/{names[i % 4]}", api_base=base_url, api_key="x", num_retries=0, max_tokens=600,
                    timeout=30, temperature=0.0,
                    messages=[{"role": "system", "content": system}, {"role": "user", "content": f"Claim {i}: check it."}])

        await asyncio.gather(*(one(i) for i in range(8)))  # warm-up: client, imports
        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(calls)))
        return time.perf_counter() - start

    cpu0 = time.process_time()
    wall = asyncio.run(run())
    return {"wall": wall, "cpu": time.process_time() - cpu0, "calls": calls, "rss_mb": _rss_mb()}


def _subprocess(args: list[str], tree: str | None = None) -> dict[str, Any]:
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = os.pathsep.join([tree, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise SystemExit(f"worker {args[:2]} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", type=int, default=1000)
    parser.add_argument("--big-claims", type=int, default=10000, help="second size for the RSS check (0: skip)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=1, help="alternate bare/batch runs this many times")
    parser.add_argument("--processes", type=int, default=2, help="processes of the multi-process run (1: skip it)")
    parser.add_argument("--profile", action="store_true", help="one more, profiled, run for the CPU split")
    parser.add_argument("--tree", help="run the batch workers on this checkout of council (before/after)")
    parser.add_argument("--worker", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, *rest = args.worker
        if kind == "batch":
            result = worker_batch(rest[0], rest[1], rest[2], int(rest[3]), rest[4], int(rest[5]), rest[6] == "1")
        else:
            result = worker_bare(rest[0], int(rest[1]), int(rest[2]))
        print(json.dumps(result))
        return 0

    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=110)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="council-bench-batch-") as tmp_:
        tmp = Path(tmp_)
        (tmp / "script.json").write_text(json.dumps(script(args.latency)))
        server = subprocess.Popen([sys.executable, "-m", "council.testing.server", "--script", str(tmp / "script.json")],
                                  stdout=subprocess.PIPE, text=True)
        try:
            line = server.stdout.readline() if server.stdout else ""
            if not line.startswith("listening on "):
                raise SystemExit(f"the scripted server did not start: {line!r}")
            base_url = line.split()[-1]
            (tmp / "council.toml").write_text(config_toml(base_url))
            sizes = [args.claims] + ([args.big_claims] if args.big_claims else [])
            for n in sizes:
                write_claims(tmp / f"claims-{n}.jsonl", n)

            def batch(n: int, tag: str, processes: int = 1, profile: bool = False) -> dict[str, Any]:
                return _subprocess(["--worker", "batch", str(tmp / f"claims-{n}.jsonl"), str(tmp / "council.toml"),
                                    str(tmp / f"{tag}.db"), str(args.concurrency), str(tmp), str(processes),
                                    "1" if profile else "0"], args.tree)

            batches, bares, multis = [], [], []
            for i in range(args.repeat):
                b = batch(args.claims, f"run{i}")
                bares.append(_subprocess(["--worker", "bare", base_url, str(b["calls"]), str(args.concurrency)]))
                batches.append(b)
                if args.processes > 1:
                    multis.append(batch(args.claims, f"multi{i}", args.processes))
            big = batch(args.big_claims, "big") if args.big_claims else None
            profiled = batch(args.claims, "profiled", profile=True) if args.profile else None
        finally:
            server.terminate()
            server.wait(timeout=10)

    best_b = min(batches, key=lambda r: r["wall"])
    best_bare = min(bares, key=lambda r: r["wall"])
    ratio = best_bare["wall"] / best_b["wall"]
    t = Table(title=f"council check vs bare litellm.acompletion: {args.claims} claims x (3 members + adjudicator), "
                    f"concurrency {args.concurrency}, latency {args.latency:g} s")
    for col in ("run", "claims", "calls", "wall s", "calls/s", "CPU s", "CPU ms/call", "peak RSS MB"):
        t.add_column(col, justify="right")
    for i, (b, bare) in enumerate(zip(batches, bares), start=1):
        t.add_row(f"bare loop #{i}", "", str(bare["calls"]), f"{bare['wall']:.2f}", f"{bare['calls'] / bare['wall']:.0f}",
                  f"{bare['cpu']:.1f}", f"{bare['cpu'] / bare['calls'] * 1000:.2f}", f"{bare['rss_mb']:.0f}")
        t.add_row(f"council check #{i}", str(b["claims"]), str(b["calls"]), f"{b['wall']:.2f}",
                  f"{b['calls'] / b['wall']:.0f}", f"{b['cpu']:.1f}", f"{b['cpu'] / b['calls'] * 1000:.2f}",
                  f"{b['rss_mb']:.0f}")
    for i, m in enumerate(multis, start=1):
        t.add_row(f"council check -p {args.processes} #{i}", str(m["claims"]), str(m["calls"]), f"{m['wall']:.2f}",
                  f"{m['calls'] / m['wall']:.0f}", f"{m['cpu']:.1f} (parent)", "", f"{m['rss_mb']:.0f} (parent)")
    if big is not None:
        t.add_section()
        t.add_row("council check (big)", str(big["claims"]), str(big["calls"]), f"{big['wall']:.2f}",
                  f"{big['calls'] / big['wall']:.0f}", f"{big['cpu']:.1f}", f"{big['cpu'] / big['calls'] * 1000:.2f}",
                  f"{big['rss_mb']:.0f}")
    console.print(t)
    verdict = "PASS" if ratio >= RATIO_GOAL else "MISS"
    console.print(f"{verdict}: throughput ratio (best bare wall / best batch wall) {ratio:.2f}; goal >= {RATIO_GOAL}")
    if multis:
        mratio = best_bare["wall"] / min(m["wall"] for m in multis)
        console.print(f"{'PASS' if mratio >= RATIO_GOAL else 'MISS'}: with {args.processes} processes "
                      f"(council check -p {args.processes}) the ratio is {mratio:.2f}")
    if big is not None:
        flat = big["rss_mb"] <= RSS_GOAL_MB and big["rss_mb"] <= best_b["rss_mb"] * 1.25
        console.print(f"{'PASS' if flat else 'MISS'}: peak RSS {best_b['rss_mb']:.0f} MB at {args.claims} claims, "
                      f"{big['rss_mb']:.0f} MB at {args.big_claims}; goal flat and < {RSS_GOAL_MB:.0f} MB")
    console.print(f"statuses: {best_b['counts']}" + (f"; big: {big['counts']}" if big else ""))
    per_claim = max(best_b["claims"], 1)
    console.print(f"database work per claim (one process): {best_b['commits'] / per_claim:.1f} commits, "
                  f"{best_b['statements'] / per_claim:.1f} SQL statements")
    if profiled is not None and profiled["cpu_split"]:
        split = profiled["cpu_split"]
        console.print("CPU split (profiled run, own time): " + ", ".join(f"{g} {v:.0%}" for g, v in split.items()))
    if args.tree:
        console.print(f"batch workers ran on the checkout at {args.tree}")
    console.print(f"host: {os.cpu_count()} CPUs, 1-min load average {load:.2f} at start; Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
