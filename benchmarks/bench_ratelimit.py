"""Rate-limit benchmark: a batch against a provider that enforces a request rate per model, with and without
council's rate limits, in one and two processes.

Setup: the scripted OpenAI-compatible server plays three members (m-a, m-b, m-c; 50 ms latency) that agree
on every claim (so a claim costs exactly three calls, one per member, and no adjudicator), each limited to
``--provider-rpm`` requests per minute (600) counted over a 1-second moving window (10 requests in any
second: the same rate as a per-minute limit, without a benchmark lasting minutes); above it, a 429 with
Retry-After. A fourth member, m-spare, is unlimited and costs five times as much: it is the members'
fallback, as a pricier model that changes who sits on the panel. Every scenario runs ``council check`` as a
subprocess on ``--claims`` claims (120) at ``--concurrency`` (16) with a fresh SQLite database.

Scenarios:
- no limits, the provider does not announce its quota, the policy's default ``rate_limit_wait_s`` (60 s):
  429s are waited out (Retry-After) and retried;
- the same with ``rate_limit_wait_s = 0``: every 429 falls back at once (today's behaviour before limits);
- no limits, the provider announces its remaining quota (``x-ratelimit-*`` headers): adaptive pauses only;
- ``rps = --client-rps`` (8) per member in memory, 1 process; in memory with ``-p 2`` (each process counts
  alone: together they exceed it); in Redis with ``-p 2`` (one shared limit).

Columns: wall = first request sent to last answer, seen by the server (process start-up excluded);
minimum = calls per model / the configured rate (or / the provider's rate without limits); 429s = requests
the provider refused; fallbacks = answers served by m-spare; cost = the sum of the call records.

    python benchmarks/bench_ratelimit.py [--claims 120] [--concurrency 16] [--provider-rpm 600] [--client-rps 8]
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
import uuid
from pathlib import Path
from typing import Any

MEMBERS = ("m-a", "m-b", "m-c")
REDIS = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parent.parent


def script(provider_rpm: int, headers: bool) -> dict[str, Any]:
    content = {"answer": "It is true.", "label": "SUPPORTED", "confidence": 0.8,
               "claims": [{"text": "The claim is true.", "confidence": 0.8}]}
    limited = {"rpm": provider_rpm, "rpm_window_s": 1.0, "rate_headers": headers}
    models = {m: {"latency": 0.05, **limited, "answers": [{"content": content}]} for m in MEMBERS}
    models["m-spare"] = {"latency": 0.05, "answers": [{"content": content}]}
    models["judge"] = {"latency": 0.05, "answers": [{"content": {
        "answer": "Supported.", "label": "SUPPORTED", "confidence": 0.8, "supported": ["C1"], "contradicted": [],
        "rationale": "scripted"}}]}
    return {"seed": 1, "models": models}


def config_toml(base_url: str, *, client_rps: int | None, storage: str | None, wait_s: float | None) -> str:
    prices = {"m-a": 1.0, "m-b": 1.0, "m-c": 1.0, "m-spare": 5.0, "judge": 1.0}
    lines = ['embedding = "lexical"', ""]
    for i, (name, price) in enumerate(prices.items()):
        lines += [f'[models."{name}"]', f'model = "openai/{name}"', f'api_base = "{base_url}"',
                  f"quality = {90 - 10 * i}", f'provider = "prov-{name}"', f"input_usd_per_mtok = {price}",
                  f"output_usd_per_mtok = {2 * price}", ""]
    lines += ["[policies.fact_check]", 'allowed_models = ["m-a", "m-b", "m-c", "m-spare"]', "timeout_s = 30.0"]
    if wait_s is not None:
        lines.append(f"rate_limit_wait_s = {wait_s}")
    lines += ["", "[policies.adjudication]", 'allowed_models = ["judge"]', ""]
    if client_rps is not None:
        lines += ["[rate_limits]", f'namespace = "bench-{uuid.uuid4().hex[:8]}"']
        if storage:
            lines.append(f'storage = "{storage}"')
        for m in MEMBERS:
            lines += [f'[rate_limits.models."{m}"]', f"rps = {client_rps}"]
    return "\n".join(lines) + "\n"


def run_scenario(args: argparse.Namespace, tmp: Path, name: str, *, headers: bool, client_rps: int | None,
                 storage: str | None, processes: int, wait_s: float | None) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import create_engine, text

    from council.testing import ScriptedServer

    server = ScriptedServer(script(args.provider_rpm, headers)).start()
    try:
        cfg = tmp / f"{name}.toml"
        cfg.write_text(config_toml(server.base_url, client_rps=client_rps, storage=storage, wait_s=wait_s))
        claims = tmp / f"{name}.jsonl"
        claims.write_text("".join(json.dumps({"id": f"c{i}", "claim": f"Bridge {i} opened in {1800 + i}."}) + "\n"
                                  for i in range(args.claims)))
        db = f"sqlite:///{tmp / name}.db"
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "council.batch", str(claims), "--config", str(cfg), "--db", db,
                               "-j", str(args.concurrency), "-p", str(processes), "--quiet", "--json", "--exit-zero"],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        process_wall = time.monotonic() - started
        if proc.returncode != 0:
            raise SystemExit(f"{name}: council check failed: {proc.stderr[-2000:]}")
        report = json.loads(proc.stdout)
        sent = [r for r in server.requests if r.model in (*MEMBERS, "m-spare")]
        wall = max(r.finished for r in sent) - min(r.started for r in sent)
        stats = server.stats()
    finally:
        server.stop()
    with create_engine(db).connect() as conn:
        cost = conn.execute(text("SELECT COALESCE(SUM(cost_usd), 0) FROM calls")).scalar()
        fallbacks = conn.execute(text("SELECT COUNT(*) FROM calls WHERE status = 'ok' AND model != model_requested")).scalar()
        queued = conn.execute(text("SELECT COALESCE(MAX(queued_s), 0) FROM calls")).scalar()
        owners = conn.execute(text("SELECT COUNT(DISTINCT finished_by) FROM batch_items")).scalar()
    rate = client_rps if client_rps is not None else args.provider_rpm / 60.0
    minimum = args.claims / rate
    return {"scenario": name, "processes": processes, "worked": owners, "wall_s": wall, "minimum_s": minimum,
            "ratio": wall / minimum, "429s": sum(stats.get("rpm_refused", {}).values()), "fallbacks": fallbacks,
            "cost_usd": cost, "max_queued_s": queued, "process_wall_s": process_wall,
            "full": report["counts"].get("full", 0), "claims": args.claims}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", type=int, default=120)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--provider-rpm", type=int, default=600)
    parser.add_argument("--client-rps", type=int, default=8)
    parser.add_argument("--only", default=None, help="run only the scenarios whose name contains this")
    args = parser.parse_args()
    scenarios = [
        ("no limits, wait 60 s", dict(headers=False, client_rps=None, storage=None, processes=1, wait_s=None)),
        ("no limits, wait 0 s", dict(headers=False, client_rps=None, storage=None, processes=1, wait_s=0)),
        ("no limits, quota headers", dict(headers=True, client_rps=None, storage=None, processes=1, wait_s=None)),
        ("limits in memory", dict(headers=False, client_rps=args.client_rps, storage=None, processes=1, wait_s=None)),
        ("limits in memory, -p 2", dict(headers=False, client_rps=args.client_rps, storage=None, processes=2, wait_s=None)),
        ("limits in Redis, -p 2", dict(headers=False, client_rps=args.client_rps, storage=REDIS, processes=2, wait_s=None)),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, kw) in enumerate(scenarios):
            if args.only and args.only not in name:
                continue
            rows.append(run_scenario(args, Path(tmp), f"s{i}", **kw) | {"scenario": name})
            print(f"done: {name}", file=sys.stderr, flush=True)
    print(f"\n{args.claims} claims x 3 members at concurrency {args.concurrency}; provider {args.provider_rpm} rpm per "
          f"member (1-s window); limits: rps {args.client_rps} per member; load average {os.getloadavg()[0]:.1f}\n")
    print("| scenario | processes (worked) | wall s | minimum s | ratio | 429s | fallbacks | cost USD | max queued s | full |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scenario']} | {r['processes']} ({r['worked']}) | {r['wall_s']:.1f} | {r['minimum_s']:.1f} | "
              f"{r['ratio']:.2f} | {r['429s']} | {r['fallbacks']} | {r['cost_usd']:.4f} | {r['max_queued_s']:.1f} | "
              f"{r['full']}/{r['claims']} |")


if __name__ == "__main__":
    main()
