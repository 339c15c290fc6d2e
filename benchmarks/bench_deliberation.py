"""Deliberation recipes on a simulated panel of known accuracies and prices: cascade, peer review, revision.

Every arm runs real councils (the real graph, store and litellm path) against the scripted server, on the
same fact checks (labelled true/false statements), in one run with fixed seeds:

  strong3   recipe ``council`` with three strong models (accuracy 0.92 each, $5/$15 per Mtok): always pay
            the full strong panel;
  cascade   recipe ``cascade``: two cheap models (0.82, 0.80; $0.15/$0.60) answer; only an unsettled
            label goes to one strong model (the strong tier);
  cheap3    recipe ``council`` with three cheap models (0.82, 0.80, 0.78) and no adjudicator;
  review3   recipe ``review`` on the same three cheap models: each reviews the other two (reviewers judge a
            claim correctly with probability 0.85), then the vote, no adjudicator;
  revise3   recipe ``revise`` on the same three cheap models, no adjudicator: while the vote leaves the
            label unsettled, each member sees the label counts and revises or holds. A member in the
            minority follows the majority with probability 0.6 when it is wrong and 0.2 when it is right
            (models give up wrong answers more readily than right ones, but they do herd); a member in the
            majority holds. Rounds stop at convergence or at the policy's 2.

Reported: accuracy, cost per correct verdict, strong-tier share of claims, ECE (10 bins) of the verdict's
confidence, and, for review, the review prompt tokens saved by removing the reviewer's own answer before
the call (its own response block, counted with the same chars/4 estimate the server uses); for revision,
accuracy against one round (cheap3) and the plain majority, label flips right -> wrong and wrong -> right,
and the revision calls made against fixed rounds (every claim, every member, 2 rounds, as debate does).

    python benchmarks/bench_deliberation.py [--claims 600] [--concurrency 16] [--seed 13]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

STRONG = {"s1": 0.92, "s2": 0.92, "s3": 0.92}
CHEAP = {"c1": 0.82, "c2": 0.80, "c3": 0.78}
REVIEW_ACCURACY = 0.85
FOLLOW_WHEN_WRONG, FOLLOW_WHEN_RIGHT = 0.6, 0.2
MAX_ROUNDS = 2
PRICES = {**{m: (5.0, 15.0) for m in STRONG}, **{m: (0.15, 0.60) for m in CHEAP}}


def _q(i: int) -> str:
    return f"Statement {i:05d}"


def build_script(n: int, seed: int) -> tuple[dict, list[bool], dict[str, list[bool]]]:
    """Members' answers, reviewers' judgements and the strong tier's rulings, per statement."""
    rng = random.Random(seed)
    truth = [rng.random() < 0.5 for _ in range(n)]
    right: dict[str, list[bool]] = {m: [] for m in [*STRONG, *CHEAP]}
    conf: dict[str, list[float]] = {m: [] for m in right}
    models: dict[str, dict] = {m: {"latency": 0.0, "prompt_tokens": None, "answers": []} for m in right}
    for m in models.values():
        m.pop("prompt_tokens")
    for i, t in enumerate(truth):
        for m, acc in {**STRONG, **CHEAP}.items():
            ok = rng.random() < acc
            right[m].append(ok)
            says = t if ok else not t
            c = round(min(0.95, max(0.55, acc + rng.uniform(-0.1, 0.1))), 2)
            conf[m].append(c)
            text = f"{_q(i)} is true." if says else f"{_q(i)} is not true."
            models[m]["answers"].append({"match": f"Claim to check: {_q(i)}", "content": {
                "answer": text, "label": "SUPPORTED" if says else "REFUTED", "confidence": c,
                "claims": [{"text": text, "confidence": c}]}})
    # Reviews: a cheap reviewer sees the other two cheap members in either order; it judges each claim
    # correctly with probability REVIEW_ACCURACY (drawn once per reviewer, statement and claim).
    for i, t in enumerate(truth):
        for me in CHEAP:
            others = [m for m in CHEAP if m != me]
            verdicts = {}
            for o in others:
                correct = rng.random() < REVIEW_ACCURACY  # the claim is accurate exactly when its member is right
                verdicts[o] = "accurate" if right[o][i] == correct else "inaccurate"
            for order in (others, others[::-1]):
                o1 = order[0]
                says1 = t if right[o1][i] else not t
                line = f"- C1 (confidence {conf[o1][i]:.2f}): {_q(i)} is {'true' if says1 else 'not true'}."
                models[me]["answers"].insert(0, {"match": line, "content": {
                    "judgements": [{"claim": f"C{k + 1}", "verdict": verdicts[o], "reason": "simulated"}
                                   for k, o in enumerate(order)],
                    "ranking": [f"Response {k + 1}" for k, o in sorted(enumerate(order), key=lambda x: verdicts[x[1]] != "accurate")]}})
        # The strong tier (s1) rules on the escalated label with its own draw for this statement.
        says = t if right["s1"][i] else not t
        models["s1"]["answers"].insert(0, {"match": f"Claim being checked: {_q(i)}", "content": {
            "rulings": [{"item": "E1", "decision": "true" if says else "false"}],
            "label": "SUPPORTED" if says else "REFUTED"}})
        _script_revisions(models, rng, i, {m: (t if right[m][i] else not t) for m in CHEAP}, t)
    return {"seed": seed, "models": models}, truth, right


def _script_revisions(models: dict, rng: random.Random, i: int, says: dict[str, bool], truth: bool) -> None:
    """Each cheap member's reply in revision rounds 2..MAX_ROUNDS+1 of statement ``i``, simulated ahead: a
    minority member follows the majority with FOLLOW_WHEN_WRONG / FOLLOW_WHEN_RIGHT, the others hold."""
    for r in range(2, MAX_ROUNDS + 2):
        votes = list(says.values())
        majority = sum(votes) * 2 > len(votes)
        nxt = dict(says)
        for m, v in says.items():
            follow = v != majority and rng.random() < (FOLLOW_WHEN_WRONG if v != truth else FOLLOW_WHEN_RIGHT)
            if follow:
                text = f"{_q(i)} is true." if majority else f"{_q(i)} is not true."
                reply = {"decision": "revise", "reason": "simulated: follows the majority", "answer": text,
                         "label": "SUPPORTED" if majority else "REFUTED", "confidence": 0.7,
                         "claims": [{"text": text, "confidence": 0.7}]}
                nxt[m] = majority
            else:
                reply = {"decision": "hold", "reason": "simulated"}
            models[m]["answers"].insert(0, {"match": f"{_q(i)} is true.\nRevision round {r}.", "content": reply})
        says = nxt


def config(base_url: str, arm: str) -> dict:
    def entry(name: str, q: float) -> dict:
        p_in, p_out = PRICES[name]
        return {"model": f"openai/{name}", "api_base": base_url, "quality": q, "provider": f"p-{name}",
                "input_usd_per_mtok": p_in, "output_usd_per_mtok": p_out}

    models = {**{m: entry(m, 90) for m in STRONG}, **{m: entry(m, 60 - k) for k, m in enumerate(CHEAP)}}
    common = {"fallback": "none", "answer_retries": 0, "timeout_s": 30.0}
    pol: dict[str, dict] = {"adjudication": {"allowed_models": ["s1"], **common}}
    if arm == "strong3":
        pol["fact_check"] = {"allowed_models": list(STRONG), "panel_size": 3, "quorum": 2, **common}
    elif arm == "cascade":
        pol["fact_check_cheap"] = {"allowed_models": ["c1", "c2"], "panel_size": 2, "quorum": 2, **common}
        pol["escalation"] = {"allowed_models": ["s1"], "panel_size": 1, **common}
    else:
        pol["fact_check"] = {"allowed_models": list(CHEAP), "panel_size": 3, "quorum": 2, **common}
        pol["peer_review"] = {"allowed_models": list(CHEAP), **common}
        pol["revision"] = {"allowed_models": list(CHEAP), "max_revision_rounds": MAX_ROUNDS, **common}
    return {"embedding": "lexical", "models": models, "policies": pol}


def write_recipe(tmp: Path, name: str, base: str, stages: list[str]) -> str:
    """A shipped recipe with the adjudicate stage removed (cheap arms: measure the vote itself)."""
    import tomllib

    from council.config.resources import data_dir

    raw = tomllib.loads((data_dir("graphs") / f"{base}.toml").read_text(encoding="utf-8"))["recipe"]
    lines = [f'[recipe]\nname = "{name}"\nstages = {stages!r}'.replace("'", '"')]
    for task, t in raw["tasks"].items():
        lines.append(f"[recipe.tasks.{task}]\n" + "\n".join(f'{k} = "{v}"' for k, v in t.items()))
    lines.append("[recipe.adjudication]\n" + "\n".join(f'{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}'
                                                      .replace("'", '"') for k, v in raw["adjudication"].items()))
    path = tmp / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


def ece(pairs: list[tuple[float, bool]], bins: int = 10) -> float:
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inb = [(c, ok) for c, ok in pairs if (lo <= c < hi) or (b == bins - 1 and c == 1.0)]
        if inb:
            total += len(inb) / len(pairs) * abs(sum(c for c, _ in inb) / len(inb) - sum(ok for _, ok in inb) / len(inb))
    return total


async def run_arm(council, n: int, concurrency: int) -> list:
    results: list = [None] * n

    async def one(i: int) -> None:
        results[i] = await council.acheck(f"{_q(i)} is true.")

    for start in range(0, n, concurrency):  # waves: reliabilities learned from one wave inform the next
        await asyncio.gather(*(one(i) for i in range(start, min(n, start + concurrency))))
    return results


def own_block_tokens(result) -> int:
    """Prompt tokens the review calls would have spent on each reviewer's own answer (chars / 4)."""
    import math

    total = 0
    for r in result.reviews:
        mine = next((a for a in result.answers if a.member_label == r.reviewer_label), None)
        if mine is None or r.status != "ok":
            continue
        block = (f'<response label="Response 3">\nAnswer: {mine.answer}\nLabel: {mine.label}\nClaims:\n'
                 + "".join(f"- C9 (confidence {c.confidence:.2f}): {c.text}\n" for c in mine.claims) + "</response>\n")
        total += math.ceil(len(block) / 4)
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--claims", type=int, default=600)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    from council import Council
    from council._sync import run_sync
    from council.testing import ScriptedServer

    n = args.claims
    script, truth, right = build_script(n, args.seed)
    gold = ["SUPPORTED" if t else "REFUTED" for t in truth]
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, ScriptedServer(script) as srv:
        arms = [("strong3", "council"), ("cascade", "cascade"),
                ("cheap3", write_recipe(Path(tmp), "cheap_vote", "council", ["answer", "decide", "record"])),
                ("review3", write_recipe(Path(tmp), "review_vote", "review", ["answer", "review", "decide", "record"])),
                ("revise3", write_recipe(Path(tmp), "revise_vote", "revise", ["answer", "revise", "decide", "record"]))]
        for arm, recipe in arms:
            if arm == "review3":  # the shipped review recipe's review table (policy, template) with no adjudicator
                text = Path(recipe).read_text(encoding="utf-8") + '[recipe.review]\npolicy = "peer_review"\n'
                Path(recipe).write_text(text, encoding="utf-8")
            if arm == "revise3":  # the shipped revise recipe's revision table with no adjudicator
                text = Path(recipe).read_text(encoding="utf-8") + '[recipe.revision]\npolicy = "revision"\n'
                Path(recipe).write_text(text, encoding="utf-8")
            council = Council(config(srv.base_url, arm), db=f"sqlite:///{Path(tmp) / (arm + '.db')}", recipe=recipe)
            res = run_sync(run_arm(council, n, args.concurrency))
            ok = [r.verdict.label == gold[i] for i, r in enumerate(res)]
            cost = sum(r.total_cost_usd for r in res)
            strong_calls = sum(1 for r in res for c in r.calls if c.model in STRONG and c.status == "ok")
            escalated = sum(1 for r in res if r.escalations)
            review_tokens = sum(c.prompt_tokens for r in res for c in r.calls if c.node == "review")
            saved = sum(own_block_tokens(r) for r in res)
            flips = [(f, gold[i]) for i, r in enumerate(res) for f in r.verdict.flips if f.kind == "label"]
            rows.append({"arm": arm, "acc": sum(ok) / n, "cost": cost, "cpc": cost / max(1, sum(ok)),
                         "strong": strong_calls, "escalated": escalated / n,
                         "ece": ece([(r.verdict.confidence, k) for r, k in zip(res, ok)]),
                         "review_tokens": review_tokens, "saved": saved,
                         "revise_calls": sum(1 for r in res for c in r.calls if c.node == "revise"),
                         "revised_claims": sum(1 for r in res if r.verdict.rounds > 1),
                         "right_to_wrong": sum(1 for f, g in flips if f.before == g and f.after != g),
                         "wrong_to_right": sum(1 for f, g in flips if f.before != g and f.after == g),
                         "stops": _count(r.verdict.revision_stop.split(":")[0] for r in res if r.verdict.revision_stop)})
    elapsed = time.perf_counter() - t0
    majority = sum((sum(right[m][i] for m in CHEAP) >= 2) for i in range(n)) / n
    t = Table("arm", "claims", "accuracy", "cost USD", "cost per correct", "strong calls", "escalated", "ECE",
              title=f"Deliberation recipes on a simulated panel ({n} fact checks, seed {args.seed})")
    for r in rows:
        t.add_row(r["arm"], str(n), f"{r['acc']:.3f}", f"{r['cost']:.4f}", f"{r['cpc'] * 1e6:.1f} µ$",
                  str(r["strong"]), f"{r['escalated']:.3f}" if r["arm"] == "cascade" else "-", f"{r['ece']:.3f}")
    con = Console()
    con.print(t)
    by = {r["arm"]: r for r in rows}
    ratio = by["strong3"]["cpc"] / by["cascade"]["cpc"]
    gap = (by["strong3"]["acc"] - by["cascade"]["acc"]) * 100
    con.print(f"cascade vs strong3: cost per correct verdict {ratio:.1f}x lower (goal >= 3x: "
              f"{'PASS' if ratio >= 3 else 'MISS'}), accuracy {gap:+.1f} points behind (goal <= 1: "
              f"{'PASS' if gap <= 1 else 'MISS'})")
    rv = by["review3"]
    share = rv["saved"] / (rv["review_tokens"] + rv["saved"]) if rv["review_tokens"] else 0.0
    con.print(f"review3 vs cheap3 (same answers): accuracy {rv['acc']:.3f} vs {by['cheap3']['acc']:.3f} "
              f"(plain majority of the cheap three {majority:.3f}), ECE {rv['ece']:.3f} vs {by['cheap3']['ece']:.3f}; "
              f"review prompt tokens {rv['review_tokens']}, {rv['saved']} more had each reviewer's own answer been "
              f"sent ({share:.0%} of review input saved)")
    rs = by["revise3"]
    fixed = n * len(CHEAP) * MAX_ROUNDS
    con.print(f"revise3 vs cheap3 (same first answers): accuracy {rs['acc']:.3f} vs {by['cheap3']['acc']:.3f} one round "
              f"(plain majority {majority:.3f}; goal: not lower: {'PASS' if rs['acc'] >= by['cheap3']['acc'] else 'MISS'}), "
              f"ECE {rs['ece']:.3f}; {rs['revised_claims']} of {n} claims went to revision; label flips right -> wrong "
              f"{rs['right_to_wrong']}, wrong -> right {rs['wrong_to_right']} (right -> wrong rate "
              f"{rs['right_to_wrong'] / n:.1%} of claims); revision calls {rs['revise_calls']} vs {fixed} for fixed "
              f"rounds (every claim, every member, {MAX_ROUNDS} rounds): {1 - rs['revise_calls'] / fixed:.0%} saved "
              f"(goal >= 50%: {'PASS' if rs['revise_calls'] <= fixed / 2 else 'MISS'}); "
              f"vs {MAX_ROUNDS} rounds on every contested claim ({rs['revised_claims'] * len(CHEAP) * MAX_ROUNDS} calls): "
              f"{1 - rs['revise_calls'] / max(1, rs['revised_claims'] * len(CHEAP) * MAX_ROUNDS):.0%} saved by stopping "
              f"at convergence; stops: {dict(sorted(rs['stops'].items()))}")
    con.print(f"{len(rows) * n} councils in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
