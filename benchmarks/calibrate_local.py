"""Fit and measure the calibration of the default local panel's members (token probabilities -> P(SUPPORTED)).

For every claim of the labelled files and every wording of the default local panel (``QWEN_MEMBERS`` in
council/config/local_models.py; ``--compare`` adds other wordings of ``CANDIDATES``), asks the 1.5B model
through the real gateway (llama.cpp server on loopback, one answer token, ``top_logprobs``) and reads the raw
token ``P(SUPPORTED)``; raw values are cached in ``--raw`` (JSONL, default
benchmarks/data/local_raw_probabilities.jsonl) so a rerun, or a second file, asks only what is missing.
Then, per wording:

- fits Platt scaling (scikit-learn logistic regression on the raw log-odds) on the ``--fit`` file and prints
  the parameters to pin in ``CALIBRATION`` (council/config/local_models.py);
- measures on the ``--test`` file, which the fit never saw: accuracy, share answered SUPPORTED, ECE and
  Brier score of the raw probabilities, of the Platt map fitted on ``--fit``, and of an isotonic map fitted
  on ``--fit``; plus 5-fold cross-validated Platt and isotonic on the ``--test`` file alone (each claim
  scored by a map fitted on the other four fifths), and the ranking quality (AUC) of the raw numbers;
- the same for the panel's wordings together: the sum and the mean of their calibrated log-odds, the
  majority of calibrated labels (odd panels), the council's weighted vote at the prior reliability, and a
  stacked logistic regression on the raw log-odds fitted on ``--fit``.

``--cascade`` prints, from the cached probabilities, the local cascade's trade-off per threshold on the
vote's posterior (``escalate_label_below``): the first wording alone, the second asked only below the
threshold, combined as the engine's vote does; on the ``--fit`` claims (where the threshold is chosen) and on
the ``--test`` claims.

``--choose`` instead compares every panel of one to three ``CANDIDATES`` wordings on the ``--fit`` claims
alone (cross-validated), which is how the panel's wordings were chosen; the ``--test`` claims play no part.

    python benchmarks/calibrate_local.py [--fit benchmarks/data/calibration_tf.jsonl]
        [--test benchmarks/data/claims_tf.jsonl] [--raw FILE] [--limit N] [--no-collect]
        [--compare local_true_false.j2,...] [--choose] [--cascade]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

DATA = Path(__file__).resolve().parent / "data"


def load(path: Path, limit: int | None) -> list[dict[str, str]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:limit] if limit else rows


# Every wording tried for the panel's members (prompt template -> what the first token means). The panel's
# were chosen among them on the --fit claims only (``--choose``): see the README's "default local panel".
CANDIDATES: dict[str, dict[str, str]] = {
    "local_true_false.j2": {"true": "SUPPORTED", "false": "REFUTED"},
    "local_correct.j2": {"yes": "SUPPORTED", "no": "REFUTED"},
    "local_is_false.j2": {"yes": "REFUTED", "no": "SUPPORTED"},
    "local_false_true.j2": {"true": "SUPPORTED", "false": "REFUTED"},
    "local_few_shot.j2": {"true": "SUPPORTED", "false": "REFUTED"},
}


def panel_templates() -> list[str]:
    from council.config.local_models import QWEN_MEMBERS

    return [spec["prompt_template"] for spec in QWEN_MEMBERS.values()]


async def collect(claims: list[dict[str, str]], raw_path: Path, cached: dict[tuple[str, str], float],
                  templates: list[str]) -> None:
    """Ask every (claim, wording) missing from ``cached``; append each answer to ``raw_path``."""
    from council.calls import gateway
    from council.calls.gateway import ChatMessage
    from council.calls.plaintext import token_probability
    from council.calls.prompts import render
    from council.config.catalog import ModelEntry
    from council.config.local import local_config_tables, runtime
    from council.config.local_models import QWEN_MEMBERS

    tables = local_config_tables("qwen")["models"]
    by_template = {spec["prompt_template"]: ModelEntry(name=n, **tables[n]) for n, spec in QWEN_MEMBERS.items()}
    first = next(iter(by_template.values()))
    for tpl, tokens in CANDIDATES.items():
        if tpl not in by_template:
            by_template[tpl] = first.model_copy(update={"name": tpl, "prompt_template": tpl, "logprob_tokens": tokens})
    entries = runtime().ensure([by_template[t] for t in templates])
    todo = [(c, e) for c in claims for e in entries if (c["claim"], e.prompt_template) not in cached]
    with raw_path.open("a", encoding="utf-8") as fh:
        for i, (c, e) in enumerate(todo, 1):
            p = render(e.prompt_template or "", task="check", question=c["claim"], passages=[])
            msgs = [ChatMessage(role="system", content=p.system), ChatMessage(role="user", content=p.user)]
            res = await gateway.acomplete(e, msgs, max_tokens=1, temperature=0.0, timeout_s=600, top_logprobs=10)
            raw, mass = token_probability(res.text, res.first_token_logprobs, e.logprob_tokens)
            cached[(c["claim"], e.prompt_template or "")] = raw
            fh.write(json.dumps({"claim": c["claim"], "template": e.prompt_template, "p_supported": raw,
                                 "mass": mass, "seconds": res.latency_s}) + "\n")
            fh.flush()
            print(f"[{i}/{len(todo)}] {res.latency_s:5.1f}s {e.prompt_template} p={raw:.3f} {c['claim']}",
                  file=sys.stderr, flush=True)


def metrics(p: list[float], truth: list[bool]) -> dict[str, float]:
    from council.config.calibration import expected_calibration_error

    n = len(p)
    return {
        "accuracy": sum((x >= 0.5) == t for x, t in zip(p, truth)) / n,
        "said_supported": sum(x >= 0.5 for x in p) / n,
        "ece": expected_calibration_error(p, truth),
        "brier": sum((x - t) ** 2 for x, t in zip(p, truth)) / n,
    }


def cross_validated(raw: list[float], truth: list[bool], kind: str, folds: int = 5) -> list[float]:
    """Each claim's probability from a map (Platt or isotonic) fitted on the other folds (stratified)."""
    from sklearn.model_selection import StratifiedKFold

    from council.config.calibration import fit_isotonic, fit_platt

    folds = min(folds, sum(truth), len(truth) - sum(truth))
    if folds < 2:
        return [float("nan")] * len(raw)
    out = [0.0] * len(raw)
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    for train, test in skf.split([[x] for x in raw], truth):
        tr, tt = [raw[i] for i in train], [truth[i] for i in train]
        if kind == "platt":
            m = fit_platt(tr, tt)
            for i in test:
                out[i] = m.apply(raw[i])
        else:
            iso = fit_isotonic(tr, tt)
            for i, v in zip(test, iso.predict([raw[i] for i in test])):
                out[i] = float(v)
    return out


ENGINE_VOTE = "council's weighted vote (reliability 0.7)"


def engine_vote(calibrated: list[float], reliability: float = 0.7) -> float:
    """``P(SUPPORTED)`` of the council's weighted vote (council.deliberation.vote) over members whose
    calibrated ``P(SUPPORTED)`` are ``calibrated``, every member at the same ``reliability``."""
    from council.deliberation.vote import effective_accuracy, weight

    z = 0.0
    for p in calibrated:
        conf = max(p, 1.0 - p)
        z += weight(effective_accuracy(reliability, conf)) * (1 if p >= 0.5 else -1)
    return 1.0 / (1.0 + math.exp(-z))


def cascade(files: list[tuple[str, list[dict[str, str]]]], cached: dict[tuple[str, str], float]) -> None:
    """The cascade's accuracy and share escalated per threshold on the first wording's vote posterior."""
    from council.config.local_models import CALIBRATION, ESCALATE_BELOW
    from council.deliberation.vote import effective_accuracy

    first, second = panel_templates()
    print(f"local cascade: {first} alone; {second} too while the vote's posterior is below the threshold "
          f"(shipped: {ESCALATE_BELOW})")
    print("| claims | threshold | accuracy | escalated | member calls per claim |\n|---|---|---|---|---|")
    for name, rows in files:
        have = [r for r in rows if (r["claim"], first) in cached and (r["claim"], second) in cached]
        for t in (0.0, 0.66, 0.67, 0.68, 0.69, 1.0):
            right = escalated = 0
            for r in have:
                pa = CALIBRATION[first].apply(cached[(r["claim"], first)])
                posterior = effective_accuracy(0.7, max(pa, 1.0 - pa))
                p = pa
                if posterior < t:
                    escalated += 1
                    p = engine_vote([pa, CALIBRATION[second].apply(cached[(r["claim"], second)])])
                right += ("SUPPORTED" if p >= 0.5 else "REFUTED") == r["label"]
            n = len(have) or 1
            print(f"| {name} ({len(have)}) | {t:g}{' (shipped)' if t == ESCALATE_BELOW else ''} | "
                  f"{right / n:.1%} | {escalated / n:.1%} | {1 + escalated / n:.2f} |")


def combinations(calibrated: list[list[float]]) -> dict[str, list[float]]:
    """The ways of combining members' calibrated ``P(SUPPORTED)`` (one list per member, claims in order)."""
    from council.config.calibration import logit

    k, n = len(calibrated), len(calibrated[0])
    sig = lambda z: 1.0 / (1.0 + math.exp(-z))
    return {
        "sum of calibrated log-odds": [sig(sum(logit(m[i]) for m in calibrated)) for i in range(n)],
        "mean of calibrated log-odds": [sig(sum(logit(m[i]) for m in calibrated) / k) for i in range(n)],
        **({"majority of calibrated labels": [float(sum(m[i] >= 0.5 for m in calibrated) * 2 > k)
                                              for i in range(n)]} if k % 2 else {}),
        ENGINE_VOTE: [engine_vote([m[i] for m in calibrated]) for i in range(n)],
    }


def choose(fit: list[dict[str, str]], cached: dict[tuple[str, str], float], fit_name: str, panel: list[str],
           repeats: int = 20) -> None:
    """Which wordings make the panel, judged on the --fit claims alone: every panel of one to three of the
    CANDIDATES wordings, each wording Platt-calibrated on four fifths of the claims and scored on the fifth
    (stratified 5-fold, ``repeats`` shuffles averaged); combined by the sum of calibrated log-odds and by the
    majority of calibrated labels. The --test claims play no part."""
    from itertools import combinations as subsets

    import numpy as np
    from rich.console import Console
    from rich.table import Table
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from council.config.calibration import logit

    every = list(CANDIDATES)
    fit = [c for c in fit if all((c["claim"], t) in cached for t in every)]
    y = np.array([c["label"] == "SUPPORTED" for c in fit])
    x = np.array([[logit(cached[(c["claim"], t)]) for t in every] for c in fit])
    # Out-of-fold calibrated log-odds of each wording, per shuffle (the same folds for every panel).
    oof = np.zeros((repeats, len(fit), len(every)))
    for r in range(repeats):
        for train, test in StratifiedKFold(5, shuffle=True, random_state=r).split(x, y):
            for j in range(len(every)):
                m = LogisticRegression(C=1.0, max_iter=1000).fit(x[train][:, [j]], y[train])
                oof[r, test, j] = m.decision_function(x[test][:, [j]])
    rows = []
    for k in (1, 2, 3):
        for js in subsets(range(len(every)), k):
            z = oof[:, :, list(js)]
            summed = float(((z.sum(axis=2) >= 0) == y).mean())
            majority = float((((z >= 0).sum(axis=2) * 2 > k) == y).mean()) if k != 2 else float("nan")
            rows.append((summed, majority, [every[j] for j in js]))
    rows.sort(key=lambda r: -r[0])
    t = Table("panel (wordings)", "members", "sum of calibrated log-odds", "majority of labels",
              title=f"choosing the panel on the {len(fit)} claims of {fit_name} only: accuracy of out-of-fold "
                    f"Platt maps (5-fold, {repeats} shuffles)")
    for summed, majority, names in rows:
        mark = " (the panel)" if sorted(names) == sorted(panel) else ""
        t.add_row(" + ".join(n.removeprefix("local_").removesuffix(".j2") for n in names) + mark, str(len(names)),
                  f"{100 * summed:.1f}%", "-" if math.isnan(majority) else f"{100 * majority:.1f}%",
                  style="bold" if mark else None)
    Console(width=170).print(t)


def report(fit: list[dict[str, str]], test: list[dict[str, str]], cached: dict[tuple[str, str], float],
           fit_name: str, test_name: str, templates: list[str], extra: tuple[str, ...] | list[str] = ()) -> None:
    """Each wording of the panel (and of ``extra``) alone, raw and calibrated; then the panel's wordings
    combined."""
    from rich.console import Console
    from rich.table import Table
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from council.config.calibration import fit_isotonic, fit_platt, logit

    con = Console(width=170)
    fit = [c for c in fit if all((c["claim"], t) in cached for t in [*templates, *extra])]
    test = [c for c in test if all((c["claim"], t) in cached for t in [*templates, *extra])]
    yf = [c["label"] == "SUPPORTED" for c in fit]
    yt = [c["label"] == "SUPPORTED" for c in test]
    t = Table("wording", "map", "accuracy", "said SUPPORTED", "ECE", "Brier", "AUC (raw)",
              title=f"{len(test)} test claims ({test_name}); maps fitted on {len(fit)} other claims ({fit_name}) "
                    "unless marked CV (5-fold on the test claims)")
    fitted: dict[str, Any] = {}
    calibrated_test: dict[str, list[float]] = {}
    for tpl in [*templates, *extra]:
        rf = [cached[(c["claim"], tpl)] for c in fit]
        rt = [cached[(c["claim"], tpl)] for c in test]
        platt = fit_platt(rf, yf, fitted_on=f"{fit_name}, {len(fit)} claims")
        fitted[tpl] = platt
        iso = fit_isotonic(rf, yf)
        auc = f"{roc_auc_score(yt, rt):.3f}" if len(set(yt)) == 2 else "-"
        rows = {
            "raw token probability": rt,
            "Platt (fitted apart)": [platt.apply(x) for x in rt],
            "isotonic (fitted apart)": [float(v) for v in iso.predict(rt)],
            "Platt (CV)": cross_validated(rt, yt, "platt"),
            "isotonic (CV)": cross_validated(rt, yt, "isotonic"),
        }
        calibrated_test[tpl] = rows["Platt (fitted apart)"]
        for i, (name, ps) in enumerate(rows.items()):
            m = metrics(ps, yt)
            t.add_row((tpl if tpl in templates else f"{tpl} (not in the panel)") if i == 0 else "", name, f"{100 * m['accuracy']:.1f}%", f"{100 * m['said_supported']:.1f}%",
                      f"{m['ece']:.3f}", f"{m['brier']:.3f}", auc if i == 0 else "", end_section=i == len(rows) - 1)
    combos = combinations([calibrated_test[tpl] for tpl in templates])
    # Stacking: one logistic regression on the wordings' raw log-odds, fitted on the --fit claims.
    stack = LogisticRegression(C=1.0, max_iter=1000).fit(
        [[logit(cached[(c["claim"], tpl)]) for tpl in templates] for c in fit], [int(v) for v in yf])
    combos["stacked logistic regression (fitted apart)"] = [
        float(p) for p in stack.predict_proba([[logit(cached[(c["claim"], tpl)]) for tpl in templates]
                                               for c in test])[:, 1]]
    for name, ps in combos.items():
        m = metrics(ps, yt)
        hard = name.startswith("majority")
        t.add_row("the panel's wordings", name, f"{100 * m['accuracy']:.1f}%", f"{100 * m['said_supported']:.1f}%",
                  "-" if hard else f"{m['ece']:.3f}", "-" if hard else f"{m['brier']:.3f}", "")
    con.print(t)
    con.print("Platt parameters to pin (council/config/local_models.py CALIBRATION):")
    for tpl, platt in fitted.items():
        con.print(f'    "{tpl}": PlattScaling(slope={platt.slope:.4f}, intercept={platt.intercept:.4f}, '
                  f'fitted_on="{platt.fitted_on}"),')
    con.print(f"stacked weights on the raw log-odds: {[round(float(w), 3) for w in stack.coef_[0]]}, "
              f"intercept {float(stack.intercept_[0]):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fit", type=Path, default=DATA / "calibration_tf.jsonl", help="labelled claims to fit on")
    ap.add_argument("--test", type=Path, default=DATA / "claims_tf.jsonl", help="labelled claims to measure on")
    ap.add_argument("--raw", type=Path, default=DATA / "local_raw_probabilities.jsonl",
                    help="cache of raw token probabilities (JSONL, appended to; default: %(default)s)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N claims of each file")
    ap.add_argument("--no-collect", action="store_true", help="only report on what the cache already holds")
    ap.add_argument("--choose", action="store_true",
                    help="compare panels of the wordings in CANDIDATES on the --fit claims only (asks the model "
                         "for the fit claims alone) and print that table instead of the report")
    ap.add_argument("--compare", default="", help="comma-separated further wordings (prompt templates of "
                    "CANDIDATES) to ask and report beside the panel's, each alone")
    ap.add_argument("--cascade", action="store_true",
                    help="the local cascade's accuracy and share escalated per threshold (cached probabilities only)")
    args = ap.parse_args()
    fit, test = load(args.fit, args.limit), load(args.test, args.limit)
    cached: dict[tuple[str, str], float] = {}
    if args.raw.is_file():
        for line in args.raw.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            cached[(r["claim"], r["template"])] = r["p_supported"]
    panel = panel_templates()
    extra = [t for t in args.compare.split(",") if t and t not in panel]
    if unknown := [t for t in extra if t not in CANDIDATES]:
        raise SystemExit(f"--compare: not a candidate wording: {', '.join(unknown)} (see CANDIDATES)")
    if args.cascade:
        cascade([(args.fit.name, fit), (args.test.name, test)], cached)
        return
    if args.choose:
        if not args.no_collect:
            asyncio.run(collect(fit, args.raw, cached, list(CANDIDATES)))
        choose(fit, cached, args.fit.name, panel)
        return
    if not args.no_collect:
        # Alternate the two files, so a run cut short still has claims of both.
        both = [c for pair in zip(fit, test) for c in pair] + fit[len(test):] + test[len(fit):]
        asyncio.run(collect(both, args.raw, cached, panel + extra))
    report(fit, test, cached, args.fit.name, args.test.name, panel, extra)


if __name__ == "__main__":
    main()
