"""Claim-level reconciliation on a simulated panel: does the council beat its best member?

The scripted server plays five members of known per-question accuracy on labelled true/false statements:
  m85 (0.85), m75 (0.75), m65 (0.65), copy65 (0.65, errs on exactly the questions m65 errs on: a correlated
  pair), and loud55 (0.55, always claims confidence 0.95: confidently wrong half the time),
and an adjudicator of accuracy 0.75 for whatever the weighted vote leaves contested. Each member answers a
fact check with a label and one claim ("Statement N is true." / "Statement N is not true."), so clustering
must also split each question into two contradicting clusters.

Phase 1 (learning): ``--train`` statements, each followed by the true label as human feedback
(``council feedback``), so members' reliabilities are learned in the store. Phase 2 (measured): ``--test``
statements (at least 500), no feedback. Reported per phase: accuracy of the council verdict, of the best
single member (highest true accuracy), of the plain majority, and of the Bayes-optimal weighted vote computed
from the true accuracies (log-odds weights over the same answers); the adjudicator call rate; and the
expected calibration error (10 bins) of the verdict's confidence. Goal: council >= best single member and
within 2 points of Bayes-optimal once reliabilities are learned.

    python benchmarks/bench_reconcile.py [--train 300] [--test 600] [--concurrency 16] [--seed 11]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MEMBERS = {"m85": 0.85, "m75": 0.75, "m65": 0.65, "copy65": 0.65, "loud55": 0.55}
JUDGE_ACCURACY = 0.75


def build_script(n: int, seed: int) -> tuple[dict, list[bool], dict[str, list[str]]]:
    rng = random.Random(seed)
    truth = [rng.random() < 0.5 for _ in range(n)]
    labels: dict[str, list[str]] = {m: [] for m in MEMBERS}
    models: dict[str, dict] = {m: {"latency": 0.0, "answers": []} for m in [*MEMBERS, "judge"]}
    for i, t in enumerate(truth):
        q = f"Statement {i:05d}"
        m65_right = rng.random() < MEMBERS["m65"]
        for m, acc in MEMBERS.items():
            right = m65_right if m in ("m65", "copy65") else rng.random() < acc
            says_true = t if right else not t
            label = "SUPPORTED" if says_true else "REFUTED"
            labels[m].append(label)
            conf = 0.95 if m == "loud55" else round(min(0.97, max(0.5, acc + rng.uniform(-0.08, 0.08))), 2)
            text = f"{q} is true." if says_true else f"{q} is not true."
            models[m]["answers"].append({"match": q, "content": {
                "answer": text, "label": label, "confidence": conf, "claims": [{"text": text, "confidence": conf}]}})
        judge_true = t if rng.random() < JUDGE_ACCURACY else not t
        models["judge"]["answers"].append({"match": q, "content": {
            "answer": f"{q} is {'true' if judge_true else 'not true'}.",
            "label": "SUPPORTED" if judge_true else "REFUTED", "confidence": 0.75, "rationale": "simulated"}})
    return {"seed": seed, "models": models}, truth, labels


def config(base_url: str) -> dict:
    def entry(name: str, q: float) -> dict:
        return {"model": f"openai/{name}", "api_base": base_url, "quality": q, "provider": f"p-{name}",
                "input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.2}

    return {
        "embedding": "lexical",
        "models": {**{m: entry(m, 50) for m in MEMBERS}, "judge": entry("judge", 90)},
        "policies": {
            "fact_check": {"allowed_models": list(MEMBERS), "panel_size": 5, "quorum": 3, "fallback": "none",
                           "answer_retries": 0, "timeout_s": 30.0},
            "adjudication": {"allowed_models": ["judge"], "timeout_s": 30.0},
        },
    }


def bayes_label(i: int, labels: dict[str, list[str]]) -> str:
    score = sum((1 if labels[m][i] == "SUPPORTED" else -1) * math.log(a / (1 - a)) for m, a in MEMBERS.items())
    return "SUPPORTED" if score >= 0 else "REFUTED"


def majority(i: int, labels: dict[str, list[str]]) -> str:
    s = sum(1 for m in MEMBERS if labels[m][i] == "SUPPORTED")
    return "SUPPORTED" if s * 2 > len(MEMBERS) else "REFUTED"


def ece(pairs: list[tuple[float, bool]], bins: int = 10) -> float:
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inb = [(c, ok) for c, ok in pairs if (lo <= c < hi) or (b == bins - 1 and c == 1.0)]
        if inb:
            total += len(inb) / len(pairs) * abs(sum(c for c, _ in inb) / len(inb) - sum(ok for _, ok in inb) / len(inb))
    return total


async def run_phase(council, items: list[int], truth: list[bool], labels, concurrency: int, feedback: bool):
    sem = asyncio.Semaphore(concurrency)
    results: dict[int, object] = {}

    async def one(i: int) -> None:
        async with sem:
            r = await council.acheck(f"Statement {i:05d} is true.")
            results[i] = r
            if feedback:
                council.store.add_feedback(r.run_id, "SUPPORTED" if truth[i] else "REFUTED")

    # Waves of `concurrency`, so reliabilities learned from one wave inform the next.
    for start in range(0, len(items), concurrency):
        await asyncio.gather(*(one(i) for i in items[start:start + concurrency]))
    return results


def summarize(name: str, results, items, truth, labels) -> dict:
    gold = {i: "SUPPORTED" if truth[i] else "REFUTED" for i in items}
    council_ok = [results[i].verdict.label == gold[i] for i in items]
    best = max(MEMBERS, key=lambda m: sum(labels[m][i] == gold[i] for i in items))
    row = {
        "phase": name, "n": len(items),
        "council": sum(council_ok) / len(items),
        "best single": sum(labels[best][i] == gold[i] for i in items) / len(items),
        "best member": best,
        "majority": sum(majority(i, labels) == gold[i] for i in items) / len(items),
        "bayes-optimal": sum(bayes_label(i, labels) == gold[i] for i in items) / len(items),
        "adjudicated": sum(results[i].verdict.decided_by == "adjudicator" for i in items) / len(items),
        "ece": ece([(results[i].verdict.confidence, ok) for i, ok in zip(items, council_ok)]),
    }
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--test", type=int, default=600)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    from council import Council
    from council.testing import ScriptedServer

    n = args.train + args.test
    script, truth, labels = build_script(n, args.seed)
    with tempfile.TemporaryDirectory() as tmp, ScriptedServer(script) as srv:
        council = Council(config(srv.base_url), db=f"sqlite:///{Path(tmp) / 'bench.db'}")
        t0 = time.perf_counter()

        async def go():
            train_items, test_items = list(range(args.train)), list(range(args.train, n))
            tr = await run_phase(council, train_items, truth, labels, args.concurrency, feedback=True)
            te = await run_phase(council, test_items, truth, labels, args.concurrency, feedback=False)
            return tr, te

        from council._sync import run_sync

        tr, te = run_sync(go())
        elapsed = time.perf_counter() - t0
        rows = [summarize("learning (with feedback)", tr, list(range(args.train)), truth, labels),
                summarize("measured (reliabilities learned)", te, list(range(args.train, n)), truth, labels)]
        rel = council.store.reliabilities(0.7, 4.0, task="check")
    t = Table("phase", "claims", "council", "best single", "plain majority", "Bayes-optimal", "adjudicated", "ECE",
              title="Fact-check accuracy on a simulated panel")
    for r in rows:
        t.add_row(r["phase"], str(r["n"]), f"{r['council']:.3f}", f"{r['best single']:.3f} ({r['best member']})",
                  f"{r['majority']:.3f}", f"{r['bayes-optimal']:.3f}", f"{r['adjudicated']:.3f}", f"{r['ece']:.3f}")
    con = Console()
    con.print(t)
    rt = Table("model", "true accuracy", "learned reliability", "judgements", title="Learned reliabilities")
    for m, acc in MEMBERS.items():
        r = rel.get(m)
        rt.add_row(m, f"{acc:.2f}", f"{r.value:.3f}" if r else "-", str(r.total) if r else "0")
    con.print(rt)
    m = rows[1]
    ok_best = m["council"] >= m["best single"]
    ok_bayes = m["council"] >= m["bayes-optimal"] - 0.02
    con.print(f"goal council >= best single: {'PASS' if ok_best else 'MISS'} · within 2 points of Bayes-optimal: "
              f"{'PASS' if ok_bayes else 'MISS'} · {n} councils in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
