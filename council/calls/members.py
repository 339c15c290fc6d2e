"""Calling one member (or the adjudicator) down its fallback chain, one call record per attempt.

For each model of the chain, first choice first:
- skip it (a ``skipped`` record) when its worst-case cost would break the policy's per-call ceiling or the
  run's budget;
- wait for its rate-limit capacity (``council.calls.ratelimit``; the wait is the record's ``queued_s``), and
  skip it (error kind ``rate_limit_wait``) when none comes within the policy's ``rate_limit_wait_s``;
- call it through the gateway; a 429 pauses the model for every caller of the limiter and is retried on the
  same model while the policy's ``rate_limit_wait_s`` lasts; another transient error (5xx, timeout,
  connection) is retried up to ``attempts_per_model`` times, then the next model is tried; a permanent
  error goes straight to the next model;
- validate the answer against the schema; an invalid answer is retried ``answer_retries`` times with the
  validation error shown to the model, then the next model is tried.
Every attempt, failed or not, is handed to ``sink`` as a CallRecord the moment it ends, and its cost is
charged to the model that actually served it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from . import gateway
from .budget import Budget
from council.config.catalog import ModelEntry, price_of
from council.errors import BudgetExceeded, InvalidAnswer, ModelCallError, RateLimited, TransientError
from .gateway import ChatMessage, TextPart, ImagePart
from council.config.policy import TaskPolicy
from .prompts import RenderedPrompt
from .ratelimit import Permit, RateLimiter
from council.config.qualify import estimate_tokens
from council.ids import content_id
from .records import CallNode, CallRecord

__all__ = ["CallContext", "ChainOutcome", "call_id_for", "run_chain", "parse_json_text"]

T = TypeVar("T", bound=BaseModel)

_MAX_RETRY_AFTER_S = 30.0


def call_id_for(run_id: str, node: str, member_label: str, attempt: int) -> str:
    """Idempotency key of an attempt: the same attempt of the same run always has the same id."""
    return content_id(run_id, node, member_label, str(attempt), length=20)


@dataclass
class PlainPrompts:
    """The prompts for models that answer in one sentence (``answer_style = "sentence"``)."""

    sentence: RenderedPrompt
    """For chat models."""
    completion: RenderedPrompt
    """For base models in completion mode."""
    task: str
    question: str
    render_own: Callable[[str], RenderedPrompt] | None = None
    """Renders a model's own ``prompt_template`` with this question's context (task, question, passages)."""


@dataclass
class CallContext:
    """Who is calling, under which policy and prompt, and where records go."""

    run_id: str
    node: CallNode
    member_label: str
    policy: TaskPolicy
    prompt: RenderedPrompt
    sink: Callable[[CallRecord], None]
    budget: Budget | None = None
    image: ImagePart | None = None
    plain: PlainPrompts | None = None
    """Set where sentence-style models may serve (member nodes); None elsewhere (the adjudicator)."""
    first_attempt: int = 1
    """Number of the first attempt: a resumed run continues after the attempts it already recorded, so
    no call id is reused and every real call keeps exactly one record."""
    on_send: Callable[[CallRecord], None] | None = None
    """Called with a ``pending`` record just before each request goes out (write-ahead): a process that
    dies mid-call still leaves the record of the call. The attempt's final record (same call id) replaces
    it through ``sink``. If it raises, the request is not sent."""
    limiter: RateLimiter | None = None
    """The process's rate limiter: each attempt waits for its model's capacity before it is sent (the wait
    is the record's ``queued_s``), and 429s or exhausted quotas pause the model for every caller. None:
    no limits, and a 429 is one transient attempt like any other."""


@dataclass
class ChainOutcome(Generic[T]):
    """The parsed answer and the model that served it, or why the whole chain failed."""

    value: T | None
    model: ModelEntry | None
    call_id: str | None
    raw_text: str | None
    records: list[CallRecord]
    error_kind: str | None = None
    reason: str | None = None


def parse_json_text(text: str) -> Any:
    """Parse a model's JSON answer, tolerating a Markdown code fence or words around the object."""
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else ""
        t = t.rstrip()
        if t.endswith("```"):
            t = t[:-3]
    start, end = t.find("{"), t.rfind("}")
    if start >= 0 and end > start:
        t = t[start : end + 1]
    return json.loads(t)


def _validate(schema: type[T], text: str) -> T:
    try:
        return schema.model_validate(parse_json_text(text))
    except json.JSONDecodeError as exc:
        raise InvalidAnswer(f"not valid JSON: {exc.msg} at char {exc.pos}", raw_text=text) from None
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        raise InvalidAnswer(f"does not match the schema: {loc}: {err['msg']}", raw_text=text) from None


def _prompt_for(ctx: CallContext, entry: ModelEntry) -> RenderedPrompt | None:
    """The prompt ``entry`` gets in this context, or None when it cannot serve here."""
    if entry.answer_style == "structured":
        return ctx.prompt
    if ctx.plain is None:
        return None
    if entry.prompt_template and ctx.plain.render_own is not None:
        return ctx.plain.render_own(entry.prompt_template)
    return ctx.plain.completion if entry.prompt_style == "completion" else ctx.plain.sentence


# Alternatives asked for per token by a logprobs member: enough to hold every spelling of both answers.
_TOP_LOGPROBS = 10


def _reads_logprobs(ctx: CallContext, entry: ModelEntry) -> bool:
    """True when this call's label comes from token probabilities: one token is all it needs."""
    return entry.confidence_from == "logprobs" and ctx.plain is not None and ctx.plain.task == "check"


def _messages(prompt: RenderedPrompt, ctx: CallContext, entry: ModelEntry, repair: list[ChatMessage]) -> list[ChatMessage]:
    system = prompt.system
    if entry.system_prompt:
        system = f"{system}\n\n{entry.system_prompt}".strip()
    user: str | list[TextPart | ImagePart] = prompt.user
    if ctx.image is not None:
        user = [TextPart(text=prompt.user), ctx.image]
    head = [ChatMessage(role="system", content=system)] if system else []
    return [*head, ChatMessage(role="user", content=user), *repair]


def _parse(ctx: CallContext, entry: ModelEntry, schema: type[T], result: gateway.CallResult) -> T:
    text = result.text
    if _reads_logprobs(ctx, entry):
        assert ctx.plain is not None
        from .plaintext import logprob_answer

        drafted = logprob_answer(text, result.first_token_logprobs, tokens=entry.logprob_tokens,
                                 question=ctx.plain.question, calibration=entry.calibration)
        return schema.model_validate(drafted.model_dump())
    if entry.answer_style == "sentence":
        assert ctx.plain is not None
        from .plaintext import sentence_answer

        value = sentence_answer(text, task=ctx.plain.task, question=ctx.plain.question,
                                confidence=entry.stated_confidence)
        return schema.model_validate(value.model_dump())
    return _validate(schema, text)


async def _capacity(ctx: CallContext, entry: ModelEntry, tokens: int, waited: float) -> Permit | None:
    """Wait for ``entry``'s rate-limit capacity for a call of ``tokens`` (None when there is no limiter),
    within what is left of the policy's allowed wait."""
    if ctx.limiter is None:
        return None
    return await ctx.limiter.acquire(entry, tokens, max(0.0, ctx.policy.rate_limit_wait_s - waited))


def _worst_case(entry: ModelEntry, prompt_tokens: int, max_tokens: int) -> float | None:
    return price_of(entry, prompt_tokens, max_tokens)


async def run_chain(ctx: CallContext, chain: list[ModelEntry], schema: type[T]) -> ChainOutcome[T]:
    """Walk ``chain`` until one model gives a valid ``schema`` answer; see the module docstring."""
    policy = ctx.policy
    records: list[CallRecord] = []
    attempt = ctx.first_attempt - 1
    last_kind, last_reason, last_raw = "no_attempt", "no model was tried", None
    used = ctx.prompt  # the prompt of the model being tried: its template goes on the record

    def emit(entry: ModelEntry, started: datetime, keep: bool = True, **fields: Any) -> CallRecord:
        rec = CallRecord(
            call_id=call_id_for(ctx.run_id, ctx.node, ctx.member_label, attempt),
            run_id=ctx.run_id,
            node=ctx.node,
            member_label=ctx.member_label,
            model_requested=chain[0].name,
            model=entry.name,
            provider=entry.provider,
            policy_name=policy.name,
            policy_version=policy.version,
            template_name=used.template_name,
            template_hash=used.template_hash,
            attempt=attempt,
            started_at=started,
            finished_at=datetime.now(UTC),
            **fields,
        )
        if keep:
            records.append(rec)
            ctx.sink(rec)
        return rec

    for entry in chain:
        prompt = _prompt_for(ctx, entry)
        if prompt is None:
            attempt += 1
            last_kind = "answer_style"
            last_reason = f"{entry.name}: answers in one sentence, which the {ctx.node} node cannot use"
            emit(entry, datetime.now(UTC), status="skipped", error_kind=last_kind, error_message=last_reason)
            continue
        used = prompt
        max_tokens = min(policy.max_output_tokens, entry.max_output_tokens or policy.max_output_tokens)
        logprobs = _reads_logprobs(ctx, entry)
        if logprobs:
            max_tokens = 1
        worst = _worst_case(entry, estimate_tokens(prompt.system + prompt.user), max_tokens)
        if policy.max_call_usd is not None and worst is not None and worst > policy.max_call_usd:
            attempt += 1
            last_kind = "price_ceiling"
            last_reason = f"{entry.name}: worst-case cost ${worst:.4f} above the per-call ceiling ${policy.max_call_usd:g}"
            emit(entry, datetime.now(UTC), status="skipped", error_kind=last_kind, error_message=last_reason)
            continue
        repair: list[ChatMessage] = []
        transient_tries = invalid_tries = strikes = 0
        tokens = estimate_tokens(prompt.system + prompt.user) + max_tokens
        waited = 0.0  # seconds this model kept the call waiting for rate-limit capacity
        while True:
            permit = await _capacity(ctx, entry, tokens, waited)
            queued = permit.queued_s if permit is not None else 0.0
            waited += queued
            if permit is not None and not permit.granted:
                attempt += 1
                last_kind, last_reason = "rate_limit", f"{entry.name}: {permit.reason}"
                emit(entry, datetime.now(UTC), status="skipped", error_kind="rate_limit_wait",
                     error_message=permit.reason, queued_s=queued)
                break
            reservation = None
            if ctx.budget is not None:
                try:
                    reservation = ctx.budget.reserve(worst if worst is not None else 0.0, ctx.policy.name)
                except BudgetExceeded:
                    if permit is not None:
                        permit.release()
                    attempt += 1
                    last_kind = "budget"
                    last_reason = f"{entry.name}: worst-case cost ${worst or 0:.4f} would exceed the run budget"
                    emit(entry, datetime.now(UTC), status="skipped", error_kind=last_kind, error_message=last_reason,
                         queued_s=queued)
                    break
            attempt += 1
            started = datetime.now(UTC)
            try:
                if ctx.on_send is not None:
                    try:
                        ctx.on_send(emit(entry, started, keep=False, status="pending", cost_source="unknown",
                                         queued_s=queued))
                    except BaseException:
                        if reservation is not None:
                            ctx.budget.settle(reservation, 0.0)  # type: ignore[union-attr]
                        raise
                result = await gateway.acomplete(
                    entry,
                    _messages(prompt, ctx, entry, repair),
                    max_tokens=max_tokens,
                    temperature=policy.temperature,
                    timeout_s=policy.timeout_s,
                    schema=schema if entry.answer_style == "structured" else None,
                    top_logprobs=_TOP_LOGPROBS if logprobs else None,
                )
            except ModelCallError as exc:
                if permit is not None:
                    permit.release()
                if reservation is not None:
                    # A timed-out request may still be billed (its record says cost unknown): keep the
                    # worst case charged, as for any call of unknown cost.
                    ctx.budget.settle(reservation, None if exc.kind == "timeout" else 0.0)  # type: ignore[union-attr]
                last_kind, last_reason = exc.kind, f"{entry.name}: {exc}"
                emit(
                    entry, started, status="failed", error_kind=exc.kind, error_message=str(exc),
                    # A local model never bills, even for a request that timed out.
                    cost_source="local" if entry.local else ("unknown" if exc.kind == "timeout" else "none"),
                    latency_s=(datetime.now(UTC) - started).total_seconds(), queued_s=queued,
                )
                if isinstance(exc, RateLimited) and ctx.limiter is not None:
                    # Everyone sharing the limiter now waits out the pause; this call retries the same model
                    # (the next acquire waits) while the policy's allowed wait lasts, then falls back.
                    strikes += 1
                    pause = await ctx.limiter.rate_limited(entry, exc.retry_after, strikes)
                    if waited + pause <= policy.rate_limit_wait_s:
                        continue
                    last_reason += f" (waiting {pause:g} s more would pass the policy's rate_limit_wait_s)"
                    break
                if isinstance(exc, TransientError):
                    transient_tries += 1
                    if transient_tries < policy.attempts_per_model:
                        await asyncio.sleep(min(exc.retry_after or 0.5 * transient_tries, _MAX_RETRY_AFTER_S))
                        continue
                break
            finally:
                if permit is not None:
                    permit.release()
            if ctx.limiter is not None:
                await ctx.limiter.announced(entry, result.quota, tokens)
            if reservation is not None:
                ctx.budget.settle(reservation, result.cost_usd if result.cost_source != "unknown" else None)  # type: ignore[union-attr]
            billed = dict(
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                cost_usd=result.cost_usd,
                cost_source=result.cost_source,
                latency_s=result.latency_s,
                queued_s=queued,
                request_id=result.request_id,
                model_reported=result.model_reported,
            )
            try:
                value = _parse(ctx, entry, schema, result)
            except InvalidAnswer as exc:
                last_kind, last_reason, last_raw = exc.kind, f"{entry.name}: answer {exc}", result.text
                emit(entry, started, status="invalid", error_kind=exc.kind, error_message=str(exc), **billed)
                invalid_tries += 1
                if invalid_tries <= policy.answer_retries:
                    repair = [
                        ChatMessage(role="assistant", content=result.text[:4000]),
                        ChatMessage(
                            role="user",
                            content=f"Your reply {exc}. Reply again with only the JSON object for the schema.",
                        ),
                    ]
                    continue
                break
            rec = emit(entry, started, status="ok", **billed)
            return ChainOutcome(value=value, model=entry, call_id=rec.call_id, raw_text=result.text, records=records)
        if policy.fallback == "none":
            break
    return ChainOutcome(
        value=None, model=None, call_id=None, raw_text=last_raw, records=records,
        error_kind=last_kind, reason=last_reason,
    )
