"""The local demonstration panel on simple true/false claims: how good, how fast.

Runs ``Council().acheck`` (no config: SmolLM2-135M, Gemma-3-270M in completion mode, SmolLM2 sampled, and
SmolLM2 as adjudicator, all on llama.cpp over loopback) on each labelled claim of
``benchmarks/data/claims_tf.jsonl`` (120 general-knowledge statements, half true, half false), one council
at a time, and prints:
- accuracy of each member alone (its own label; NOT_ENOUGH_INFO, no label or a failed member count as wrong),
  of the plain unweighted majority of labels (``verdict.majority_answer``) and of the council verdict;
- seconds per council (mean, median, p90), after the servers have started and answered one warm-up council
  (both shown apart);
- tokens per second per model: completion tokens / call latency over the calls that got a reply. Calls to
  one server queue behind each other (SmolLM2 serves three roles), so this is throughput as a run sees it.

These are tiny models: the table shows the machinery at work, not a council worth trusting.

    python benchmarks/bench_local.py [--limit N] [--db URL_OR_PATH] [--data FILE] [--out results.jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

DATA = Path(__file__).resolve().parent / "data" / "claims_tf.jsonl"
WARM_UP = "Grass is usually green."  # not in the data set


def load_claims(path: Path, limit: int | None) -> list[dict[str, str]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for r in rows:
        if r.get("label") not in ("SUPPORTED", "REFUTED") or not r.get("claim"):
            raise SystemExit(f"{path}: each line needs a claim and a label SUPPORTED or REFUTED: {r}")
    return rows[:limit] if limit else rows


def db_url(db: str | None) -> str:
    if db is None:
        db = str(Path(tempfile.mkdtemp(prefix="council-bench-local-")) / "council.db")
    return db if "://" in db else f"sqlite:///{Path(db).expanduser().resolve()}"


async def run(claims: list[dict[str, str]], url: str, out: Path | None) -> dict[str, Any]:
    from council import Council
    from council.config.local import runtime

    os.environ.pop("COUNCIL_CONFIG", None)  # the point is the built-in local panel
    council = Council(db=url)
    if not council.demo:
        raise SystemExit("Council() did not pick the local demonstration panel")
    t0 = time.perf_counter()
    await asyncio.to_thread(runtime().ensure, council.catalog)  # the Council reuses these servers
    startup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    await council.acheck(WARM_UP)  # a server's first inferences are slow (weights paged in): not counted
    warmup_s = time.perf_counter() - t0

    rows: list[dict[str, Any]] = []
    calls: list[Any] = []
    fh = out.open("w", encoding="utf-8") if out else None
    try:
        for i, item in enumerate(claims, 1):
            t = time.perf_counter()
            result = await council.acheck(item["claim"])
            seconds = time.perf_counter() - t
            v = result.verdict
            row = {
                "id": item.get("id", str(i)), "claim": item["claim"], "truth": item["label"], "seconds": seconds,
                "run_id": result.run_id, "verdict": v.label if v else None,
                "majority": v.majority_answer if v else None, "decided_by": v.decided_by if v else "none",
                "degraded": bool(v and v.degraded),
                "members": {a.member_label: a.label for a in result.answers},
                "served_by": {a.member_label: a.model for a in result.answers},
                "answers": {a.member_label: a.answer for a in result.answers},
                "failed": {f.member_label: f.error_kind for f in result.failures},
            }
            rows.append(row)
            calls.extend(result.calls)
            if fh:
                fh.write(json.dumps(row) + "\n")
                fh.flush()
            mark = "ok " if row["verdict"] == row["truth"] else "-- "
            print(f"[{i:3d}/{len(claims)}] {seconds:6.1f}s {mark}{row['truth'][:3]} verdict={row['verdict']} "
                  f"members={row['members']} {item['claim']}", file=sys.stderr, flush=True)
    finally:
        if fh:
            fh.close()
    seats = council.store.load_run(rows[0]["run_id"]).panel if rows else []
    members = {s["label"]: s["chain"][0] for s in seats if s["label"] != "adjudicator"}
    return {"rows": rows, "calls": calls, "startup_s": startup_s, "warmup_s": warmup_s, "members": members}


def report(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    rows, calls = res["rows"], res["calls"]
    n = len(rows)
    con = Console(width=160)  # the same full table on a terminal, in a pipe or in a log file
    if n == 0:
        con.print("no claims")
        return
    true_n = sum(r["truth"] == "SUPPORTED" for r in rows)

    def line(name: str, labels: list[str | None]) -> tuple[str, ...]:
        correct = sum(lab == r["truth"] for lab, r in zip(labels, rows))
        on_true = [lab == r["truth"] for lab, r in zip(labels, rows) if r["truth"] == "SUPPORTED"]
        on_false = [lab == r["truth"] for lab, r in zip(labels, rows) if r["truth"] == "REFUTED"]
        dist = Counter(lab or "(none)" for lab in labels)
        pct = lambda xs: f"{100 * sum(xs) / len(xs):.1f}%" if xs else "-"  # noqa: E731
        return (name, f"{correct}/{n}", f"{100 * correct / n:.1f}%", pct(on_true), pct(on_false),
                str(dist.get("SUPPORTED", 0)), str(dist.get("REFUTED", 0)), str(dist.get("NOT_ENOUGH_INFO", 0)),
                str(dist.get("(none)", 0)))

    t = Table("who", "correct", "accuracy", "on true", "on false", "said SUPPORTED", "said REFUTED",
              "said NEI", "no answer",
              title=f"local panel on {n} true/false claims ({true_n} true, {n - true_n} false); NEI or no answer = wrong")
    for label, model in sorted(res["members"].items()):
        t.add_row(*line(f"member {label}: {model}", [r["members"].get(label) for r in rows]))
    t.add_row(*line("plain majority", [r["majority"] for r in rows]))
    t.add_row(*line("council verdict", [r["verdict"] for r in rows]), end_section=True)
    always = ("always SUPPORTED", f"{true_n}/{n}", f"{100 * true_n / n:.1f}%", "100.0%", "0.0%", str(n), "0", "0", "0")
    t.add_row(*always, style="dim")
    con.print(t)

    secs = sorted(r["seconds"] for r in rows)
    p90 = secs[min(len(secs) - 1, int(round(0.9 * (len(secs) - 1))))]
    decided = Counter(r["decided_by"] for r in rows)
    st = Table("seconds per council", "mean", "median", "p90", "min", "max", "total", "server start-up",
               "warm-up council", title="speed (one council at a time; start-up and warm-up not counted)")
    st.add_row(f"{n} councils", f"{statistics.mean(secs):.1f}", f"{statistics.median(secs):.1f}", f"{p90:.1f}",
               f"{secs[0]:.1f}", f"{secs[-1]:.1f}", f"{sum(secs):.0f}", f"{res['startup_s']:.1f}",
               f"{res['warmup_s']:.1f}")
    con.print(st)
    con.print(f"decided by: {', '.join(f'{k} {v}' for k, v in sorted(decided.items()))} · "
              f"degraded councils: {sum(r['degraded'] for r in rows)} · "
              f"member failures: {sum(len(r['failed']) for r in rows)} · answers served by a fallback model: "
              f"{sum(m != res['members'].get(lab) for r in rows for lab, m in r['served_by'].items())}")

    per: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for c in calls:
        p = per[c.model]
        p["calls"] += 1
        p["cost"] += c.cost_usd
        p["local"] += c.cost_source == "local"
        if c.status in ("ok", "invalid") and c.latency_s > 0:
            p["replied"] += 1
            p["ok"] += c.status == "ok"
            p["completion"] += c.completion_tokens
            p["prompt"] += c.prompt_tokens
            p["latency"] += c.latency_s
    tt = Table("model", "calls", "valid", "prompt tok/call", "completion tok/call", "latency s/call",
               "completion tok/s", "cost USD", "cost source local", title="tokens per second per model")
    for model, p in sorted(per.items()):
        r = p["replied"] or 1
        tt.add_row(model, f"{p['calls']:.0f}", f"{p['ok']:.0f}", f"{p['prompt'] / r:.0f}", f"{p['completion'] / r:.1f}",
                   f"{p['latency'] / r:.2f}", f"{p['completion'] / p['latency']:.1f}" if p["latency"] else "-",
                   f"{p['cost']:.6f}", f"{p['local']:.0f}/{p['calls']:.0f}")
    con.print(tt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="only the first N claims (balanced: true/false alternate)")
    ap.add_argument("--db", default=None, help="database URL or SQLite path (default: a fresh temporary file)")
    ap.add_argument("--data", type=Path, default=DATA, help="JSONL of {claim, label} (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=None, help="also write one JSON line per claim here")
    args = ap.parse_args()
    from council.config.local import local_available

    if not local_available():
        raise SystemExit("the local extra is not installed: pip install -e '.[local]'")
    claims = load_claims(args.data, args.limit)
    url = db_url(args.db)
    load0 = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{len(claims)} claims · database {url}", file=sys.stderr)
    t = time.perf_counter()
    res = asyncio.run(run(claims, url, args.out))
    report(res)
    print(f"wall time {time.perf_counter() - t:.0f} s · {os.cpu_count()} CPUs · load average (1, 5, 15 min) at "
          f"the start {load0}, at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
