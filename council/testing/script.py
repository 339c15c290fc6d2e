"""The script a :class:`~council.testing.server.ScriptedServer` plays: members, answers and faults.

A script is data (TOML or JSON, or a dict in memory) validated into the pydantic models below. It says,
for every model name the server should pretend to be, what to answer to which question, how long to take
and which failures to inject::

    seed = 7                          # seeds the fault-rate draws: same seed -> same fault sequence
    [models."member-a"]
    latency = 0.3                     # seconds before answering (concurrent requests overlap)
    prompt_tokens = 120               # optional; default ceil(chars of all messages / 4)
    completion_tokens = 40            # optional; default ceil(len(served content) / 4)
    timeout_sleep = 30.0              # how long a "timeout" fault sleeps before answering
    rpm = 600                         # optional: above 600 requests a minute, 429 with Retry-After
    rpm_window_s = 60.0               # the window rpm is counted over (1.0: 10 requests in any second)
    [[models."member-a".answers]]
    match = "Great Wall"              # case-insensitive substring of the last user message; "" = any
    content = "plain text"            # or a table/array, served as json.dumps(content)
    [[models."member-a".faults]]
    kind = "429"                      # "429" | "500" | "503" | "timeout" | "malformed_json" | "wrong_schema"
    attempts = [1]                    # 1-based attempt numbers that fail, or: rate = 0.3
    retry_after = 1                   # 429 only: Retry-After header value, seconds
    match = "Great Wall"              # optional: only when the last user message contains this

Contract of the matching rules (implemented here, as pure functions, so they are testable without HTTP):

- The first answer whose ``match`` occurs in the last user message wins; answers are tried in order.
- Attempts are counted per (model name, index of the matched answer), so different questions asked of
  one server count separately; the first request for a key is attempt 1.
- Faults are tried in order and the first one that applies wins. A fault with ``attempts`` applies on
  those attempt numbers. A fault with ``rate`` applies when a draw from ``random.Random`` seeded with
  (seed, model, answer index, fault index, attempt) is below the rate: the outcome of attempt *n* is a
  pure function of the script, independent of request interleaving, so concurrent runs are repeatable.

Every problem with a script file surfaces as a :class:`ValueError` naming the file and the problem
(pydantic's ``ValidationError`` is itself a ``ValueError``).
"""

from __future__ import annotations

import json
import math
import random
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "FAULT_CONTENT",
    "Answer",
    "Fault",
    "FaultKind",
    "ModelScript",
    "Script",
    "estimate_tokens",
    "load_script",
    "message_text",
    "read_messages",
]

FaultKind = Literal["429", "500", "503", "timeout", "malformed_json", "wrong_schema"]

FAULT_CONTENT: dict[str, str] = {
    "malformed_json": '{"answer": "unterminated',  # JSON cut off mid-string
    "wrong_schema": '{"unexpected": true}',  # valid JSON of the wrong shape
}
"""What the 200-status faults serve instead of the scripted answer."""


def estimate_tokens(chars: int) -> int:
    """Rough token count for ``chars`` characters of text: ceil(chars / 4), the usual rule of thumb."""
    return math.ceil(chars / 4)


def message_text(content: Any) -> str:
    """Text of an OpenAI message content: a string, or a list of parts whose text parts count
    (vision format); anything else (e.g. None beside tool calls) has no text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = [part if isinstance(part, str) else part.get("text")
             for part in content
             if isinstance(part, str) or (isinstance(part, dict) and part.get("type") == "text")]
    return "\n".join(t for t in texts if isinstance(t, str))


def read_messages(messages: list[Any]) -> tuple[str, int]:
    """The question (text of the last user message, "" if none) and the total characters of all
    message texts (the basis of the prompt-token estimate)."""
    texts = [(m.get("role"), message_text(m.get("content"))) if isinstance(m, dict) else (None, "")
             for m in messages]
    question = next((text for role, text in reversed(texts) if role == "user"), "")
    return question, sum(len(text) for _, text in texts)


def _contains(needle: str | None, haystack: str) -> bool:
    return not needle or needle.casefold() in haystack.casefold()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Answer(_Strict):
    """One scripted reply of a member, chosen by substring match on the question."""

    match: str = ""
    """Case-insensitive substring of the last user message that selects this answer; "" matches any."""

    content: str | dict[str, Any] | list[Any]
    """The reply: plain text, or a JSON object/array served as ``json.dumps(content)``."""

    top_logprobs: dict[str, float] = Field(default_factory=dict)
    """The first token's alternatives -> natural-log probability, served as OpenAI ``logprobs`` (the
    first token = the most probable one) when the request asks for ``logprobs``; empty: ``logprobs`` null."""

    def matches(self, question: str) -> bool:
        """True when this answer applies to ``question`` (the last user message)."""
        return _contains(self.match, question)

    def text(self) -> str:
        """The assistant message content exactly as the server sends it."""
        return self.content if isinstance(self.content, str) else json.dumps(self.content)


class Fault(_Strict):
    """A failure to inject, on given attempt numbers or at a seeded rate."""

    kind: FaultKind
    """What goes wrong: an HTTP error status ("429", "500", "503"), a "timeout" (sleep
    ``timeout_sleep`` then answer), or a 200 with "malformed_json" or "wrong_schema" content."""

    rate: float | None = Field(default=None, ge=0.0, le=1.0)
    """Probability per request, drawn from the script's seed. Exactly one of ``rate``/``attempts``."""

    attempts: list[int] | None = None
    """1-based attempt numbers (per model and matched answer) that get this fault."""

    retry_after: float | None = Field(default=None, ge=0.0)
    """For "429" only: the value of the ``Retry-After`` header, in seconds; absent = no header."""

    match: str | None = None
    """Optional case-insensitive substring of the last user message; the fault applies only then."""

    @field_validator("kind", mode="before")
    @classmethod
    def _status_as_text(cls, value: Any) -> Any:
        # JSON/TOML authors naturally write `kind = 429`; accept it as the string "429".
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("attempts")
    @classmethod
    def _positive_attempts(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            if not value:
                raise ValueError("attempts must not be empty")
            if any(n < 1 for n in value):
                raise ValueError("attempts are 1-based request numbers, each must be >= 1")
        return value

    @model_validator(mode="after")
    def _one_trigger(self) -> Fault:
        if (self.rate is None) == (self.attempts is None):
            raise ValueError("a fault needs exactly one of 'rate' or 'attempts'")
        if self.retry_after is not None and self.kind != "429":
            raise ValueError("retry_after only applies to kind '429'")
        return self

    def fires(self, *, seed: int, model: str, answer_index: int, fault_index: int, attempt: int,
              question: str) -> bool:
        """Whether this fault hits ``attempt`` of (model, answer_index); deterministic for a seed."""
        if not _contains(self.match, question):
            return False
        if self.attempts is not None:
            return attempt in self.attempts
        assert self.rate is not None
        draw = random.Random(f"{seed}|{model}|{answer_index}|{fault_index}|{attempt}").random()
        return draw < self.rate


class ModelScript(_Strict):
    """How one member (one model name) behaves."""

    latency: float = Field(default=0.0, ge=0.0)
    """Seconds to wait before answering (``asyncio.sleep``: concurrent requests overlap). HTTP error
    faults ("429", "500", "503") are returned at once, without this delay."""

    prompt_tokens: int | None = Field(default=None, ge=0)
    """Reported prompt tokens; default: ceil(total characters of all message texts / 4)."""

    completion_tokens: int | None = Field(default=None, ge=0)
    """Reported completion tokens; default: ceil(len(served content) / 4)."""

    timeout_sleep: float = Field(default=30.0, ge=0.0)
    """How long a "timeout" fault sleeps before answering normally; the client should give up first."""

    answers: list[Answer] = Field(default_factory=list)
    """Scripted replies, tried in order; the first whose ``match`` fits the question wins (at least one,
    unless the model is an embedding model)."""

    embedding_dims: int | None = Field(default=None, ge=8, le=4096)
    """If set, the model serves ``/v1/embeddings``: deterministic vectors of this many dimensions from the
    hashed words and word pairs of each input, so texts sharing words get similar vectors."""

    faults: list[Fault] = Field(default_factory=list)
    """Failures to inject, tried in order; the first that fires wins."""

    rpm: int | None = Field(default=None, gt=0)
    """Requests per minute the server accepts for this model, as a provider's rate limit: a request above it
    gets a 429 ``rate_limit_error`` with ``Retry-After`` (seconds until a slot frees), at once, before any
    fault or latency; it is not counted. None: unlimited."""

    rpm_window_s: float = Field(default=60.0, gt=0.0)
    """The moving window ``rpm`` is counted over: at most ``rpm * rpm_window_s / 60`` accepted requests in
    any ``rpm_window_s`` seconds (tests shorten it: rpm 600 over 1 s is 10 requests in any second)."""

    rate_headers: bool = True
    """With ``rpm``: answers carry OpenAI's ``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests``
    and ``x-ratelimit-reset-requests`` headers, as a provider announcing its remaining quota."""

    @property
    def window_requests(self) -> int | None:
        """Requests accepted in any ``rpm_window_s`` seconds (None: unlimited)."""
        if self.rpm is None:
            return None
        return max(1, math.floor(self.rpm * self.rpm_window_s / 60.0 + 1e-9))

    @model_validator(mode="after")
    def _answers_or_embeddings(self) -> ModelScript:
        if not self.answers and self.embedding_dims is None:
            raise ValueError("a model needs at least one answer (or embedding_dims for an embedding model)")
        return self

    def embed(self, text: str) -> list[float]:
        """The deterministic embedding of ``text`` (see ``embedding_dims``)."""
        import hashlib
        import re

        dims = self.embedding_dims or 64
        words = re.findall(r"[a-z0-9]+", text.lower())
        vec = [0.0] * dims
        for feat in words + [f"{a}_{b}" for a, b in zip(words, words[1:])]:
            h = int.from_bytes(hashlib.blake2b(feat.encode(), digest_size=4).digest(), "little")
            vec[h % dims] += 1.0
        return vec

    def usage(self, prompt_chars: int, content: str) -> tuple[int, int]:
        """(prompt_tokens, completion_tokens) to report: the scripted numbers, else estimates."""
        prompt = self.prompt_tokens if self.prompt_tokens is not None else estimate_tokens(prompt_chars)
        completion = (self.completion_tokens if self.completion_tokens is not None
                      else estimate_tokens(len(content)))
        return prompt, completion

    def find_answer(self, question: str) -> tuple[int, Answer] | None:
        """The index and answer for ``question``, or None when no answer matches."""
        for index, answer in enumerate(self.answers):
            if answer.matches(question):
                return index, answer
        return None

    def find_fault(self, *, seed: int, model: str, answer_index: int, attempt: int,
                   question: str) -> Fault | None:
        """The first fault that fires for this attempt, or None for a normal answer."""
        for fault_index, fault in enumerate(self.faults):
            if fault.fires(seed=seed, model=model, answer_index=answer_index,
                           fault_index=fault_index, attempt=attempt, question=question):
                return fault
        return None


class Script(_Strict):
    """A whole script: the RNG seed and the members the server plays, by model name."""

    seed: int = 0
    """Seed for rate-based faults; the same seed gives the same fault sequence for every key."""

    models: dict[str, ModelScript] = Field(min_length=1)
    """Members by the model name clients request (e.g. "member-a" for litellm "openai/member-a")."""


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def load_script(path: str | Path) -> Script:
    """Read and validate a script from a ``.toml`` or ``.json`` file.

    Raises ValueError naming the file and the problem: missing file, unknown extension, syntax error,
    or schema violation (with the dotted location of each bad field).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ValueError(f"invalid script {path}: expected a .toml or .json file, got {suffix or 'no extension'!r}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"invalid script {path}: cannot read file ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8")) if suffix == ".toml" else json.loads(raw)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid script {path}: {suffix[1:].upper()} syntax error: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"invalid script {path}: top level must be an object/table")
    try:
        return Script.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"invalid script {path}: {_describe(exc)}") from None
