"""The model catalog: what each configured model can do, what it costs, and how to reach it.

An entry names any litellm model string (``openai/gpt-4o-mini``, ``anthropic/...``, ``ollama/llama3``,
``openai/my-model`` with an ``api_base`` for vLLM or any OpenAI-compatible server). Capabilities, prices and
context windows default from litellm's model cost map (looked up through the gateway, the one module that
imports litellm) and any of them can be overridden per entry in the config.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from council.errors import ConfigError
from .policy import Capability, LatencyTier

FactLabel = Literal["SUPPORTED", "REFUTED", "NOT_ENOUGH_INFO"]

__all__ = ["FactLabel", "ModelDefaults", "ModelEntry", "PlattScaling", "resolve_catalog", "price_of"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")


class PlattScaling(BaseModel):
    """``P(SUPPORTED) = sigmoid(slope * logit(p) + intercept)`` for a raw token probability ``p``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slope: float
    """Multiplies the raw log-odds (below 1: the model is over-confident)."""
    intercept: float
    """Added to the log-odds (negative: the model leans towards SUPPORTED)."""
    fitted_on: str = ""
    """What the parameters were fitted on (data set, size), for the record."""

    def apply(self, p: float) -> float:
        """The calibrated probability for raw probability ``p``."""
        p = min(max(p, 1e-6), 1.0 - 1e-6)
        z = self.slope * math.log(p / (1.0 - p)) + self.intercept
        return 1.0 / (1.0 + math.exp(-z)) if z > -50 else 0.0


class ModelDefaults(BaseModel):
    """What litellm's model cost map knows of one model string."""

    provider: str
    """The litellm provider (``openai``, ``anthropic``, ...)."""
    capabilities: frozenset[Capability] = frozenset({"text"})
    """Capabilities litellm reports (``supports_vision`` and friends)."""
    input_usd_per_mtok: float | None = None
    """Input price, USD per million tokens; None when litellm has no price."""
    output_usd_per_mtok: float | None = None
    """Output price, USD per million tokens; None when litellm has no price."""
    context_window: int | None = None
    """Maximum input tokens; None when unknown."""
    max_output_tokens: int | None = None
    """Maximum output tokens; None when unknown."""


class ModelEntry(BaseModel):
    """One model of the catalog, as configured (fields left unset are filled from litellm's map)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    """Catalog name: how config, policies, records and the CLI refer to this model."""
    model: str
    """The litellm model string the call is made with."""
    api_base: str | None = None
    """Base URL of the provider endpoint (for Ollama, vLLM, llama.cpp or any OpenAI-compatible server)."""
    api_key_env: str | None = None
    """Name of the environment variable that holds the API key. The key itself is never stored."""
    provider: str | None = None
    """Provider name, used for provider diversity and records; defaults from litellm."""
    capabilities: frozenset[Capability] | None = None
    """What the model can do; defaults from litellm's model map."""
    quality: float = 50.0
    """Quality score (0-100) used to rank qualified models; higher first."""
    input_usd_per_mtok: float | None = None
    """Input price, USD per million tokens; defaults from litellm's model map, 0 for local models."""
    output_usd_per_mtok: float | None = None
    """Output price, USD per million tokens; defaults from litellm's model map, 0 for local models."""
    context_window: int | None = None
    """Maximum input tokens; defaults from litellm's model map."""
    max_output_tokens: int | None = None
    """Maximum output tokens; defaults from litellm's model map."""
    latency_tier: LatencyTier = "standard"
    """How fast the model usually answers; policies can exclude slow tiers."""
    local: bool = False
    """Runs on this machine: its calls cost 0 with cost source ``local``."""
    params: dict[str, str | int | float | bool | list[str]] = Field(default_factory=dict)
    """Standard completion parameters sent with every call (``temperature``, ``top_p``, ``seed``, ``stop``);
    a ``temperature`` here wins over the policy's."""
    extra_body: dict[str, str | int | float | bool | list[str]] = Field(default_factory=dict)
    """Provider-specific decoding settings sent in the request body as they are (``repeat_penalty``,
    ``top_k`` for llama.cpp)."""
    system_prompt: str | None = None
    """Extra system text for this model (e.g. tuned for a small model)."""
    prompt_style: Literal["chat", "completion"] = "chat"
    """``completion`` for base models that only continue text: the model string should use litellm's
    ``text-completion-openai/`` prefix, and the member gets a completion-style prompt (``Question: ...
    Answer:``)."""
    answer_style: Literal["structured", "sentence"] = "structured"
    """``structured``: the model answers with the JSON schema of a member answer. ``sentence``: it answers
    in one plain sentence, which council turns into one claim (and a label for a fact check) with
    ``stated_confidence``; for small models that cannot keep to a JSON schema."""
    structured_output: Literal["auto", "json_schema", "json_object_schema", "instructed"] = "auto"
    """How the JSON schema is sent: ``json_schema`` (OpenAI ``response_format``), ``json_object_schema``
    (``{"type": "json_object", "schema": ...}``, llama.cpp's grammar-constrained JSON), ``instructed`` (in
    the prompt only); ``auto`` picks json_schema when the model has that capability, else instructed."""
    stated_confidence: float = Field(default=0.6, ge=0.0, le=1.0)
    """The confidence recorded for a ``sentence`` answer, which states none."""
    serve: Literal["llama.cpp"] | None = None
    """``llama.cpp``: council starts a llama.cpp server for ``weights_path`` on a free loopback port
    when a run needs it (api_base is then filled in) and stops it at exit."""
    weights_path: str | None = None
    """Where the model's weights are, for local models (shown by ``council models``)."""
    weights_sha256: str | None = None
    """The pinned sha256 of ``weights_path`` (shown by ``council models``), when council assembled it."""
    prompt_template: str | None = None
    """Prompt template (in prompts/) for this model's ``sentence`` answers instead of the recipe's: members
    that share one weights file can be asked in different words (an ensemble over prompts)."""
    confidence_from: Literal["stated", "logprobs"] = "stated"
    """``logprobs`` (``sentence`` models on a fact check): the label and its confidence come from the
    probabilities of the first answer token (OpenAI ``top_logprobs``, which llama.cpp's server returns),
    read through ``logprob_tokens`` and ``calibration``; the model writes one token. ``stated``: the
    confidence is ``stated_confidence`` (or the number the model writes, for structured answers)."""
    logprob_tokens: dict[str, FactLabel] = Field(default_factory=dict)
    """For ``confidence_from = "logprobs"``: first tokens (compared stripped and lower-cased) and the label
    each one means, e.g. ``{"true": "SUPPORTED", "false": "REFUTED"}``; for a prompt asking "is it false?",
    ``{"yes": "REFUTED", "no": "SUPPORTED"}``."""
    calibration: PlattScaling | None = None
    """Platt scaling of this model's token probability of SUPPORTED, fitted on labelled claims; None: the
    raw token probability is used as it is."""

    @model_validator(mode="after")
    def _styles_fit(self) -> ModelEntry:
        if self.confidence_from == "logprobs":
            if self.answer_style != "sentence":
                raise ValueError('confidence_from = "logprobs" needs answer_style = "sentence"')
            if {"SUPPORTED", "REFUTED"} - set(self.logprob_tokens.values()):
                raise ValueError('confidence_from = "logprobs" needs logprob_tokens naming a SUPPORTED and a REFUTED token')
        if self.prompt_style == "completion" and self.answer_style != "sentence":
            raise ValueError("a completion-style model must have answer_style = \"sentence\"")
        if self.serve == "llama.cpp" and not self.weights_path:
            raise ValueError("serve = \"llama.cpp\" needs weights_path")
        return self

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"model name {v!r} must be letters, digits and . _ : / - only")
        return v

    @property
    def has_price(self) -> bool:
        return self.local or (self.input_usd_per_mtok is not None and self.output_usd_per_mtok is not None)


def price_of(entry: ModelEntry, prompt_tokens: int, completion_tokens: int) -> float | None:
    """Catalog price of a call in USD, or None when the entry has no price."""
    if entry.local:
        return 0.0
    if entry.input_usd_per_mtok is None or entry.output_usd_per_mtok is None:
        return None
    return (prompt_tokens * entry.input_usd_per_mtok + completion_tokens * entry.output_usd_per_mtok) / 1e6


def resolve_catalog(
    entries: Iterable[ModelEntry], lookup: Callable[[ModelEntry], ModelDefaults]
) -> list[ModelEntry]:
    """Fill every unset field from litellm's model map, through ``lookup`` (the gateway's).

    ``lookup`` raises ConfigError for a model string litellm cannot route; a model litellm routes but has
    no map entry for (a self-hosted ``openai/...`` model, say) keeps unknown prices and a text capability.
    """
    resolved: list[ModelEntry] = []
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise ConfigError(f"model {entry.name!r} is configured twice")
        seen.add(entry.name)
        d = lookup(entry)
        caps = set(entry.capabilities if entry.capabilities is not None else d.capabilities)
        caps.add("text")
        if entry.local:
            caps.add("local")
        resolved.append(
            entry.model_copy(
                update={
                    "provider": entry.provider or d.provider,
                    "capabilities": frozenset(caps),
                    "input_usd_per_mtok": _first(entry.input_usd_per_mtok, 0.0 if entry.local else None, d.input_usd_per_mtok),
                    "output_usd_per_mtok": _first(entry.output_usd_per_mtok, 0.0 if entry.local else None, d.output_usd_per_mtok),
                    "context_window": _first(entry.context_window, d.context_window),
                    "max_output_tokens": _first(entry.max_output_tokens, d.max_output_tokens),
                }
            )
        )
    return resolved


def _first(*values: float | int | None) -> float | int | None:
    for v in values:
        if v is not None:
            return v
    return None
