"""The gateway: the one module that imports litellm.

It imports litellm lazily (so ``council --help`` never pays for it), sets litellm's globals once, makes one
async attempt at a model call, and translates litellm's exceptions into council's own (``errors.py``),
carrying provider, HTTP status, request id and Retry-After. It knows nothing of runs, members or the store:
the caller turns each attempt into a call record.

litellm's own retries are switched off (``num_retries=0``) on purpose: every attempt must yield its own
billing record, so attempts, Retry-After waits and fallbacks are counted by ``council.members``.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from council.config.catalog import ModelDefaults, ModelEntry, price_of
from council.errors import (
    CallTimeout,
    ConfigError,
    ModelCallError,
    PermanentError,
    ProviderUnavailable,
    RateLimited,
)
from .records import CostSource

__all__ = [
    "CallResult",
    "ChatMessage",
    "ImagePart",
    "QuotaHeaders",
    "TextPart",
    "EmbedResult",
    "acomplete",
    "aembed",
    "missing_key",
    "model_defaults",
    "redact",
]

_litellm: Any = None
# Placeholder key for endpoints that need none (local servers); real keys only come from api_key_env.
_NO_KEY = "no-key-needed"


def _lib() -> Any:
    """Import litellm once, offline-safe, with council's globals."""
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
        litellm.telemetry = False
        litellm.drop_params = True
        litellm.num_retries = 0
        # litellm's OpenAI embedding path reads `max_retries or DEFAULT_MAX_RETRIES` (so 0 cannot be
        # passed) and hands it to the openai SDK, which would retry a 5xx/429 unseen and unbilled.
        litellm.DEFAULT_MAX_RETRIES = 0
        _litellm = litellm
    return _litellm


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ImageURL(BaseModel):
    url: str
    """An https URL or a ``data:image/...;base64,`` URL."""


class ImagePart(BaseModel):
    type: Literal["image_url"] = "image_url"
    image_url: ImageURL


class ChatMessage(BaseModel):
    """One chat message in OpenAI form, which litellm translates for every provider."""

    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart | ImagePart]


class QuotaHeaders(BaseModel):
    """What a provider announced of its remaining rate-limit quota with an answer (OpenAI's
    ``x-ratelimit-*`` headers, which litellm also maps other providers' headers to)."""

    model_config = ConfigDict(extra="forbid")
    remaining_requests: int | None = None
    """Requests left in the provider's current window."""
    reset_requests_s: float | None = None
    """Seconds until the request quota is fully restored."""
    remaining_tokens: int | None = None
    """Tokens left in the provider's current window."""
    reset_tokens_s: float | None = None
    """Seconds until the token quota is fully restored."""


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def _seconds(value: Any) -> float | None:
    """A reset duration as providers write it (``1s``, ``6m0s``, ``20ms``, ``0.5``) in seconds."""
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def _quota(headers: Any) -> QuotaHeaders | None:
    """The quota a response's headers announce, or None when they announce none."""
    if not isinstance(headers, dict):
        return None

    def get(name: str) -> Any:
        return headers.get(name, headers.get(f"llm_provider-{name}"))

    def count(name: str) -> int | None:
        try:
            value = get(name)
            return None if value is None else int(float(value))
        except (TypeError, ValueError):
            return None

    def reset(name: str) -> float | None:
        value = get(name)
        return None if value is None else _seconds(value)

    q = QuotaHeaders(
        remaining_requests=count("x-ratelimit-remaining-requests"),
        reset_requests_s=reset("x-ratelimit-reset-requests"),
        remaining_tokens=count("x-ratelimit-remaining-tokens"),
        reset_tokens_s=reset("x-ratelimit-reset-tokens"),
    )
    return None if q == QuotaHeaders() else q


class _Billed(BaseModel):
    """What any successful call cost, and who served it: the fields its call record is billed from."""

    model_config = ConfigDict(extra="forbid")
    prompt_tokens: int = 0
    cost_usd: float = 0.0
    cost_source: CostSource = "unknown"
    model_reported: str | None = None
    request_id: str | None = None
    latency_s: float = Field(default=0.0, ge=0)
    quota: QuotaHeaders | None = None
    """The remaining rate-limit quota the provider announced with the answer, if it did."""


class CallResult(_Billed):
    """What a successful chat attempt returned and cost."""

    text: str
    """The assistant message content."""
    completion_tokens: int = 0
    first_token_logprobs: dict[str, float] = Field(default_factory=dict)
    """The first generated token's most probable alternatives -> natural-log probability (OpenAI
    ``top_logprobs``), when the call asked for them; empty otherwise or when the provider sent none."""


_KEY_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)(api[_-]?key|authorization|bearer)([\"'=:\s]+)((?:bearer|basic|token)\s+)?([A-Za-z0-9_\-\.~+/]{8,}=*)"),
]


def redact(text: str, secrets: list[str] | None = None, limit: int = 400) -> str:
    """One line of text with API keys removed: known secret values and key-shaped strings."""
    for s in secrets or []:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    text = _KEY_PATTERNS[0].sub("sk-***", text)
    text = _KEY_PATTERNS[1].sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3) or ''}***", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def model_defaults(entry: ModelEntry) -> ModelDefaults:
    """What litellm's model cost map says of ``entry.model``; ConfigError if litellm cannot route it."""
    lib = _lib()
    try:
        _, provider, _, _ = lib.get_llm_provider(entry.model, api_base=entry.api_base)
    except Exception:
        raise ConfigError(
            f"unknown model {entry.model!r} (models.{entry.name}): litellm cannot route it; "
            "use a provider prefix such as openai/, anthropic/, ollama/"
        ) from None
    try:
        info = lib.get_model_info(entry.model)
    except Exception:
        return ModelDefaults(provider=provider)
    caps = {"text"}
    for flag, cap in (
        ("supports_vision", "vision"),
        ("supports_function_calling", "tools"),
        ("supports_response_schema", "json_schema"),
        ("supports_reasoning", "reasoning"),
        ("supports_audio_input", "audio"),
    ):
        if info.get(flag):
            caps.add(cap)
    window = info.get("max_input_tokens")
    if window and window >= 100_000:
        caps.add("long_context")
    per_tok_in, per_tok_out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    return ModelDefaults(
        provider=info.get("litellm_provider") or provider,
        capabilities=frozenset(caps),  # type: ignore[arg-type]
        input_usd_per_mtok=None if per_tok_in is None else per_tok_in * 1e6,
        output_usd_per_mtok=None if per_tok_out is None else per_tok_out * 1e6,
        context_window=window,
        max_output_tokens=info.get("max_output_tokens"),
    )


async def aclose() -> None:
    """Close what litellm opened on the running loop: its cached async HTTP clients, and its logging worker
    task when it runs here (flushed, then stopped), so that nothing is left pending when the process ends
    ("Unclosed client session", "Task was destroyed but it is pending!"). No-op before litellm is used."""
    if _litellm is None:
        return
    await _litellm.close_litellm_async_clients()
    await stop_logging_worker()


async def stop_logging_worker() -> None:
    """Flush and stop litellm's logging worker if its task runs on this loop (it restarts by itself on the
    next call). A loop that ends without cancelling its tasks (not ``asyncio.run``) would otherwise print
    "Task was destroyed but it is pending!" when the task is garbage-collected."""
    import sys

    module = sys.modules.get("litellm.litellm_core_utils.logging_worker")
    worker = getattr(module, "GLOBAL_LOGGING_WORKER", None)
    task = getattr(worker, "_worker_task", None)
    if worker is not None and task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
        try:
            await asyncio.wait_for(worker.flush(), timeout=2)
        except Exception:  # a callback that cannot finish must not hold the exit
            pass
        await worker.stop(timeout=2)


def missing_key(entry: ModelEntry) -> str | None:
    """Name of the env var the entry needs but is unset, or None when it can be called."""
    if entry.api_key_env:
        return None if os.environ.get(entry.api_key_env) else entry.api_key_env
    if entry.api_base or entry.local:
        return None
    try:
        check = _lib().validate_environment(entry.model)
    except Exception:
        return None
    missing = check.get("missing_keys") or []
    return missing[0] if missing else None


def _api_key(entry: ModelEntry) -> str | None:
    if entry.api_key_env:
        return os.environ.get(entry.api_key_env)
    return _NO_KEY if (entry.api_base or entry.local) else None


def _retry_after(exc: Exception) -> float | None:
    headers: Any = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        resp = getattr(exc, "response", None)
        headers = getattr(resp, "headers", None)
    if not headers:
        return None
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _is_connection_error(exc: BaseException) -> bool:
    """True when the request never got an HTTP answer: a connection refused, reset or unreachable.

    litellm wraps these (openai's APIConnectionError over httpx's ConnectError) in an InternalServerError
    with status 500, so the cause chain is what tells them apart from a real 500.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ConnectionError) or type(cur).__name__ in ("APIConnectionError", "ConnectError"):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _translate(exc: Exception, entry: ModelEntry, secrets: list[str]) -> ModelCallError:
    lib = _lib()
    ex = lib.exceptions
    status = getattr(exc, "status_code", None)
    msg = redact(f"{type(exc).__name__}: {exc}", secrets)
    kw: dict[str, Any] = {"provider": entry.provider, "status_code": status}
    if isinstance(exc, (asyncio.TimeoutError, ex.Timeout)):
        return CallTimeout(f"timed out: {msg}", **kw)
    if isinstance(exc, ex.RateLimitError):
        return RateLimited(msg, retry_after=_retry_after(exc), **kw)
    if isinstance(exc, ex.ContextWindowExceededError):
        err = PermanentError(msg, **kw)
        err.kind = "context_window"
        return err
    if isinstance(exc, (ex.AuthenticationError, ex.PermissionDeniedError)):
        err = PermanentError(msg, **kw)
        err.kind = "auth"
        return err
    if isinstance(exc, (ex.BadRequestError, ex.NotFoundError, ex.UnprocessableEntityError)):
        err = PermanentError(msg, **kw)
        err.kind = "not_found" if isinstance(exc, ex.NotFoundError) else "bad_request"
        return err
    if _is_connection_error(exc):
        # litellm reports a refused or dropped connection as a 500 InternalServerError; no server answered,
        # so there is no HTTP status to record.
        err = ProviderUnavailable(msg, provider=entry.provider, status_code=None)
        err.kind = "connection"
        return err
    if isinstance(exc, (ex.InternalServerError, ex.ServiceUnavailableError, ex.BadGatewayError, ex.APIConnectionError)):
        err = ProviderUnavailable(msg, **kw)
        if isinstance(exc, ex.APIConnectionError) and not isinstance(exc, ex.InternalServerError):
            err.kind = "connection"
        return err
    if isinstance(exc, ex.APIError) and isinstance(status, int) and status >= 500:
        return ProviderUnavailable(msg, **kw)
    err = PermanentError(msg, **kw)
    err.kind = "unexpected"
    return err


def _response_format(entry: ModelEntry, schema: type[BaseModel] | None) -> dict[str, Any] | None:
    if schema is None:
        return None
    mode = entry.structured_output
    if mode == "auto":
        mode = "json_schema" if "json_schema" in (entry.capabilities or ()) else "instructed"
    if mode == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema(), "strict": False},
        }
    if mode == "json_object_schema":
        return {"type": "json_object", "schema": schema.model_json_schema()}
    return None


async def _call(method: str, entry: ModelEntry, kwargs: dict[str, Any], timeout_s: float) -> tuple[Any, float]:
    """Call litellm's ``method`` for ``entry`` (its endpoint and key added), within the timeout; return the
    response and its latency, or raise the translated ModelCallError."""
    lib = _lib()
    key = _api_key(entry)
    secrets = [key] if key and key != _NO_KEY else []
    kwargs = {"model": entry.model, "timeout": timeout_s, **kwargs}
    if entry.api_base:
        kwargs["api_base"] = entry.api_base
    if key:
        kwargs["api_key"] = key
    started = time.perf_counter()
    try:
        resp = await asyncio.wait_for(getattr(lib, method)(**kwargs), timeout=timeout_s + 1.0)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # translated: every provider error becomes a ModelCallError
        raise _translate(exc, entry, secrets) from None
    return resp, time.perf_counter() - started


def _cost(entry: ModelEntry, prompt_tokens: int, completion_tokens: int, reported: Any) -> tuple[float, CostSource]:
    """A call's cost and its source: local models cost 0; else the provider's own figure when it reports
    one; else the catalog price of the model that served; else unknown."""
    if entry.local:
        return 0.0, "local"
    if isinstance(reported, (int, float)):
        return float(reported), "provider"
    priced = price_of(entry, prompt_tokens, completion_tokens)
    return (priced, "catalog") if priced is not None else (0.0, "unknown")


async def acomplete(
    entry: ModelEntry,
    messages: list[ChatMessage],
    *,
    max_tokens: int,
    temperature: float | None,
    timeout_s: float,
    schema: type[BaseModel] | None = None,
    top_logprobs: int | None = None,
) -> CallResult:
    """Make one attempt at a chat completion; return its result or raise a ModelCallError.

    ``schema`` is sent as litellm ``response_format`` when the model has the ``json_schema`` capability;
    validating the text against it is the caller's job. ``top_logprobs``: ask for that many alternatives of
    each generated token (``logprobs=True``); the first token's come back in ``first_token_logprobs``. Cost: the provider's reported cost when it gives
    one, else the catalog price of ``entry`` (the model that actually served), else unknown.
    """
    kwargs: dict[str, Any] = {
        "messages": [m.model_dump(exclude_none=True) for m in messages],
        "max_tokens": max_tokens,
        "num_retries": 0,
        **entry.params,
    }
    if temperature is not None and "temperature" not in entry.params:
        kwargs["temperature"] = temperature
    if entry.extra_body:
        kwargs["extra_body"] = dict(entry.extra_body)
    fmt = _response_format(entry, schema)
    if fmt is not None:
        kwargs["response_format"] = fmt
    if top_logprobs:
        kwargs.update(logprobs=True, top_logprobs=top_logprobs)
    resp, latency = await _call("acompletion", entry, kwargs, timeout_s)
    choice = resp.choices[0] if resp.choices else None
    text = (choice.message.content if choice is not None else None) or ""
    usage = getattr(resp, "usage", None)
    pt = int(getattr(usage, "prompt_tokens", 0) or 0)
    ct = int(getattr(usage, "completion_tokens", 0) or 0)
    cost, source = _cost(entry, pt, ct, getattr(usage, "cost", None))
    return CallResult(
        text=text,
        prompt_tokens=pt,
        completion_tokens=ct,
        cost_usd=cost,
        cost_source=source,
        model_reported=getattr(resp, "model", None),
        request_id=getattr(resp, "id", None),
        latency_s=latency,
        quota=_quota((getattr(resp, "_hidden_params", None) or {}).get("additional_headers")),
        first_token_logprobs=_first_token_logprobs(choice) if top_logprobs else {},
    )


def _first_token_logprobs(choice: Any) -> dict[str, float]:
    """``{token: logprob}`` of the first generated token's top alternatives (objects or dicts, as litellm
    passes them on)."""
    get = lambda o, k: o.get(k) if isinstance(o, dict) else getattr(o, k, None)  # noqa: E731
    content = get(get(choice, "logprobs") or {}, "content") if choice is not None else None
    if not content:
        return {}
    out: dict[str, float] = {}
    for alt in get(content[0], "top_logprobs") or []:
        token, lp = get(alt, "token"), get(alt, "logprob")
        if isinstance(token, str) and isinstance(lp, (int, float)):
            out[token] = max(float(lp), out.get(token, float("-inf")))
    return out



class EmbedResult(_Billed):
    """Vectors from an embedding model, unit length, and what the call cost."""

    vectors: list[list[float]]


async def aembed(entry: ModelEntry, texts: list[str], *, timeout_s: float) -> EmbedResult:
    """Embed ``texts`` with one litellm embedding call; raise a ModelCallError on failure."""
    import math

    resp, latency = await _call("aembedding", entry, {"input": texts}, timeout_s)
    rows = sorted(resp.data, key=lambda d: d["index"] if isinstance(d, dict) else d.index)
    vectors = []
    for row in rows:
        vec = list(row["embedding"] if isinstance(row, dict) else row.embedding)
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        vectors.append([v / norm for v in vec])
    if len(vectors) != len(texts):
        raise PermanentError(f"embedding model returned {len(vectors)} vectors for {len(texts)} texts",
                             provider=entry.provider)
    usage = getattr(resp, "usage", None)
    pt = int(getattr(usage, "prompt_tokens", 0) or 0)
    cost, source = _cost(entry, pt, 0, None)
    return EmbedResult(vectors=vectors, prompt_tokens=pt, cost_usd=cost, cost_source=source,  # type: ignore[arg-type]
                       model_reported=getattr(resp, "model", None), request_id=getattr(resp, "id", None),
                       latency_s=latency,
                       quota=_quota((getattr(resp, "_hidden_params", None) or {}).get("additional_headers")))
