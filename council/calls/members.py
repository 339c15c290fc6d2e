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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

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


@dataclass
class _Plan:
    """How one model of the chain is called: its prompt, output allowance and worst-case cost."""

    prompt: RenderedPrompt
    max_tokens: int
    logprobs: bool
    worst: float | None
    tokens: int
    """Prompt estimate plus output allowance: what the rate limiter is asked for."""


@dataclass
class _Tries:
    """What the attempts on one model have used up so far."""

    repair: list[ChatMessage] = field(default_factory=list)
    transient: int = 0
    invalid: int = 0
    strikes: int = 0
    waited: float = 0.0
    """Seconds this model kept the call waiting for rate-limit capacity."""


@dataclass
class _Admission:
    """An attempt let through: its rate-limit permit (None without a limiter) and budget reservation."""

    permit: Permit | None
    queued: float
    reservation: Any


_Next = Literal["retry", "next"]
"""After a failed attempt: retry the same model, or go on to the next one."""


@dataclass
class _Walk(Generic[T]):
    """One walk down a chain: the attempt counter, the records so far and the last failure."""

    ctx: CallContext
    chain: list[ModelEntry]
    schema: type[T]
    attempt: int = 0
    records: list[CallRecord] = field(default_factory=list)
    last_kind: str = "no_attempt"
    last_reason: str = "no model was tried"
    last_raw: str | None = None
    used: RenderedPrompt | None = None
    """The prompt of the model being tried: its template goes on the record."""

    def __post_init__(self) -> None:
        self.attempt = self.ctx.first_attempt - 1
        self.used = self.ctx.prompt

    def emit(self, entry: ModelEntry, started: datetime, keep: bool = True, **fields: Any) -> CallRecord:
        """The record of the current attempt; kept (and handed to the sink) unless ``keep`` is False."""
        ctx, policy, used = self.ctx, self.ctx.policy, self.used
        assert used is not None
        rec = CallRecord(
            call_id=call_id_for(ctx.run_id, ctx.node, ctx.member_label, self.attempt),
            run_id=ctx.run_id,
            node=ctx.node,
            member_label=ctx.member_label,
            model_requested=self.chain[0].name,
            model=entry.name,
            provider=entry.provider,
            policy_name=policy.name,
            policy_version=policy.version,
            template_name=used.template_name,
            template_hash=used.template_hash,
            attempt=self.attempt,
            started_at=started,
            finished_at=datetime.now(UTC),
            **fields,
        )
        if keep:
            self.records.append(rec)
            ctx.sink(rec)
        return rec

    def skip(self, entry: ModelEntry, kind: str, reason: str, **fields: Any) -> None:
        """Record a skipped attempt of error kind ``kind``."""
        self.attempt += 1
        self.last_kind, self.last_reason = kind, reason
        self.emit(entry, datetime.now(UTC), status="skipped", error_kind=kind, error_message=reason, **fields)

    def outcome(self) -> ChainOutcome[T]:
        """The outcome of a chain no model of which answered."""
        return ChainOutcome(
            value=None, model=None, call_id=None, raw_text=self.last_raw, records=self.records,
            error_kind=self.last_kind, reason=self.last_reason,
        )


def _plan(walk: _Walk[T], entry: ModelEntry) -> _Plan | None:
    """How ``entry`` would be called, or None (after a skipped record) when it cannot serve here or its
    worst-case cost is above the policy's per-call ceiling."""
    ctx, policy = walk.ctx, walk.ctx.policy
    prompt = _prompt_for(ctx, entry)
    if prompt is None:
        walk.skip(entry, "answer_style", f"{entry.name}: answers in one sentence, which the {ctx.node} node cannot use")
        return None
    walk.used = prompt
    max_tokens = min(policy.max_output_tokens, entry.max_output_tokens or policy.max_output_tokens)
    logprobs = _reads_logprobs(ctx, entry)
    if logprobs:
        max_tokens = 1
    worst = _worst_case(entry, estimate_tokens(prompt.system + prompt.user), max_tokens)
    if policy.max_call_usd is not None and worst is not None and worst > policy.max_call_usd:
        walk.skip(entry, "price_ceiling",
                  f"{entry.name}: worst-case cost ${worst:.4f} above the per-call ceiling ${policy.max_call_usd:g}")
        return None
    tokens = estimate_tokens(prompt.system + prompt.user) + max_tokens
    return _Plan(prompt=prompt, max_tokens=max_tokens, logprobs=logprobs, worst=worst, tokens=tokens)


async def _admit(walk: _Walk[T], entry: ModelEntry, plan: _Plan, tries: _Tries) -> _Admission | None:
    """Wait for ``entry``'s rate-limit capacity, then reserve its worst-case cost on the budget; None (after a
    skipped record) when either is refused."""
    ctx = walk.ctx
    permit = await _capacity(ctx, entry, plan.tokens, tries.waited)
    queued = permit.queued_s if permit is not None else 0.0
    tries.waited += queued
    if permit is not None and not permit.granted:
        walk.attempt += 1
        walk.last_kind, walk.last_reason = "rate_limit", f"{entry.name}: {permit.reason}"
        walk.emit(entry, datetime.now(UTC), status="skipped", error_kind="rate_limit_wait",
                  error_message=permit.reason, queued_s=queued)
        return None
    reservation = None
    if ctx.budget is not None:
        try:
            reservation = ctx.budget.reserve(plan.worst if plan.worst is not None else 0.0, ctx.policy.name)
        except BudgetExceeded:
            if permit is not None:
                permit.release()
            walk.skip(entry, "budget", f"{entry.name}: worst-case cost ${plan.worst or 0:.4f} would exceed the run budget",
                      queued_s=queued)
            return None
    return _Admission(permit=permit, queued=queued, reservation=reservation)


async def _send(walk: _Walk[T], entry: ModelEntry, plan: _Plan, tries: _Tries, adm: _Admission,
                started: datetime) -> gateway.CallResult:
    """Write the pending record ahead (``on_send``), then send the request."""
    ctx, policy = walk.ctx, walk.ctx.policy
    if ctx.on_send is not None:
        try:
            ctx.on_send(walk.emit(entry, started, keep=False, status="pending", cost_source="unknown",
                                  queued_s=adm.queued))
        except BaseException:
            if adm.reservation is not None:
                ctx.budget.settle(adm.reservation, 0.0)  # type: ignore[union-attr]
            raise
    return await gateway.acomplete(
        entry,
        _messages(plan.prompt, ctx, entry, tries.repair),
        max_tokens=plan.max_tokens,
        temperature=policy.temperature,
        timeout_s=policy.timeout_s,
        schema=walk.schema if entry.answer_style == "structured" else None,
        top_logprobs=_TOP_LOGPROBS if plan.logprobs else None,
    )


async def _failed(walk: _Walk[T], entry: ModelEntry, tries: _Tries, adm: _Admission, started: datetime,
                  exc: ModelCallError) -> _Next:
    """Record a failed call and decide whether the same model is tried again."""
    ctx, policy = walk.ctx, walk.ctx.policy
    if adm.permit is not None:
        adm.permit.release()
    if adm.reservation is not None:
        # A timed-out request may still be billed (its record says cost unknown): keep the
        # worst case charged, as for any call of unknown cost.
        ctx.budget.settle(adm.reservation, None if exc.kind == "timeout" else 0.0)  # type: ignore[union-attr]
    walk.last_kind, walk.last_reason = exc.kind, f"{entry.name}: {exc}"
    walk.emit(
        entry, started, status="failed", error_kind=exc.kind, error_message=str(exc),
        # A local model never bills, even for a request that timed out.
        cost_source="local" if entry.local else ("unknown" if exc.kind == "timeout" else "none"),
        latency_s=(datetime.now(UTC) - started).total_seconds(), queued_s=adm.queued,
    )
    if isinstance(exc, RateLimited) and ctx.limiter is not None:
        # Everyone sharing the limiter now waits out the pause; this call retries the same model
        # (the next acquire waits) while the policy's allowed wait lasts, then falls back.
        tries.strikes += 1
        pause = await ctx.limiter.rate_limited(entry, exc.retry_after, tries.strikes)
        if tries.waited + pause <= policy.rate_limit_wait_s:
            return "retry"
        walk.last_reason += f" (waiting {pause:g} s more would pass the policy's rate_limit_wait_s)"
        return "next"
    if isinstance(exc, TransientError):
        tries.transient += 1
        if tries.transient < policy.attempts_per_model:
            await asyncio.sleep(min(exc.retry_after or 0.5 * tries.transient, _MAX_RETRY_AFTER_S))
            return "retry"
    return "next"


async def _answered(walk: _Walk[T], entry: ModelEntry, plan: _Plan, tries: _Tries, adm: _Admission,
                    started: datetime, result: gateway.CallResult) -> ChainOutcome[T] | _Next:
    """Settle a call that answered and validate its answer: the outcome when valid, else whether the same
    model is asked again (with the validation error shown to it)."""
    ctx, policy = walk.ctx, walk.ctx.policy
    if ctx.limiter is not None:
        await ctx.limiter.announced(entry, result.quota, plan.tokens)
    if adm.reservation is not None:
        ctx.budget.settle(adm.reservation, result.cost_usd if result.cost_source != "unknown" else None)  # type: ignore[union-attr]
    billed = dict(
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        cost_usd=result.cost_usd,
        cost_source=result.cost_source,
        latency_s=result.latency_s,
        queued_s=adm.queued,
        request_id=result.request_id,
        model_reported=result.model_reported,
    )
    try:
        value = _parse(ctx, entry, walk.schema, result)
    except InvalidAnswer as exc:
        walk.last_kind, walk.last_reason, walk.last_raw = exc.kind, f"{entry.name}: answer {exc}", result.text
        walk.emit(entry, started, status="invalid", error_kind=exc.kind, error_message=str(exc), **billed)
        tries.invalid += 1
        if tries.invalid <= policy.answer_retries:
            tries.repair = [
                ChatMessage(role="assistant", content=result.text[:4000]),
                ChatMessage(
                    role="user",
                    content=f"Your reply {exc}. Reply again with only the JSON object for the schema.",
                ),
            ]
            return "retry"
        return "next"
    rec = walk.emit(entry, started, status="ok", **billed)
    return ChainOutcome(value=value, model=entry, call_id=rec.call_id, raw_text=result.text, records=walk.records)


async def _try_model(walk: _Walk[T], entry: ModelEntry, plan: _Plan) -> ChainOutcome[T] | None:
    """Attempt ``entry`` until it answers validly (its outcome) or is given up on (None)."""
    tries = _Tries()
    while True:
        adm = await _admit(walk, entry, plan, tries)
        if adm is None:
            return None
        walk.attempt += 1
        started = datetime.now(UTC)
        try:
            result = await _send(walk, entry, plan, tries, adm, started)
        except ModelCallError as exc:
            if await _failed(walk, entry, tries, adm, started, exc) == "retry":
                continue
            return None
        finally:
            if adm.permit is not None:
                adm.permit.release()
        answered = await _answered(walk, entry, plan, tries, adm, started, result)
        if isinstance(answered, ChainOutcome):
            return answered
        if answered == "retry":
            continue
        return None


async def run_chain(ctx: CallContext, chain: list[ModelEntry], schema: type[T]) -> ChainOutcome[T]:
    """Walk ``chain`` until one model gives a valid ``schema`` answer; see the module docstring."""
    walk = _Walk(ctx=ctx, chain=chain, schema=schema)
    for entry in chain:
        plan = _plan(walk, entry)
        if plan is None:
            continue  # skipped before any admission: the next model is tried even with fallback "none"
        outcome = await _try_model(walk, entry, plan)
        if outcome is not None:
            return outcome
        if ctx.policy.fallback == "none":
            break
    return walk.outcome()
