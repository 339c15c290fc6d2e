"""Tests of council.qualify: the pure function from (catalog, policy, request needs) to a panel."""

from __future__ import annotations

import pytest

from council.config.catalog import ModelEntry
from council.errors import InputError, QualificationError
from council.config.policy import TaskPolicy
from council.config.qualify import Panel, RequestNeeds, estimate_tokens, exclusion_reason, qualify


def m(name: str, quality: float = 50, price_in: float | None = 1.0, price_out: float | None = 2.0,
      provider: str | None = None, caps: tuple[str, ...] = ("text",), window: int | None = 128_000,
      **kw) -> ModelEntry:
    """A resolved catalog entry (every field the gateway would fill is given)."""
    return ModelEntry(
        name=name, model=f"openai/{name}", provider=provider or f"prov-{name}", quality=quality,
        input_usd_per_mtok=price_in, output_usd_per_mtok=price_out, capabilities=frozenset(caps),
        context_window=window, **kw,
    )


def policy(**kw) -> TaskPolicy:
    return TaskPolicy(name=kw.pop("name", "research"), **kw)


def chains(panel: Panel) -> dict[str, list[str]]:
    return {s.label: [e.name for e in s.chain] for s in panel.seats}


def primaries(panel: Panel) -> list[str]:
    return [s.chain[0].name for s in panel.seats]


# ------------------------------------------------------------------------------------------ filters


def test_image_request_needs_vision():
    catalog = [m("text-only", 90), m("seeing", 60, caps=("text", "vision"))]
    panel = qualify(catalog, policy(panel_size=2), RequestNeeds(capabilities=frozenset({"vision"})))
    assert primaries(panel) == ["seeing"]
    assert panel.excluded == {"text-only": "lacks capability vision"}
    # Without the image both qualify, best first.
    assert qualify(catalog, policy(panel_size=2)).ranking == ["text-only", "seeing"]


def test_policy_required_capabilities_are_all_needed():
    catalog = [m("a", caps=("text", "tools")), m("b", caps=("text", "json_schema")),
               m("c", caps=("text", "tools", "json_schema"))]
    panel = qualify(catalog, policy(required_capabilities=("text", "tools", "json_schema")))
    assert panel.ranking == ["c"]
    assert panel.excluded == {"a": "lacks capability json_schema", "b": "lacks capability tools"}


def test_missing_capabilities_are_all_named():
    reason = exclusion_reason(m("a"), policy(required_capabilities=("tools", "reasoning")), RequestNeeds())
    assert reason == "lacks capability reasoning, tools"


def test_min_quality():
    catalog = [m("good", 80), m("edge", 60), m("poor", 59.5)]
    panel = qualify(catalog, policy(min_quality=60))
    assert panel.ranking == ["good", "edge"]
    assert panel.excluded == {"poor": "quality 59.5 below the policy minimum 60"}


@pytest.mark.parametrize(
    ("tier", "expected"),
    [("fast", ["f"]), ("standard", ["f", "s"]), ("slow", ["f", "s", "z"])],
)
def test_latency_tier(tier, expected):
    catalog = [m("f", latency_tier="fast"), m("s", latency_tier="standard"), m("z", latency_tier="slow")]
    panel = qualify(catalog, policy(max_latency_tier=tier))
    assert sorted(panel.ranking) == expected
    for name in {"f", "s", "z"} - set(expected):
        assert panel.excluded[name].startswith("latency tier ")
        assert panel.excluded[name].endswith(f"slower than {tier}")


def test_allowed_models_pin_is_still_ranked():
    catalog = [m("a", 90), m("b", 70), m("c", 80)]
    panel = qualify(catalog, policy(allowed_models=("b", "c"), panel_size=3))
    assert panel.ranking == ["c", "b"]
    assert primaries(panel) == ["c", "b"]
    assert panel.excluded == {"a": "not in the allowed models of policy 'research'"}


# ------------------------------------------------------------------------------------------ prices


def test_input_and_output_price_ceilings():
    catalog = [m("cheap", 50, 1.0, 2.0), m("dear-in", 90, 20.0, 2.0), m("dear-out", 80, 1.0, 70.0),
               m("at-ceiling", 60, 15.0, 60.0)]
    panel = qualify(catalog, policy(max_input_usd_per_mtok=15.0, max_output_usd_per_mtok=60.0, panel_size=3))
    assert panel.ranking == ["at-ceiling", "cheap"]
    assert panel.excluded == {
        "dear-in": "input price $20/Mtok above the ceiling $15/Mtok",
        "dear-out": "output price $70/Mtok above the ceiling $60/Mtok",
    }


def test_unknown_price_is_excluded_under_a_ceiling_with_a_clear_reason():
    catalog = [m("priced", 40), m("mystery", 90, None, None), m("half", 90, 1.0, None)]
    panel = qualify(catalog, policy(max_input_usd_per_mtok=15.0))
    assert panel.ranking == ["priced"]
    for name in ("mystery", "half"):
        reason = panel.excluded[name]
        assert reason.startswith("price unknown")
        assert "input_usd_per_mtok" in reason and "local = true" in reason


def test_unknown_price_qualifies_when_the_policy_has_no_ceiling():
    catalog = [m("priced", 40), m("mystery", 90, None, None)]
    panel = qualify(catalog, policy(panel_size=2))
    assert panel.ranking == ["mystery", "priced"]
    assert panel.excluded == {}


def test_local_models_always_count_as_price_zero():
    # A local model qualifies under any ceiling, even with no price or a silly configured one ...
    catalog = [m("local-noprice", 50, None, None, local=True), m("local-priced", 50, 999.0, 999.0, local=True),
               m("cloud", 50, 0.01, 0.01)]
    panel = qualify(catalog, policy(max_input_usd_per_mtok=1.0, max_output_usd_per_mtok=1.0, panel_size=3))
    assert panel.excluded == {}
    # ... and ranks as free: at equal quality it comes before a paid model (name breaks the local tie).
    assert panel.ranking == ["local-noprice", "local-priced", "cloud"]


# ------------------------------------------------------------------------------------------ context


def test_context_window_too_small_for_prompt_plus_output():
    catalog = [m("small", 90, window=4000), m("big", 50, window=32_000), m("unknown", 40, window=None)]
    needs = RequestNeeds(prompt_tokens=3300)
    panel = qualify(catalog, policy(max_output_tokens=800, context_budget_tokens=8000, panel_size=3), needs)
    assert panel.ranking == ["big", "unknown"]
    assert panel.excluded == {"small": "context window 4000 too small for ~3300 prompt + 800 output tokens"}
    # Exactly fitting (3200 + 800 = 4000) is fine.
    fits = qualify(catalog, policy(max_output_tokens=800, panel_size=3), RequestNeeds(prompt_tokens=3200))
    assert "small" in fits.ranking


def test_input_over_the_context_budget_is_an_input_error():
    with pytest.raises(InputError) as err:
        qualify([m("a")], policy(context_budget_tokens=1000), RequestNeeds(prompt_tokens=1001))
    assert str(err.value) == (
        "input of ~1001 tokens is over the context budget of policy 'research' (1000 tokens)"
    )
    assert qualify([m("a")], policy(context_budget_tokens=1000), RequestNeeds(prompt_tokens=1000)).ranking == ["a"]


def test_estimate_tokens_is_four_characters_a_token():
    assert [estimate_tokens(s) for s in ("", "a", "abcd", "abcde", "x" * 4001)] == [0, 1, 1, 2, 1001]


# ------------------------------------------------------------------------------------------ ranking


def test_ranking_by_quality_then_price_then_name():
    catalog = [m("b-cheap", 70, 1.0, 1.0), m("top", 90, 50.0, 50.0), m("a-cheap", 70, 1.0, 1.0),
               m("dear", 70, 5.0, 5.0), m("low", 10, 0.0, 0.0)]
    panel = qualify(catalog, policy(panel_size=5))
    assert panel.ranking == ["top", "a-cheap", "b-cheap", "dear", "low"]
    assert primaries(panel) == panel.ranking
    assert [s.label for s in panel.seats] == ["A", "B", "C", "D", "E"]


def test_same_inputs_in_any_order_give_the_same_panel():
    catalog = [m("a", 80, provider="x"), m("b", 80, provider="x"), m("c", 70, provider="y"),
               m("d", 60, provider="z"), m("e", 60, provider="z")]
    p = policy(panel_size=3, max_fallbacks=2)
    first = qualify(catalog, p)
    assert qualify(list(reversed(catalog)), p) == first
    assert qualify(catalog[2:] + catalog[:2], p) == first


# ------------------------------------------------------------------------------------------ panel


def test_provider_diversity_beats_a_second_model_of_the_same_provider():
    catalog = [m("x-best", 95, provider="x"), m("x-second", 90, provider="x"), m("y-ok", 60, provider="y")]
    panel = qualify(catalog, policy(panel_size=2))
    assert primaries(panel) == ["x-best", "y-ok"]
    assert panel.ranking == ["x-best", "x-second", "y-ok"]
    # x-second is the spare: first in every fallback chain.
    assert chains(panel) == {"A": ["x-best", "x-second", "y-ok"], "B": ["y-ok", "x-second", "x-best"]}


def test_same_provider_fills_seats_when_no_other_provider_is_left():
    catalog = [m("x1", 95, provider="x"), m("x2", 90, provider="x"), m("x3", 85, provider="x"),
               m("y1", 50, provider="y")]
    panel = qualify(catalog, policy(panel_size=3))
    # One per provider first (x1, y1), then the best remaining (x2); seats in rank order.
    assert primaries(panel) == ["x1", "x2", "y1"]


def test_panel_is_smaller_than_panel_size_when_few_qualify():
    catalog = [m("a", 80), m("b", 70), m("c", 20)]
    panel = qualify(catalog, policy(panel_size=5, min_quality=50))
    assert primaries(panel) == ["a", "b"]
    assert [s.label for s in panel.seats] == ["A", "B"]
    assert panel.policy.panel_size == 5


def test_labels_continue_past_z():
    catalog = [m(f"m{i:02d}", 100 - i) for i in range(28)]
    panel = qualify(catalog, policy(panel_size=28, fallback="none"))
    labels = [s.label for s in panel.seats]
    assert labels[:3] == ["A", "B", "C"]
    assert labels[25:] == ["Z", "AA", "AB"]
    assert len(set(labels)) == 28


# ------------------------------------------------------------------------------------------ fallbacks


def test_fallback_chain_is_spares_first_then_other_primaries_truncated():
    catalog = [m("a", 90), m("b", 80), m("c", 70), m("d", 60), m("e", 50)]
    panel = qualify(catalog, policy(panel_size=3, max_fallbacks=3))
    assert chains(panel) == {
        "A": ["a", "d", "e", "b"],
        "B": ["b", "d", "e", "a"],
        "C": ["c", "d", "e", "a"],
    }


def test_fallback_chain_without_truncation_has_every_other_model_once():
    catalog = [m("a", 90), m("b", 80), m("c", 70), m("d", 60)]
    panel = qualify(catalog, policy(panel_size=2, max_fallbacks=10))
    assert chains(panel) == {"A": ["a", "c", "d", "b"], "B": ["b", "c", "d", "a"]}


def test_max_fallbacks_zero_and_fallback_none_give_single_model_chains():
    catalog = [m("a", 90), m("b", 80), m("c", 70)]
    for p in (policy(panel_size=2, max_fallbacks=0), policy(panel_size=2, fallback="none")):
        panel = qualify(catalog, p)
        assert chains(panel) == {"A": ["a"], "B": ["b"]}
        assert panel.ranking == ["a", "b", "c"]


def test_single_seat_adjudication_panel_falls_back_down_the_ranking():
    catalog = [m("judge", 90), m("b", 80), m("c", 70), m("d", 60), m("e", 50)]
    panel = qualify(catalog, policy(name="adjudication", panel_size=1, max_fallbacks=2))
    assert chains(panel) == {"A": ["judge", "b", "c"]}


# ------------------------------------------------------------------------------------------ failures


def test_qualification_error_names_every_excluded_model_and_its_reason():
    catalog = [
        m("blind", caps=("text",)),
        m("pricey", 50, 100.0, 100.0, caps=("text", "vision")),
        m("sluggish", caps=("text", "vision"), latency_tier="slow"),
        m("tiny", caps=("text", "vision"), window=500),
    ]
    p = policy(name="fact_check", max_input_usd_per_mtok=10.0, max_latency_tier="standard", max_output_tokens=600)
    with pytest.raises(QualificationError) as err:
        qualify(catalog, p, RequestNeeds(capabilities=frozenset({"vision"}), prompt_tokens=100))
    assert str(err.value) == (
        "no model qualifies for policy 'fact_check' ("
        "blind: lacks capability vision; "
        "pricey: input price $100/Mtok above the ceiling $10/Mtok; "
        "sluggish: latency tier slow slower than standard; "
        "tiny: context window 500 too small for ~100 prompt + 600 output tokens)"
    )


def test_empty_catalog_is_a_qualification_error():
    with pytest.raises(QualificationError) as err:
        qualify([], policy())
    assert "catalog is empty" in str(err.value)
    assert "[models.NAME]" in str(err.value)


def test_excluded_models_are_reported_beside_a_successful_panel():
    catalog = [m("quick", 60, latency_tier="fast"), m("slow", 90, latency_tier="slow")]
    panel = qualify(catalog, policy(max_latency_tier="fast", panel_size=3))
    assert chains(panel) == {"A": ["quick"]}
    assert panel.ranking == ["quick"]
    assert panel.excluded == {"slow": "latency tier slow slower than fast"}
