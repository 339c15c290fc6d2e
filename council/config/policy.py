"""Task policies: model choice as explicit, versioned workflow policy.

A policy says, for one kind of task, what a model must be able to do and what it may cost. Policies are
data: the defaults ship in ``graphs/policies.toml`` and a user's config may override any field. A policy's
version is a hash of its content, so every call record names exactly the rules that governed it.
"""

from __future__ import annotations

import json
import types
import typing
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from council.ids import content_id

__all__ = ["Capability", "LatencyTier", "PolicyField", "TaskPolicy", "LATENCY_ORDER", "policy_fields"]

Capability = Literal[
    "text", "vision", "tools", "json_schema", "long_context", "reasoning", "audio", "local"
]
LatencyTier = Literal["fast", "standard", "slow"]
LATENCY_ORDER: dict[str, int] = {"fast": 0, "standard": 1, "slow": 2}


class TaskPolicy(BaseModel):
    """The rules for one kind of task (research question, fact check, adjudication, ...)."""

    # Each field's docstring is its description (``council policies``, the README's policy table).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str
    """Policy name, e.g. ``research``, ``fact_check``, ``adjudication``."""
    description: str = ""
    """What the policy is for, in one line."""
    required_capabilities: tuple[Capability, ...] = ("text",)
    """Every qualified model must have all of these."""
    min_quality: float = 0.0
    """Models whose quality score is below this are not qualified."""
    answer_styles: tuple[Literal["structured", "sentence"], ...] = ("structured", "sentence")
    """Answer styles a model may have to serve this policy (an adjudicator must answer structured)."""
    allowed_models: tuple[str, ...] | None = None
    """If set, only these catalog names may serve the policy (an explicit pin, still ranked)."""
    context_budget_tokens: int = 8000
    """The most prompt tokens a call may use; a model with a smaller window is ruled out for long inputs."""
    max_output_tokens: int = 800
    """``max_tokens`` sent with every call, and the output side of a call's worst-case cost."""
    evidence_required: bool = False
    """Members must cite sources for their claims."""
    human_review: Literal["never", "when_flagged", "when_contested", "always"] = "never"
    """When a human must review the verdict before it is relied on: never; when one of the ``review_*``
    conditions below fires (``when_flagged``; ``when_contested`` is its former name); or always."""
    review_contested: bool = True
    """Flag a verdict the weighted vote could not settle (the adjudicator was asked, or a cluster stayed
    unresolved)."""
    review_below_agreement: float | None = Field(default=None, ge=0.0, le=1.0)
    """Flag a verdict whose agreement (share of members behind it) is below this (1.0: any dissent)."""
    review_below_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    """Flag a verdict whose confidence is below this."""
    review_degraded: bool = True
    """Flag a verdict of a degraded council (a member or the adjudicator failed, quorum not met)."""
    review_unverified_evidence: bool = True
    """With ``evidence_required``: flag a verdict that rests on no claim with a verified citation."""
    review_overruled: bool = True
    """Flag a fact check whose adjudicator ruled a label other than the one the weighted vote leaned to."""
    review_suspicious: bool = True
    """Flag a verdict where a member's answer or a source passage looked like instructions to the model
    (``council.deliberation.injection``)."""
    review_tags: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Item tags that send a verdict to review, written as a table: ``review_tags = {risk = ["high"]}``
    flags the runs tagged risk=high (a single value may be given as a string). Held as sorted pairs so
    the policy stays hashable and its version does not depend on the order the tags were written in."""

    @field_validator("review_tags", mode="before")
    @classmethod
    def _tag_table(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return tuple(sorted((str(k), tuple([vals] if isinstance(vals, str) else vals)) for k, vals in v.items()))
        return v
    fallback: Literal["next_qualified", "none"] = "next_qualified"
    """What to do when a model fails or would cost too much: try the next qualified model, or give up."""
    max_fallbacks: int = Field(default=3, ge=0)
    """How many further models a member may fall back to after its first choice."""
    max_latency_tier: LatencyTier = "slow"
    """Models of a slower latency tier are not qualified."""
    panel_size: int = Field(default=3, ge=1)
    """How many members the panel has (1 for adjudication)."""
    quorum: int = Field(default=2, ge=1)
    """How many members must answer for the council to count as full; fewer means degraded."""
    max_input_usd_per_mtok: float | None = None
    """Price ceiling on input tokens (USD per million); models above it are not qualified."""
    max_output_usd_per_mtok: float | None = None
    """Price ceiling on output tokens (USD per million); models above it are not qualified."""
    max_call_usd: float | None = None
    """Worst-case cost ceiling of one call; a model that would break it is skipped for the next one."""
    timeout_s: float = Field(default=60.0, gt=0)
    """Seconds before one call is abandoned as a timeout."""
    attempts_per_model: int = Field(default=1, ge=1)
    """Attempts on one model after transient errors (honouring Retry-After) before falling back."""
    rate_limit_wait_s: float = Field(default=60.0, ge=0.0)
    """The longest one model may keep a call waiting for rate-limit capacity (the limiter's queue, a 429's
    Retry-After, a provider's announced reset) before the call falls back to the next model; 0 falls back
    at once. A 429 is retried on the same model while its wait fits in this, whatever
    ``attempts_per_model`` says."""
    answer_retries: int = Field(default=1, ge=0)
    """Extra attempts on the same model when its answer is not valid structured output."""
    temperature: float | None = 0.2
    """Sampling temperature sent with every call of this policy (None: the model's default)."""
    vote_settle_at: float = Field(default=0.8, gt=0.5, le=1.0)
    """A disputed cluster (or fact-check label) is settled by the weighted vote when its posterior is at
    least this (or at most 1 minus this); otherwise it is contested and goes to the adjudicator."""
    min_supporters: int = Field(default=2, ge=1)
    """An uncontradicted cluster is accepted by vote once this many members state it."""
    escalate_label_below: float | None = Field(default=None, gt=0.5, le=1.0)
    """For a cascade's cheap tier on a fact check: the label goes to the strong tier while its vote
    posterior is below this, even when the vote settles it (cost follows doubt). None: only an unsettled
    label is escalated."""
    max_revision_rounds: int = Field(default=2, ge=1, le=10)
    """For a recipe's ``revise`` stage: the most revision rounds after the first answers; rounds stop
    earlier at convergence (nothing contested, or every member held its answer)."""
    reliability_prior: float = Field(default=0.7, gt=0.0, lt=1.0)
    """Assumed accuracy of a model with no history in the store."""
    reliability_prior_weight: float = Field(default=4.0, ge=0.0)
    """How many past judgements the prior counts as when smoothing a model's learned reliability."""
    reliability_min_feedback: int = Field(default=20, ge=1)
    """With at least this many human-labelled judgements (``council feedback``), a model's reliability is
    learned from those alone, not from agreement with the council's own verdicts."""

    @cached_property
    def version(self) -> str:
        """Content hash of the policy: the same rules always give the same version (computed once: the
        policy is frozen, and every call record names it)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return content_id(blob, length=12)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class PolicyField(BaseModel):
    """One field of ``TaskPolicy``, as ``council policies`` lists it."""

    name: str
    type: str
    """The accepted values, in words (``number``, ``one of never, always``, ``list of ...``)."""
    default: Any
    """The value when neither graphs/policies.toml nor the config sets it."""
    description: str
    """The field's docstring."""


def _type_words(t: Any) -> str:
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        words = " or ".join(_type_words(a) for a in rest)
        return words + (" (or unset)" if len(rest) < len(args) else "")
    if origin in (tuple, list):
        return "list of " + _type_words(args[0]).replace("one of ", "")
    return {str: "text", int: "integer", float: "number", bool: "true/false"}.get(t, getattr(t, "__name__", str(t)))


def policy_fields() -> list[PolicyField]:
    """Every field a policy has, from the model itself: one source of truth for the docs and the command."""
    out = []
    for name, f in TaskPolicy.model_fields.items():
        default = None if f.is_required() else f.get_default(call_default_factory=True)
        out.append(PolicyField(name=name, type=_type_words(f.annotation), default=default,
                               description=" ".join((f.description or "").split())))
    return out
