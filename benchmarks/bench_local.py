"""A built-in local panel on simple true/false claims: how good, how fast.

Runs ``Council().acheck`` with no config (``--panel qwen``, the default: Qwen2.5-Coder-1.5B asked in two
wordings, labels and confidences from token log-probabilities; ``--panel tiny``: SmolLM2-135M, Gemma-3-270M,
SmolLM2 sampled) on each labelled claim of ``benchmarks/data/claims_tf.jsonl`` (120 general-knowledge
statements, half true, half false), ``--concurrency`` councils at a time, and prints:
- for each member alone, the plain unweighted majority of labels (``verdict.majority_answer``) and the
  council verdict: accuracy (NOT_ENOUGH_INFO, no label or a failed member count as wrong), share answered
  SUPPORTED, NOT_ENOUGH_INFO rate, and ECE (expected calibration error of the stated confidence of the
  label: a member's answer confidence, the verdict's confidence);
- seconds per claim (wall time / claims: throughput at this concurrency) and per council (mean, median,
  p90), after the servers have started and answered one warm-up council (both shown apart);
- tokens per second per model: completion tokens / call latency over the calls that got a reply.
``--ask-timing`` also times ``council ask`` as a user runs it (a new process each time): first on a fresh
cache directory (so the weights are joined from the installed packages first), then twice more
(``--ask-only``: that alone, no claims). ``--ask-questions N`` asks the first N open questions of
``benchmarks/data/short_answers.jsonl`` in this process: how often the adjudicator's rulings were valid, how
the runs were decided, how often the answer names the expected one.

    python benchmarks/bench_local.py [--panel qwen|tiny] [--limit N] [--concurrency N] [--ask-timing]
        [--ask-only] [--ask-questions N] [--db URL_OR_PATH] [--data FILE] [--out results.jsonl]
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


async def run(claims: list[dict[str, str]], url: str, out: Path | None, concurrency: int = 1,
              recipe: str | None = None) -> dict[str, Any]:
    from council import Council
    from council.config.local import runtime

    os.environ.pop("COUNCIL_CONFIG", None)  # the point is the built-in local panel
    council = Council(db=url, recipe=recipe)
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
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(i: int, item: dict[str, str]) -> None:
        nonlocal done
        async with gate:
            t = time.perf_counter()
            result = await council.acheck(item["claim"])
            seconds = time.perf_counter() - t
            v = result.verdict
            row = {
                "id": item.get("id", str(i)), "claim": item["claim"], "truth": item["label"], "seconds": seconds,
                "run_id": result.run_id, "verdict": v.label if v else None,
                "verdict_confidence": v.confidence if v else None,
                "majority": v.majority_answer if v else None, "decided_by": v.decided_by if v else "none",
                "degraded": bool(v and v.degraded),
                "members": {a.member_label: a.label for a in result.answers},
                "confidence": {a.member_label: a.confidence for a in result.answers},
                "served_by": {a.member_label: a.model for a in result.answers},
                "answers": {a.member_label: a.answer for a in result.answers},
                "failed": {f.member_label: f.error_kind for f in result.failures},
                "calls_by_node": dict(Counter(c.node for c in result.calls)),
                "escalated": [e.target for e in result.escalations],
            }
            rows.append(row)
            calls.extend(result.calls)
            if fh:
                fh.write(json.dumps(row) + "\n")
                fh.flush()
            done += 1
            mark = "ok " if row["verdict"] == row["truth"] else "-- "
            print(f"[{done:3d}/{len(claims)}] {seconds:6.1f}s {mark}{row['truth'][:3]} verdict={row['verdict']} "
                  f"members={row['members']} {item['claim']}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(one(i, item) for i, item in enumerate(claims, 1)))
    finally:
        if fh:
            fh.close()
    wall_s = time.perf_counter() - t0
    rows.sort(key=lambda r: r["id"])
    seats = council.store.load_run(rows[0]["run_id"]).panel if rows else []
    members = {s["label"]: s["chain"][0] for s in seats  # the members: not the adjudicator, not a strong tier
               if s["label"] != "adjudicator" and not s["label"].startswith("strong-")}
    return {"rows": rows, "calls": calls, "startup_s": startup_s, "warmup_s": warmup_s, "members": members,
            "wall_s": wall_s, "concurrency": concurrency, "recipe": recipe or "council"}


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

    def line(name: str, labels: list[str | None], confidences: list[float | None] | None) -> tuple[str, ...]:
        correct = sum(lab == r["truth"] for lab, r in zip(labels, rows))
        on_true = [lab == r["truth"] for lab, r in zip(labels, rows) if r["truth"] == "SUPPORTED"]
        on_false = [lab == r["truth"] for lab, r in zip(labels, rows) if r["truth"] == "REFUTED"]
        dist = Counter(lab or "(none)" for lab in labels)
        pct = lambda xs: f"{100 * sum(xs) / len(xs):.1f}%" if xs else "-"  # noqa: E731
        return (name, f"{correct}/{n}", f"{100 * correct / n:.1f}%", pct(on_true), pct(on_false),
                f"{100 * dist.get('SUPPORTED', 0) / n:.1f}%", str(dist.get("REFUTED", 0)),
                f"{100 * dist.get('NOT_ENOUGH_INFO', 0) / n:.1f}%", str(dist.get("(none)", 0)),
                _ece(labels, confidences, rows))

    t = Table("who", "correct", "accuracy", "on true", "on false", "share SUPPORTED", "said REFUTED",
              "NEI rate", "no answer", "ECE",
              title=f"local panel on {n} true/false claims ({true_n} true, {n - true_n} false); NEI or no answer = wrong")
    for label, model in sorted(res["members"].items()):
        t.add_row(*line(f"member {label}: {model}", [r["members"].get(label) for r in rows],
                        [r.get("confidence", {}).get(label) for r in rows]))
    t.add_row(*line("plain majority", [r["majority"] for r in rows], None))
    t.add_row(*line("council verdict", [r["verdict"] for r in rows], [r.get("verdict_confidence") for r in rows]),
              end_section=True)
    always = ("always SUPPORTED", f"{true_n}/{n}", f"{100 * true_n / n:.1f}%", "100.0%", "0.0%", "100.0%", "0", "0.0%",
              "0", "-")
    t.add_row(*always, style="dim")
    con.print(t)

    con.print(f"seconds per claim at {res['concurrency']} council(s) at a time: "
              f"{res['wall_s'] / n:.2f} (wall {res['wall_s']:.0f} s for {n} claims)")
    secs = sorted(r["seconds"] for r in rows)
    p90 = secs[min(len(secs) - 1, int(round(0.9 * (len(secs) - 1))))]
    decided = Counter(r["decided_by"] for r in rows)
    st = Table("seconds per council", "mean", "median", "p90", "min", "max", "total", "server start-up",
               "warm-up council", title=f"speed ({res['concurrency']} council(s) at a time; start-up and warm-up not counted)")
    st.add_row(f"{n} councils", f"{statistics.mean(secs):.1f}", f"{statistics.median(secs):.1f}", f"{p90:.1f}",
               f"{secs[0]:.1f}", f"{secs[-1]:.1f}", f"{sum(secs):.0f}", f"{res['startup_s']:.1f}",
               f"{res['warmup_s']:.1f}")
    con.print(st)
    nodes: Counter[str] = Counter()
    for r in rows:
        nodes.update(r["calls_by_node"])
    esc = [r for r in rows if "label" in r["escalated"]]
    right = lambda rs: f"{sum(r['verdict'] == r['truth'] for r in rs)}/{len(rs)}"  # noqa: E731
    con.print(f"recipe {res['recipe']}: {sum(nodes.values()) / n:.2f} calls per claim "
              f"({', '.join(f'{k} {v}' for k, v in sorted(nodes.items()))}); label escalated on {len(esc)}/{n} claims "
              f"(verdict right on {right(esc)} of those, on {right([r for r in rows if r not in esc])} of the others)")
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


def _ece(labels: list[str | None], confidences: list[float | None] | None, rows: list[dict[str, Any]]) -> str:
    """ECE of the stated confidence of each SUPPORTED/REFUTED label (other answers left out), 10 bins."""
    if confidences is None:
        return "-"
    from council.config.calibration import expected_calibration_error

    p, truth = [], []
    for lab, conf, r in zip(labels, confidences, rows):
        if lab in ("SUPPORTED", "REFUTED") and conf is not None:
            p.append(conf if lab == "SUPPORTED" else 1.0 - conf)
            truth.append(r["truth"] == "SUPPORTED")
    return f"{expected_calibration_error(p, truth):.3f}" if p else "-"


def ask_timing(question: str, repeats: int = 3) -> tuple[list[tuple[str, float]], dict[str, int]]:
    """Wall seconds of ``council ask`` as a user runs it (new process each time), the first on a fresh cache
    directory (XDG_CACHE_HOME): that one joins the weights from the installed packages first; then the same
    command ``repeats`` times while a warm local panel runs (``council local start``). Also the
    statuses of the adjudicator's calls in those runs (``ok`` = a ruling that parsed against the schema)."""
    import subprocess

    cache = tempfile.mkdtemp(prefix="council-bench-cache-")
    env = {k: v for k, v in os.environ.items() if k != "COUNCIL_CONFIG"}
    env.update(XDG_CACHE_HOME=cache, COUNCIL_DB=str(Path(cache) / "council.db"))
    out = []
    for i in range(repeats):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "council", "ask", question], env=env, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise SystemExit(f"council ask failed: {proc.stderr.strip()[-500:]}")
        out.append(("first, fresh cache (joins the weights)" if i == 0 else f"run {i + 1}", time.perf_counter() - t))
    # The same command while a warm local panel runs (council local start): no start-up per command.
    warm_env = dict(env, COUNCIL_WARM="1")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "council", "local", "start"], env=warm_env, check=True, capture_output=True)
    out.append(("`council local start` (once; not an ask)", time.perf_counter() - t))
    try:
        for i in range(repeats + 2):
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "council", "ask", question], env=warm_env,
                                  capture_output=True, text=True)
            if proc.returncode != 0 or "answered by the warm local panel" not in proc.stderr:
                raise SystemExit(f"council ask on the warm panel failed: {proc.stderr.strip()[-500:]}")
            out.append((f"warm local panel, run {i + 1}", time.perf_counter() - t))
    finally:
        subprocess.run([sys.executable, "-m", "council", "local", "stop"], env=warm_env, capture_output=True)
    import shutil

    from council.store.db import Store

    store = Store(f"sqlite:///{Path(cache) / 'council.db'}")
    statuses = Counter(c.status for r in store.list_runs(limit=2 * repeats + 2) for c in store.load_run(r.run_id).calls
                       if c.node == "adjudicate")
    shutil.rmtree(cache, ignore_errors=True)
    return out, dict(statuses)


async def ask_questions(path: Path, limit: int, url: str) -> dict[str, Any]:
    """``Council().aask`` on the first ``limit`` open questions of ``path`` (short_answers.jsonl): how often
    the adjudicator's ruling was valid (its calls by status: ``ok`` parsed against the schema, ``invalid``
    did not), how the runs were decided, and how often the final answer names the expected answer."""
    from council import Council
    from council.config.local import runtime

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][:limit]
    council = Council(db=url)
    await asyncio.to_thread(runtime().ensure, council.catalog)
    statuses: Counter[str] = Counter()
    decided: Counter[str] = Counter()
    named = 0
    secs = []
    for i, row in enumerate(rows, 1):
        t = time.perf_counter()
        result = await council.aask(row["question"])
        secs.append(time.perf_counter() - t)
        statuses.update(c.status for c in result.calls if c.node == "adjudicate")
        v = result.verdict
        decided[v.decided_by if v else "none"] += 1
        text = (v.answer if v else "") or ""
        hit = any(a.lower() in text.lower() for a in [row["answer"], *row.get("aliases", [])])
        named += hit
        print(f"[{i:2d}/{len(rows)}] {secs[-1]:5.1f}s {'ok ' if hit else '-- '}{row['question']} -> {text[:80]!r}",
              file=sys.stderr, flush=True)
    return {"n": len(rows), "statuses": dict(statuses), "decided": dict(decided), "named": named,
            "mean_s": statistics.mean(secs) if secs else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="only the first N claims (balanced: true/false alternate)")
    ap.add_argument("--db", default=None, help="database URL or SQLite path (default: a fresh temporary file)")
    ap.add_argument("--data", type=Path, default=DATA, help="JSONL of {claim, label} (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=None, help="also write one JSON line per claim here")
    ap.add_argument("--panel", choices=["qwen", "tiny"], default="qwen", help="the local panel (default: %(default)s)")
    ap.add_argument("--concurrency", "-j", type=int, default=2, help="councils at a time (default: %(default)s, "
                    "as `council check FILE` on a local panel: measured fastest, see the README)")
    ap.add_argument("--recipe", default=None, help="a recipe (e.g. cascade: the first wording alone, the second "
                    "only while the label is in doubt); default: the one-round council")
    ap.add_argument("--ask-timing", action="store_true", help="also time `council ask` in new processes, the "
                    "first on a fresh cache")
    ap.add_argument("--ask-only", action="store_true", help="only the `council ask` timing, no claims")
    ap.add_argument("--ask-questions", type=int, default=0, metavar="N",
                    help="also ask the first N open questions of benchmarks/data/short_answers.jsonl in this "
                         "process: adjudicator rulings by status, and how often the answer names the expected one")
    args = ap.parse_args()
    os.environ["COUNCIL_LOCAL_PANEL"] = args.panel
    from council.config.local import local_available

    if not local_available():
        raise SystemExit("the local extra is not installed: pip install -e '.[local]'")
    claims = load_claims(args.data, args.limit)
    url = db_url(args.db)
    load0 = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{len(claims)} claims · database {url}", file=sys.stderr)
    t = time.perf_counter()
    if not args.ask_only:
        res = asyncio.run(run(claims, url, args.out, args.concurrency, args.recipe))
        report(res)
    if args.ask_questions:
        q = asyncio.run(ask_questions(DATA.with_name("short_answers.jsonl"), args.ask_questions, url))
        ok = q["statuses"].get("ok", 0)
        total = sum(q["statuses"].values())
        print(f"open questions ({args.panel} panel): {q['n']} asked, {q['mean_s']:.1f} s each (mean); answer names "
              f"the expected one: {q['named']}/{q['n']}; decided by: {q['decided']}; adjudicator calls by status: "
              f"{q['statuses']} (valid rulings {ok}/{total})")
    if args.ask_timing or args.ask_only:
        from council.config.local import runtime

        runtime().stop()  # each `council ask` starts its own server, as a user's would
        timings, rulings = ask_timing("What is the capital of France?")
        for what, secs in timings:
            print(f"council ask ({args.panel} panel), {what}: {secs:.1f} s")
        print(f"adjudicator calls in those runs by status (ok = a valid ruling): {rulings}")
    print(f"wall time {time.perf_counter() - t:.0f} s · {os.cpu_count()} CPUs · load average (1, 5, 15 min) at "
          f"the start {load0}, at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
