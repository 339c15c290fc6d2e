"""The eval harness's parts without model calls: golden files, scoring, arms, statistics, comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from council.errors import InputError
from council.eval.arms import known_recipes, parse_arms
from council.eval.golden import normalize_answer, read_golden, score_answer
from council.eval.outcomes import ArmOutcome
from council.eval.stats import (MIN_ITEMS_CI, MIN_ITEMS_ECE, accuracy_interval, arm_stats, compare_outcomes,
                                expected_calibration_error, tag_stats)

ROOT = Path(__file__).resolve().parents[1]


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_check_golden_bad_rows_by_line_and_good_rows_kept(tmp_path: Path) -> None:
    p = _jsonl(tmp_path / "g.jsonl", [
        {"id": "a", "claim": "Paris is in France.", "label": "supported", "tags": {"risk": "low"}},
        {"id": "b", "claim": "No label here."},
        "{not json",
        {"id": "a", "claim": "Duplicate id.", "label": "REFUTED"},
        {"id": "c", "claim": "Bad label.", "label": "MAYBE"},
        {"id": "d", "claim": "", "label": "REFUTED"},
        {"id": "e", "question": "Question works as the text too.", "label": "not enough info", "tags": ["x"]},
    ])
    gs = read_golden(p, "check")
    assert [(i.item_id, i.label, i.tags) for i in gs.items] == [
        ("a", "SUPPORTED", ["risk=low"]), ("e", "NOT_ENOUGH_INFO", ["x"])]
    reasons = {b.line: b.reason for b in gs.bad_rows}
    assert set(reasons) == {2, 3, 4, 5, 6}
    assert "no expected 'label'" in reasons[2]
    assert "invalid JSON" in reasons[3]
    assert reasons[4] == "duplicate id 'a' (first on line 1)"
    assert "unknown label 'MAYBE'" in reasons[5]
    assert "no 'claim' or 'question'" in reasons[6]
    assert len(gs.sha256) == 64


def test_ask_golden_csv_with_aliases_tags_and_missing_reference(tmp_path: Path) -> None:
    p = tmp_path / "g.csv"
    p.write_text('id,question,answer,aliases,tags\n'
                 'q1,What is the capital of Australia?,Canberra,"[""Canberra, ACT""]",domain=geo;risk=low\n'
                 'q2,Who wrote Middlemarch?,,George Eliot|Mary Ann Evans,\n'
                 'q3,A question without a reference?,,,\n'
                 'q4,"Too, many",columns,here,x,y\n', encoding="utf-8")
    gs = read_golden(p, "ask")
    assert [(i.item_id, i.answers, i.tags) for i in gs.items] == [
        ("q1", ["Canberra", "Canberra, ACT"], ["domain=geo", "risk=low"]),
        ("q2", ["George Eliot", "Mary Ann Evans"], [])]
    assert [(b.line, b.reason) for b in gs.bad_rows] == [
        (4, "no reference 'answer' or 'aliases' to score against"),
        (5, "expected 5 columns (id, question, answer, aliases, tags), got 6")]


def test_golden_file_problems_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown golden-set format '.txt'"):
        read_golden(tmp_path / "g.txt", "check")
    with pytest.raises(InputError, match="cannot read"):
        read_golden(tmp_path / "missing.jsonl", "check")
    p = _jsonl(tmp_path / "bad.jsonl", [{"claim": "x"}, {"claim": "y"}])
    with pytest.raises(InputError, match=r"no usable check item \(2 bad rows; line 1: no expected 'label'"):
        read_golden(p, "check")
    csv = tmp_path / "g.csv"
    csv.write_text("id,text,label\n1,x,SUPPORTED\n", encoding="utf-8")
    with pytest.raises(InputError, match="no 'claim' or 'question' column"):
        read_golden(csv, "check")


def test_short_answer_scoring() -> None:
    assert normalize_answer("The Éiffel Tower, in PARIS!") == ["eiffel", "tower", "in", "paris"]
    assert score_answer("It is Canberra.", ["Canberra"]) is True
    assert score_answer("canberra act", ["Canberra, ACT"]) is True
    assert score_answer("Sydney", ["Canberra"]) is False
    assert score_answer("Eight planets.", ["8"]) is True          # number words up to twenty
    assert score_answer("Canberraville", ["Canberra"]) is False   # whole words only
    assert score_answer("", ["Canberra"]) is None                 # nothing to score
    assert score_answer("George Eliot wrote it", ["Mary Ann Evans", "George Eliot"]) is True


def test_arms_parse_and_clear_errors() -> None:
    arms = parse_arms("single:m-a, majority,council", ["m-a", "m-b"])
    assert [(a.name, a.kind, a.model, a.recipe) for a in arms] == [
        ("single:m-a", "single", "m-a", None), ("majority", "majority", None, None), ("council", "recipe", None, "council")]
    assert "council" in known_recipes()
    with pytest.raises(InputError, match=r"arm 'single:gpt-9': no model 'gpt-9' in the catalog \(models: m-a, m-b\)"):
        parse_arms("single:gpt-9", ["m-a", "m-b"])
    with pytest.raises(InputError, match=r"arm 'debate': unknown recipe 'debate': the recipes are .*council"):
        parse_arms("majority,debate", ["m-a"])
    with pytest.raises(InputError, match="given twice"):
        parse_arms("majority,majority", ["m-a"])
    with pytest.raises(InputError, match="no arms"):
        parse_arms(" , ", ["m-a"])


def _outcomes(arm: str, right: list[bool], cost: float = 0.01, conf: float | None = 0.8) -> list[ArmOutcome]:
    return [ArmOutcome(item_id=f"i{n}", arm=arm, line=n + 1, status="ok", prediction="SUPPORTED", correct=r,
                       confidence=conf, cost_usd=cost, latency_s=float(n % 10)) for n, r in enumerate(right)]


def test_arm_statistics_and_refusals_for_small_sets() -> None:
    rows = _outcomes("x", [True] * 30 + [False] * 10)
    rows.append(ArmOutcome(item_id="f", arm="x", line=99, status="failed", cost_usd=0.01, error="no answer"))
    rows.append(ArmOutcome(item_id="s", arm="x", line=100, status="skipped_budget"))
    s = arm_stats("x", rows)
    assert (s.scored, s.correct, s.failed, s.skipped_budget) == (41, 30, 1, 1)
    assert s.accuracy == pytest.approx(30 / 41)
    assert s.ci_low is not None and s.ci_high is not None and s.ci_low < 30 / 41 < s.ci_high
    assert s.cost_usd == pytest.approx(0.41) and s.cost_per_correct_usd == pytest.approx(0.41 / 30)
    assert s.ece == pytest.approx(abs(30 / 40 - 0.8))  # one bin: confidence 0.8, accuracy of the answered 0.75
    assert s.latency_p50_s == pytest.approx(4.5)
    small = arm_stats("y", _outcomes("y", [True, False, True]))
    assert small.ci_low is None and small.ci_high is None
    assert small.ci_note == f"no interval: 3 scored items, at least {MIN_ITEMS_CI} needed"
    assert small.ece is None and f"at least {MIN_ITEMS_ECE} needed" in (small.ece_note or "")
    low, high, note = accuracy_interval([True] * 12)
    assert high == 1.0 and 0.7 < low < 0.8 and "Clopper-Pearson" in (note or "")  # not a [1, 1] "interval"


def test_calibration_error_of_a_calibrated_and_an_overconfident_arm() -> None:
    conf = [0.7] * 100
    ece, _ = expected_calibration_error(conf, [True] * 70 + [False] * 30)
    assert ece == pytest.approx(0.0)
    ece, _ = expected_calibration_error([0.95] * 100, [True] * 55 + [False] * 45)
    assert ece == pytest.approx(0.40)


def test_tag_breakdown() -> None:
    rows = _outcomes("x", [True, False] * 10)
    tags = {f"i{n}": ["risk=high" if n % 2 else "risk=low"] for n in range(20)}
    by = {t.tag: t for t in tag_stats("x", rows, tags)}
    assert by["risk=low"].accuracy == 1.0 and by["risk=high"].accuracy == 0.0 and by["risk=low"].scored == 10


def test_paired_comparison_flags_a_drop_and_a_cost_rise_and_passes_an_equal() -> None:
    base = _outcomes("council", [True] * 36 + [False] * 4)
    worse = _outcomes("council", [True] * 24 + [False] * 16)
    c = compare_outcomes("council", base, worse)
    assert (c.paired, c.only_a_right, c.only_b_right) == (40, 12, 0)
    assert c.p_value is not None and c.p_value < 0.001 and c.accuracy_dropped and c.regression
    same = compare_outcomes("council", base, _outcomes("council", [True] * 36 + [False] * 4))
    assert same.p_value == 1.0 and not same.regression
    pricier = compare_outcomes("council", base, _outcomes("council", [True] * 36 + [False] * 4, cost=0.012))
    assert pricier.cost_per_correct_change == pytest.approx(0.2) and pricier.cost_rose and not pricier.accuracy_dropped
    better = compare_outcomes("council", worse, base)
    assert not better.accuracy_dropped  # an improvement is not a regression


def test_shipped_golden_sets_read_cleanly() -> None:
    check = read_golden(ROOT / "benchmarks" / "data" / "claims_tf.jsonl", "check")
    assert len(check.items) == 120 and not check.bad_rows
    ask = read_golden(ROOT / "benchmarks" / "data" / "short_answers.jsonl", "ask")
    assert len(ask.items) >= 30 and not ask.bad_rows and all(i.answers for i in ask.items)
