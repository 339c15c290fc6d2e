"""Panel qualification: a pure function from (catalog, policy, request needs) to a panel.

Filter the catalog by the policy's required capabilities plus what the request needs (an image needs
vision; a long input rules out models whose context window is too small), drop models above the policy's
price ceilings, rank by quality then price, pick the panel preferring provider diversity. What remains of
the ranking is each member's fallback chain. No I/O, no clock, no randomness: the same inputs always give
the same panel, so a run's panel can be explained from its records.
"""

from __future__ import annotations

import math
import string

from pydantic import BaseModel, Field

from .catalog import ModelEntry
from council.errors import InputError, QualificationError
from .policy import LATENCY_ORDER, Capability, TaskPolicy

__all__ = ["Panel", "PanelSeat", "RequestNeeds", "estimate_tokens", "qualify", "exclusion_reason"]


def estimate_tokens(text: str) -> int:
    """A provider-independent token estimate (4 characters a token), used for budgets and ceilings."""
    return math.ceil(len(text) / 4)


class RequestNeeds(BaseModel):
    """What one request needs of a model beyond its policy."""

    capabilities: frozenset[Capability] = frozenset()
    """E.g. ``vision`` when an image is attached."""
    prompt_tokens: int = 0
    """Estimated prompt tokens of the request."""


class PanelSeat(BaseModel):
    """One member of the panel: its label and its ranked fallback chain (first choice first)."""

    label: str
    chain: list[ModelEntry] = Field(min_length=1)


class Panel(BaseModel):
    """The qualified panel for one policy and request."""

    policy: TaskPolicy
    seats: list[PanelSeat]
    ranking: list[str]
    """Catalog names of every qualified model, best first."""
    excluded: dict[str, str]
    """Catalog name -> why the model did not qualify."""


def exclusion_reason(entry: ModelEntry, policy: TaskPolicy, needs: RequestNeeds) -> str | None:
    """Why ``entry`` cannot serve ``policy`` for this request, or None when it qualifies."""
    if policy.allowed_models is not None and entry.name not in policy.allowed_models:
        return f"not in the allowed models of policy {policy.name!r}"
    if entry.answer_style not in policy.answer_styles:
        return f"answers in {entry.answer_style} style; policy {policy.name!r} needs {' or '.join(policy.answer_styles)}"
    caps = entry.capabilities or frozenset({"text"})
    missing = sorted((set(policy.required_capabilities) | set(needs.capabilities)) - set(caps))
    if missing:
        return f"lacks capability {', '.join(missing)}"
    if entry.quality < policy.min_quality:
        return f"quality {entry.quality:g} below the policy minimum {policy.min_quality:g}"
    if LATENCY_ORDER[entry.latency_tier] > LATENCY_ORDER[policy.max_latency_tier]:
        return f"latency tier {entry.latency_tier} slower than {policy.max_latency_tier}"
    if policy.max_input_usd_per_mtok is not None or policy.max_output_usd_per_mtok is not None:
        if not entry.has_price:
            return "price unknown (set input_usd_per_mtok and output_usd_per_mtok, or local = true)"
        if not entry.local:
            inp, out = entry.input_usd_per_mtok or 0.0, entry.output_usd_per_mtok or 0.0
            if policy.max_input_usd_per_mtok is not None and inp > policy.max_input_usd_per_mtok:
                return f"input price ${inp:g}/Mtok above the ceiling ${policy.max_input_usd_per_mtok:g}/Mtok"
            if policy.max_output_usd_per_mtok is not None and out > policy.max_output_usd_per_mtok:
                return f"output price ${out:g}/Mtok above the ceiling ${policy.max_output_usd_per_mtok:g}/Mtok"
    if entry.context_window is not None and needs.prompt_tokens + policy.max_output_tokens > entry.context_window:
        return (
            f"context window {entry.context_window} too small for ~{needs.prompt_tokens} prompt "
            f"+ {policy.max_output_tokens} output tokens"
        )
    return None


def _rank_key(entry: ModelEntry) -> tuple[float, float, str]:
    price = 0.0 if entry.local else (entry.input_usd_per_mtok or 0.0) + (entry.output_usd_per_mtok or 0.0)
    return (-entry.quality, price, entry.name)


def qualify(catalog: list[ModelEntry], policy: TaskPolicy, needs: RequestNeeds | None = None) -> Panel:
    """Choose the panel for ``policy``; raise when the request cannot be served at all."""
    needs = needs or RequestNeeds()
    if needs.prompt_tokens > policy.context_budget_tokens:
        raise InputError(
            f"input of ~{needs.prompt_tokens} tokens is over the context budget of policy "
            f"{policy.name!r} ({policy.context_budget_tokens} tokens)"
        )
    excluded: dict[str, str] = {}
    qualified: list[ModelEntry] = []
    for entry in catalog:
        reason = exclusion_reason(entry, policy, needs)
        if reason is None:
            qualified.append(entry)
        else:
            excluded[entry.name] = reason
    if not qualified:
        if not catalog:
            raise QualificationError("the model catalog is empty: add [models.NAME] entries to the config")
        detail = "; ".join(f"{n}: {r}" for n, r in excluded.items())
        raise QualificationError(f"no model qualifies for policy {policy.name!r} ({detail})")
    ranked = sorted(qualified, key=_rank_key)
    size = min(policy.panel_size, len(ranked))
    primaries: list[ModelEntry] = []
    providers: set[str | None] = set()
    for entry in ranked:  # first pass: one model per provider, best first
        if len(primaries) < size and entry.provider not in providers:
            primaries.append(entry)
            providers.add(entry.provider)
    for entry in ranked:  # fill the rest with the best remaining
        if len(primaries) < size and entry not in primaries:
            primaries.append(entry)
    primaries.sort(key=_rank_key)
    spare = [e for e in ranked if e not in primaries]
    seats: list[PanelSeat] = []
    for i, primary in enumerate(primaries):
        if policy.fallback == "none":
            chain = [primary]
        else:
            others = spare + [e for e in primaries if e is not primary]
            chain = [primary] + others[: policy.max_fallbacks]
        seats.append(PanelSeat(label=_label(i), chain=chain))
    return Panel(policy=policy, seats=seats, ranking=[e.name for e in ranked], excluded=excluded)


def _label(i: int) -> str:
    letters = string.ascii_uppercase
    return letters[i] if i < len(letters) else f"{letters[i // len(letters) - 1]}{letters[i % len(letters)]}"
