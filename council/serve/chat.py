"""A council as an OpenAI-compatible model: ``POST /v1/chat/completions`` and ``GET /v1/models``.

The model name picks the recipe and task (``council/research`` asks, ``council/fact_check`` checks a claim,
``council/<recipe>`` asks with that recipe; ``GET /v1/models`` lists them). The last user message is the
question (earlier turns are not given to the council: each run is one question). The reply's message is
the verdict's answer (a fact check's starts with its label; a degraded council says so at the end); usage
holds the tokens of every call the council made (a council that reaches no verdict, every member having
failed, is an HTTP 502 error, not an answer); the ``council`` field (and the ``X-Council-Run-Id``
header) carries the run id, its cost and status so a caller can trace it. With ``stream: true`` the
verdict is sent when it is ready, after SSE comment lines reporting progress every few seconds (clients
ignore comments; proxies see traffic).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from council.errors import InputError
from council.store.db import StoredRun
from .errors import public_error

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["openai"])


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """OpenAI's chat completion request; sampling fields are accepted and ignored (each member's policy
    and catalog entry set its own)."""

    model_config = ConfigDict(extra="allow")
    model: str
    """``council/<recipe>`` or ``council/<policy>`` (see ``GET /v1/models``)."""
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None


class CouncilInfo(BaseModel):
    """What the council did, for tracing the reply."""

    run_id: str
    cost_usd: float
    """The run's cost: the sum of its call records."""
    status: str
    degraded: bool
    label: str | None
    confidence: float
    agreement: float
    page_url: str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Message(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: Message
    finish_reason: Literal["stop"] = "stop"


class ChatCompletion(BaseModel):
    """OpenAI's chat completion response, plus ``council``."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    council: CouncilInfo


def _question(messages: list[ChatMessage]) -> str:
    for m in reversed(messages):
        if m.role != "user":
            continue
        if isinstance(m.content, str):
            return m.content
        text = "\n".join(p.text or "" for p in m.content or [] if p.type == "text").strip()
        if text:
            return text
        raise InputError("the last user message has no text (images are not supported here)")
    raise InputError("no user message: the last user message is the question")


def _reply(run: StoredRun) -> tuple[str, CouncilInfo, Usage]:
    v = run.verdict
    assert v is not None
    content = v.answer
    if v.label and not content.upper().startswith(v.label):
        content = f"{v.label}: {content}"
    if v.degraded:
        content += "\n\n[degraded council: " + "; ".join(v.degraded_reasons) + "]"
    info = CouncilInfo(run_id=run.run_id, cost_usd=run.total_cost_usd, status=run.status, degraded=v.degraded,
                       label=v.label, confidence=v.confidence, agreement=v.agreement, page_url=f"/runs/{run.run_id}")
    p = sum(c.prompt_tokens for c in run.calls)
    c = sum(c.completion_tokens for c in run.calls)
    return content, info, Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)


def _error(exc: BaseException) -> JSONResponse:
    status, kind, message = public_error(exc)
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


async def _finished(st: Any, run_id: str) -> StoredRun:
    run: StoredRun = await asyncio.to_thread(st.runs.store.load_run, run_id)
    if run.verdict is None or run.verdict.decided_by == "none":
        reasons = "; ".join(f"{f.member_label}: {f.error_kind}" for f in run.failures) or st.runs.errors.get(run_id, "")
        raise _NoVerdict(f"the council reached no verdict (run {run_id}, {run.status}){': ' + reasons if reasons else ''}")
    return run


class _NoVerdict(Exception):
    pass


@router.get("/models", summary="The councils offered as models")
async def models(request: Request) -> JSONResponse:
    now = int(time.time())
    return JSONResponse({"object": "list", "data": [
        {"id": m.name, "object": "model", "created": now, "owned_by": "council", "description": m.description}
        for m in request.app.state.council.runs.models()]})


@router.post("/chat/completions", response_model=ChatCompletion, summary="Ask a council, OpenAI-style")
async def chat_completions(body: ChatRequest, request: Request) -> Any:
    st = request.app.state.council
    try:
        choice = st.runs.resolve(body.model)
        run_id, job = await st.runs.start(choice.task, _question(body.messages), choice.recipe, [])
    except Exception as exc:
        return _error(exc)
    headers = {"X-Council-Run-Id": run_id}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_stream(st, body.model, run_id, job, include_usage), media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache"})
    try:
        await asyncio.shield(job)
        run = await _finished(st, run_id)
    except _NoVerdict as exc:
        return JSONResponse({"error": {"message": str(exc), "type": "council_failed", "code": 502},
                             "council": {"run_id": run_id}}, status_code=502, headers=headers)
    except Exception as exc:
        resp = _error(exc)
        resp.headers.update(headers)
        return resp
    content, info, usage = _reply(run)
    out = ChatCompletion(id=f"chatcmpl-{run_id}", created=int(run.created_at.timestamp()), model=body.model,
                         choices=[Choice(message=Message(content=content))], usage=usage, council=info)
    return JSONResponse(out.model_dump(mode="json"), headers=headers)


def _chunk(run_id: str, model: str, created: int, delta: dict[str, Any], finish: str | None = None,
           **extra: Any) -> str:
    body = {"id": f"chatcmpl-{run_id}", "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return f"data: {json.dumps(body)}\n\n"


async def _stream(st: Any, model: str, run_id: str, job: asyncio.Task[Any], include_usage: bool) -> AsyncIterator[str]:
    created = int(time.time())
    yield _chunk(run_id, model, created, {"role": "assistant", "content": ""})
    started = time.monotonic()
    while not job.done():
        await asyncio.wait({job}, timeout=st.settings.keepalive_s)
        if not job.done():
            done = await asyncio.to_thread(_calls_done, st, run_id)
            yield f": council run {run_id}: {done} calls finished, {time.monotonic() - started:.0f} s\n\n"
    try:
        if job.exception() is not None:
            raise job.exception()  # type: ignore[misc]
        run = await _finished(st, run_id)
    except Exception as exc:
        status, kind, message = (502, "council_failed", str(exc)) if isinstance(exc, _NoVerdict) else public_error(exc)
        yield f"data: {json.dumps({'error': {'message': message, 'type': kind, 'code': status}})}\n\n"
        return
    content, info, usage = _reply(run)
    yield _chunk(run_id, model, created, {"content": content}, council=info.model_dump(mode="json"))
    yield _chunk(run_id, model, created, {}, "stop", council=info.model_dump(mode="json"))
    if include_usage:
        body = {"id": f"chatcmpl-{run_id}", "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [], "usage": usage.model_dump(), "council": info.model_dump(mode="json")}
        yield f"data: {json.dumps(body)}\n\n"
    yield "data: [DONE]\n\n"


def _calls_done(st: Any, run_id: str) -> int:
    from sqlalchemy import func, select

    from council.store.tables import CallRow

    t = CallRow.__table__  # type: ignore[attr-defined]
    with st.runs.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(t.c.run_id == run_id, t.c.status != "pending")).scalar_one())
