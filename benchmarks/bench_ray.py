"""Ray engine benchmark: throughput of ``council check --engine ray`` against the local engine, and Ray's
start-up cost, on the same claims, with a projection for a million claims a day.

Setup: the scripted OpenAI-compatible server (loopback, every member answers at once: ``--latency``
seconds, default 0) plays three members and the adjudicator; every claim is settled by the members' vote
(3 model calls a claim). Each configuration checks the same ``--claims`` claims (default 1,000) into a
fresh PostgreSQL database (127.0.0.1:5432, created and dropped here), with ``-j 16`` councils at once in
total:

- ``local -p 1``: one process (``check_many(..., processes=1)``);
- ``local -p 2``: this process and one helper process (``processes=2``);
- ``ray --workers 1`` / ``--workers 2``: a local Ray instance (started and stopped by the batch) with one
  or two actors, the batch's budget in the database ledger.

Measured per configuration: the wall time of the whole batch (Ray's start-up included), the steady rate
(claims per second between 10% and 90% of the batch, from the progress callback: start-up excluded),
the database transactions per claim (``pg_stat_database.xact_commit``), and the CPU per claim of the
process(es) doing the work in that steady part: this process for ``local -p 1`` (less the scripted
server's thread, which runs here too), the actors' processes (read from /proc) for ray; not measured for
``-p 2``. Start-up: the wall time of a batch of one claim, per engine, after a
warm-up batch (so neither pays this process's one-off imports); Ray's own cost is the difference.

Goal (issue 13): a Ray worker's steady rate within 0.9x of one local process. This machine has 2 cores
shared with other work, so two workers (or two processes) cannot double the rate here.

    python benchmarks/bench_ray.py [--claims 1000] [--latency 0] [-j 16]
"""

from __future__ import annotations

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

SERVER = "postgresql://postgres@127.0.0.1:5432"
CLAIMS_PER_DAY = 1_000_000


def script(latency: float) -> dict[str, Any]:
    def member() -> dict[str, Any]:
        return {"latency": latency, "answers": [{"content": {
            "answer": "It is true.", "label": "SUPPORTED", "claims": [{"text": "The claim is true.", "confidence": 0.9}]}}]}

    judge = {"latency": latency, "answers": [{"content": {"answer": "Supported.", "label": "SUPPORTED", "confidence": 0.8,
                                                            "supported": ["C1"], "contradicted": [], "rationale": "s"}}]}
    return {"seed": 1, "models": {"m-a": member(), "m-b": member(), "m-c": member(), "judge": judge}}


def config_toml(base_url: str) -> str:
    lines = ['embedding = "lexical"']
    for name, q, prov in (("m-a", 80, "a"), ("m-b", 70, "b"), ("m-c", 60, "c"), ("judge", 90, "j")):
        lines += [f'\n[models."{name}"]', f'model = "openai/{name}"', f'api_base = "{base_url}"', f"quality = {q}",
                  f'provider = "prov-{prov}"', "input_usd_per_mtok = 1.0", "output_usd_per_mtok = 2.0"]
    lines += ['\n[policies."fact_check"]', 'allowed_models = ["m-a", "m-b", "m-c"]', "timeout_s = 30.0",
              '\n[policies."adjudication"]', 'allowed_models = ["judge"]', "timeout_s = 30.0"]
    return "\n".join(lines) + "\n"


class Database:
    """A fresh PostgreSQL database for one configuration."""

    def __init__(self) -> None:
        import psycopg

        self.name = f"council_bench_{uuid.uuid4().hex[:10]}"
        self.admin = psycopg.connect(f"{SERVER}/postgres", autocommit=True, connect_timeout=5)
        self.admin.execute(f'CREATE DATABASE "{self.name}"')
        self.url = f"{SERVER}/{self.name}"

    def commits(self) -> int:
        return int(self.admin.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s",
                                      (self.name,)).fetchone()[0])

    def close(self) -> None:
        self.admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.admin.close()


def actor_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of every Ray batch actor process on this machine, by pid (Ray titles an
    actor's process ``ray::ClaimWorker...``)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                if not fh.read().startswith(b"ray::ClaimWorker"):
                    continue
            with open(f"/proc/{d}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(d)] = (int(fields[11]) + int(fields[12])) / tick
    return out


SERVER_THREAD: list[int] = []  # the scripted server's thread id (it runs in this process)


def own_cpu() -> float:
    """This process's CPU seconds, less the scripted server thread's: the council's own work."""
    cpu = time.process_time()
    for tid in SERVER_THREAD:
        try:
            with open(f"/proc/self/task/{tid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            cpu -= (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return cpu


def at_time(samples: list[tuple[float, float]], t: float) -> float:
    """The sampled value at time ``t`` (linear between the samples around it)."""
    before = [s for s in samples if s[0] <= t] or samples[:1]
    after = [s for s in samples if s[0] >= t] or samples[-1:]
    (t0, v0), (t1, v1) = before[-1], after[0]
    return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)


def run(name: str, claims: Path, cfg: Path, n: int, jobs: int, **engine: Any) -> dict[str, Any]:
    import threading

    from council.batch import check_many
    from council.store.db import Store

    db = Database()
    samples: list[tuple[float, float]] = []  # (time, CPU seconds of the actors so far)
    stop = threading.Event()

    def sample() -> None:
        seen: dict[int, float] = {}
        while not stop.is_set():
            seen.update(actor_cpu())
            samples.append((time.perf_counter(), sum(seen.values())))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        Store(db.url).engine.dispose()  # the schema, as a user's first command would create it
        marks: list[tuple[float, int, float]] = []  # (time, claims done, this process's own CPU seconds)
        before = db.commits()
        if engine.get("engine") == "ray":
            sampler.start()
        cpu0, t0 = own_cpu(), time.perf_counter()
        report = check_many(claims, config=cfg, db=db.url, concurrency=jobs,
                            on_progress=lambda p: marks.append((time.perf_counter(), p.done, own_cpu())),
                            **engine)
        wall, cpu = time.perf_counter() - t0, own_cpu() - cpu0
        stop.set()
        time.sleep(1.5)  # pg_stat_database is updated asynchronously
        tx = db.commits() - before
    finally:
        stop.set()
        db.close()
    if report.counts.get("full", 0) != n:
        raise SystemExit(f"{name}: not every claim ended full: {report.counts}")

    def at(frac: float) -> tuple[float, int, float]:
        return next(m for m in marks if m[1] >= frac * n)

    (ta, da, ca), (tb, db_, cb) = at(0.1), at(0.9)
    # CPU per claim in the steady part: this process's (local -p 1), or the actors' (ray); none for -p 2
    # (its helper process is not measured).
    if engine.get("engine") == "ray":
        steady_cpu = (at_time(samples, tb) - at_time(samples, ta)) / (db_ - da) if samples and db_ > da else float("nan")
    elif engine.get("processes", 1) == 1:
        steady_cpu = (cb - ca) / (db_ - da) if db_ > da else float("nan")
    else:
        steady_cpu = float("nan")
    return {"name": name, "wall": wall, "rate": (db_ - da) / (tb - ta) if tb > ta else float("nan"),
            "tx_per_claim": tx / n, "cpu_per_claim": cpu / n, "steady_cpu": steady_cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("-j", "--jobs", type=int, default=16)
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]

    from rich.console import Console
    from rich.table import Table

    from council.testing import ScriptedServer

    console = Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=110)
    rows: list[dict[str, Any]] = []
    startup: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="council-bench-ray-") as tmp, ScriptedServer(script(args.latency)) as srv:
        SERVER_THREAD.append(srv._thread.native_id)  # type: ignore[union-attr]
        cfg = Path(tmp) / "council.toml"
        cfg.write_text(config_toml(srv.base_url), encoding="utf-8")
        claims = Path(tmp) / "claims.jsonl"
        claims.write_text("".join(json.dumps({"id": f"c{i}", "claim": f"Bridge number {i} opened in {1000 + i}."}) + "\n"
                                  for i in range(args.claims)), encoding="utf-8")
        one = Path(tmp) / "one.jsonl"
        one.write_text(json.dumps({"id": "x", "claim": "The first bridge opened in 1001."}) + "\n", encoding="utf-8")
        run("warm-up", one, cfg, 1, 1)  # this process's one-off imports (litellm, LangGraph), paid by neither
        for label, engine in (("local", {}), ("ray", {"engine": "ray", "workers": 1})):
            startup[label] = run(f"start-up {label}", one, cfg, 1, 1, **engine)["wall"]
            console.print(f"start-up {label}: {startup[label]:.1f} s", style="dim")
        configs = [("local -p 1", {}), ("ray --workers 1", {"engine": "ray", "workers": 1}),
                   ("local -p 2", {"processes": 2}), ("ray --workers 2", {"engine": "ray", "workers": 2})]
        for name, engine in configs:
            rows.append(run(name, claims, cfg, args.claims, args.jobs, **engine))
            r = rows[-1]  # as it comes, so a run cut short still reports what it measured
            console.print(f"{name}: wall {r['wall']:.1f} s, steady {r['rate']:.2f} claims/s, "
                          f"{r['tx_per_claim']:.1f} DB tx/claim", style="dim")

    base = rows[0]["rate"]
    table = Table(title=f"{args.claims} claims, -j {args.jobs}, 3 calls a claim, member latency {args.latency:g} s, "
                        "PostgreSQL on loopback")
    for col in ("configuration", "wall s", "steady claims/s", "vs local -p 1", "worker CPU ms/claim", "DB tx/claim"):
        table.add_column(col, justify="right")
    for r in rows:
        cpu_ms = "-" if r["steady_cpu"] != r["steady_cpu"] else f"{r['steady_cpu'] * 1000:.0f}"
        table.add_row(r["name"], f"{r['wall']:.1f}", f"{r['rate']:.1f}", f"{r['rate'] / base:.2f}x", cpu_ms,
                      f"{r['tx_per_claim']:.1f}")
    console.print(table)
    console.print(f"start-up (a batch of one claim, wall s): local {startup['local']:.1f}, ray --workers 1 {startup['ray']:.1f} "
                  f"(Ray's own cost: {startup['ray'] - startup['local']:.1f} s)")
    ray1 = next(r for r in rows if r["name"] == "ray --workers 1")["rate"] / base
    console.print(f"{'PASS' if ray1 >= 0.9 else 'MISS'}: one Ray worker at {ray1:.2f}x one local process (goal >= 0.90)")
    ray_cpu = [r["steady_cpu"] for r in rows if r["name"].startswith("ray") and r["steady_cpu"] == r["steady_cpu"]]
    cpu = max(ray_cpu) if ray_cpu else rows[0]["steady_cpu"]
    per_s = CLAIMS_PER_DAY / 86400
    cores = per_s * cpu
    tx = max(r["tx_per_claim"] for r in rows)
    console.print(f"whole-run CPU of local -p 1 (start-up included): {rows[0]['cpu_per_claim'] * 1000:.0f} ms per claim")
    console.print(f"projection: {CLAIMS_PER_DAY:,} claims/day = {per_s:.1f} claims/s; measured {cpu * 1000:.0f} ms of a Ray "
                  f"worker's CPU per claim ({cpu * 1000 / 3:.1f} ms per model call, the whole pipeline) -> {cores:.2f} busy "
                  f"cores, {int(cores / 0.7) + 1} workers at 70% utilisation; database: {tx:.1f} tx/claim x {per_s:.1f} "
                  f"claims/s = {tx * per_s:.0f} tx/s")
    console.print(f"host: {os.cpu_count()} CPUs, 1-min load average {load:.2f} at start; Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
