"""A simulated fact-check panel of known accuracies and prices, with its golden set: the eval harness's
ground truth (tests, ``benchmarks/bench_eval.py``, ``notebooks/04_eval.ipynb``).

    sim = simulated_panel(200, {"m90": 0.9, "m75": 0.75, "m60": 0.6}, seed=1)
    srv = ScriptedServer(sim.script).start()
    config = sim.config(srv.base_url)
    sim.write_golden("golden.jsonl")

Each item is "Statement NNNN is true." with a random true label (SUPPORTED or REFUTED). Each member is
right on exactly its set share of the items (or, with ``exact=False``, on each item with its set
probability), drawn independently per member from ``seed``, and states its set accuracy as its confidence
(a calibrated member). The judge (adjudicator) is right with
``judge_accuracy``. ``sim.right[model][i]`` says whether the model was scripted right on item ``i``, so a
test can compare the harness's figures with the truth as realized, as well as with the set rates. Items
carry tags ``risk=high``/``risk=low`` (alternating) and ``domain=even``/``domain=odd``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SimulatedPanel", "simulated_panel"]


@dataclass
class SimulatedPanel:
    """The script, the truth, and a config builder for one simulated panel."""

    script: dict[str, Any]
    golden: list[dict[str, Any]]
    accuracies: dict[str, float]
    prices: dict[str, tuple[float, float]]
    """Model -> (input, output) USD per million tokens."""
    right: dict[str, list[bool]] = field(default_factory=dict)
    judge: str = "judge"

    def config(self, base_url: str, *, panel: list[str] | None = None, database: str | None = None) -> dict[str, Any]:
        """Config tables: every model at ``base_url``; the fact-check panel is ``panel`` (default: all
        members), no fallbacks, so each seat is exactly its model."""
        members = panel or list(self.accuracies)

        def entry(name: str, quality: float) -> dict[str, Any]:
            p_in, p_out = self.prices[name]
            return {"model": f"openai/{name}", "api_base": base_url, "quality": quality, "provider": f"p-{name}",
                    "input_usd_per_mtok": p_in, "output_usd_per_mtok": p_out}

        models = {m: entry(m, round(100 * a)) for m, a in self.accuracies.items()}
        models[self.judge] = entry(self.judge, 95)
        tables: dict[str, Any] = {
            "embedding": "lexical",
            "models": models,
            "policies": {
                "fact_check": {"allowed_models": members, "panel_size": len(members),
                               "quorum": max(1, len(members) // 2 + 1), "fallback": "none", "answer_retries": 0,
                               "timeout_s": 30.0},
                "adjudication": {"allowed_models": [self.judge], "timeout_s": 30.0},
            },
        }
        if database is not None:
            tables["database"] = database
        return tables

    def write_golden(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text("".join(json.dumps(r) + "\n" for r in self.golden), encoding="utf-8")
        return p


def simulated_panel(n: int, accuracies: dict[str, float], *, prices: dict[str, tuple[float, float]] | None = None,
                    judge_accuracy: float = 0.8, seed: int = 0, latency: float = 0.0,
                    exact: bool = True) -> SimulatedPanel:
    """Script ``n`` labelled statements for members of the given accuracies (see the module docstring).

    ``exact``: each member is right on exactly ``round(accuracy × n)`` items, at positions drawn at random
    independently per member (so its realized accuracy is its set one); False: right on each item with
    probability ``accuracy`` (Bernoulli draws, realized accuracies vary around the set ones)."""
    rng = random.Random(seed)
    planned: dict[str, set[int]] = {m: set(rng.sample(range(n), round(a * n))) for m, a in accuracies.items()}
    prices = dict(prices or {})
    for i, m in enumerate(accuracies):
        prices.setdefault(m, (0.5 * (i + 1), 1.0 * (i + 1)))
    prices.setdefault("judge", (3.0, 6.0))
    models: dict[str, dict[str, Any]] = {m: {"latency": latency, "answers": []} for m in [*accuracies, "judge"]}
    right: dict[str, list[bool]] = {m: [] for m in accuracies}
    golden = []
    for i in range(n):
        key = f"Statement {i:04d}"
        truth = rng.random() < 0.5
        golden.append({"id": f"s{i:04d}", "claim": f"{key} is true.", "label": "SUPPORTED" if truth else "REFUTED",
                       "tags": {"risk": "high" if i % 2 else "low", "domain": "odd" if i % 2 else "even"}})
        for m, acc in accuracies.items():
            draw = rng.random() < acc
            ok = i in planned[m] if exact else draw
            right[m].append(ok)
            says = truth if ok else not truth
            text = f"{key} is true." if says else f"{key} is not true."
            models[m]["answers"].append({"match": key, "content": {
                "answer": text, "label": "SUPPORTED" if says else "REFUTED", "confidence": acc,
                "claims": [{"text": text, "confidence": acc}]}})
        judge_says = truth if rng.random() < judge_accuracy else not truth
        models["judge"]["answers"].append({"match": key, "content": {
            "answer": f"{key} is {'true' if judge_says else 'not true'}.",
            "label": "SUPPORTED" if judge_says else "REFUTED", "confidence": judge_accuracy, "rationale": "simulated",
            # A fact-check ruling must cite a claim it was shown (C1 is always one).
            "supported": ["C1"]}})
    return SimulatedPanel(script={"seed": seed, "models": models}, golden=golden, accuracies=dict(accuracies),
                          prices=prices, right=right)
