"""Sentence embeddings for clustering claims.

Three embedders, chosen by the config's ``embedding`` setting:
- ``wordllama`` (the default when the package is installed): real sentence embeddings whose weights and
  tokenizer ship inside the wheel; loaded from the package directory with downloads disabled, so nothing
  is ever fetched from a hub at run time;
- any litellm embedding model string (``openai/text-embedding-3-small``, ...), called through the gateway
  with a call record per request like every other model call;
- ``lexical``: word and character n-gram vectors, always available, no model at all.
Each returns unit-length vectors, so a dot product is a cosine similarity.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from council.calls.answers import Claim
from council.config.catalog import ModelEntry
from council.config.policy import TaskPolicy
from council.calls.ratelimit import RateLimiter
from council.calls.records import CallRecord

__all__ = [
    "Embedder", "EmbeddingChoice", "LexicalEmbedder", "PrecomputedEmbedder", "WordLlamaEmbedder",
    "SIMILARITY_THRESHOLDS", "choose_embedding", "embed_for_clustering", "wordllama_available",
]

# Cosine at or above which two claims say the same thing, per embedder family, measured here on paraphrase
# and near-miss pairs: wordllama puts paraphrases at 0.80-1.00 and different facts at 0.2-0.71; the lexical
# embedder needs 0.7 to keep "Paris is the capital of France" apart from the Berlin/Germany version (0.63).
SIMILARITY_THRESHOLDS = {"wordllama": 0.74, "lexical": 0.7, "litellm": 0.85}


class Embedder(Protocol):
    name: str
    """Embedder family (a key of SIMILARITY_THRESHOLDS)."""

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length vectors, one per text."""
        ...


_WORD = re.compile(r"[a-z0-9]+")


class LexicalEmbedder:
    """Word unigrams and bigrams plus character 4-grams, hashed into a fixed-size unit vector."""

    name = "lexical"
    dims = 2048

    def _features(self, text: str) -> Counter[str]:
        words = _WORD.findall(text.lower())
        feats: Counter[str] = Counter(f"w:{w}" for w in words)
        feats.update(f"b:{a}_{b}" for a, b in zip(words, words[1:]))
        joined = " ".join(words)
        feats.update(f"c:{joined[i:i + 4]}" for i in range(max(len(joined) - 3, 0)))
        return feats

    def embed(self, texts: list[str]) -> list[list[float]]:
        import hashlib

        out = []
        for t in texts:
            vec = [0.0] * self.dims
            for feat, n in self._features(t).items():
                h = int.from_bytes(hashlib.blake2b(feat.encode(), digest_size=4).digest(), "little")
                vec[h % self.dims] += (1.0 + math.log(n)) * (2.0 if feat.startswith("w:") else 1.0)
            norm = math.sqrt(sum(v * v for v in vec)) or 1.0
            out.append([v / norm for v in vec])
        return out


def wordllama_available() -> bool:
    from importlib.util import find_spec

    return find_spec("wordllama") is not None


@lru_cache(maxsize=1)
def _wordllama_model() -> Any:
    import logging
    from pathlib import Path

    # wordllama calls logging.basicConfig(level=INFO) when imported; undo that, or every INFO record
    # (litellm's included, which it routes to stdout) would be printed into the CLI's output.
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        import wordllama
        from wordllama import WordLlama
    finally:
        root.setLevel(level)
        for h in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(h)

    # The package ships weights/ and tokenizers/ in its own directory; naming it as the cache makes
    # wordllama find both locally instead of trying to download its tokenizer.
    return WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)


class WordLlamaEmbedder:
    """WordLlama (L2 supercat, 256 dims) from the weights inside the installed package."""

    name = "wordllama"

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return _wordllama_model().embed(texts, norm=True).tolist()


class EmbeddingChoice(BaseModel):
    """Which embedder clusters claims: the config's ``embedding`` setting, resolved."""

    kind: Literal["wordllama", "lexical", "litellm"]
    entry: ModelEntry | None = None
    """The catalog entry of a litellm embedding model (kind ``litellm``)."""


class PrecomputedEmbedder:
    """Vectors fetched ahead (from a litellm embedding model), served by text."""

    def __init__(self, name: str, table: dict[str, list[float]]) -> None:
        self.name = name
        self._table = table

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [self._table[t] for t in texts]


def choose_embedding(setting: str, catalog: list[ModelEntry]) -> EmbeddingChoice:
    """Resolve the config's ``embedding`` setting: auto, wordllama, lexical, or a catalog model name."""
    from council.errors import ConfigError

    if setting == "auto":
        return EmbeddingChoice(kind="wordllama" if wordllama_available() else "lexical")
    if setting == "wordllama":
        if not wordllama_available():
            raise ConfigError("embedding = 'wordllama' but the wordllama package is not installed")
        return EmbeddingChoice(kind="wordllama")
    if setting == "lexical":
        return EmbeddingChoice(kind="lexical")
    for entry in catalog:
        if entry.name == setting:
            return EmbeddingChoice(kind="litellm", entry=entry)
    raise ConfigError(f"embedding = {setting!r} is neither auto, wordllama, lexical nor a model in [models]")


async def embed_for_clustering(
    choice: EmbeddingChoice, claims: list[Claim], run_id: str, policy: TaskPolicy,
    sink: Callable[[CallRecord], None],
    attempt: int = 1,
    on_send: Callable[[CallRecord], None] | None = None,
    limiter: RateLimiter | None = None,
) -> Embedder:
    """An embedder ready for ``cluster_claims`` on ``claims``.

    For a litellm embedding model the texts (and their negation-stripped forms) are embedded in one call,
    recorded like any other call (node ``cluster``). If that call fails the lexical embedder is used, and
    the failed call's record says so. ``attempt`` numbers the call (a resumed run continues after the
    attempts it recorded); ``on_send`` gets its ``pending`` record before the request goes out. With a
    ``limiter`` the call first waits for the model's rate-limit capacity (within the policy's
    ``rate_limit_wait_s``; without it in time the lexical embedder is used and a ``skipped`` record says so).
    """
    if choice.kind == "wordllama":
        return WordLlamaEmbedder()
    if choice.kind == "lexical" or choice.entry is None or not claims:
        return LexicalEmbedder()
    from datetime import UTC, datetime

    from .negation import strip_negation
    from council.errors import ModelCallError, RateLimited
    from council.calls.gateway import aembed
    from council.ids import content_id

    texts = sorted({c.text for c in claims} | {strip_negation(c.text) for c in claims})
    permit = None
    if limiter is not None:
        permit = await limiter.acquire(choice.entry, sum(len(t) for t in texts) // 4 + len(texts),
                                       policy.rate_limit_wait_s)
    queued = permit.queued_s if permit is not None else 0.0
    started = datetime.now(UTC)
    base = dict(
        call_id=content_id(run_id, "cluster", "embedder", str(attempt)), run_id=run_id, node="cluster", member_label="embedder",
        model_requested=choice.entry.name, model=choice.entry.name, provider=choice.entry.provider,
        policy_name=policy.name, policy_version=policy.version, template_name="(embedding)", template_hash="",
        attempt=attempt, started_at=started, queued_s=queued,
    )
    if permit is not None and not permit.granted:
        sink(CallRecord(**base, status="skipped", error_kind="rate_limit_wait",
                        error_message=f"{permit.reason} (clustered with the lexical embedder instead)",
                        finished_at=datetime.now(UTC)))
        return LexicalEmbedder()
    try:
        if on_send is not None:
            on_send(CallRecord(**base, status="pending", cost_source="unknown", finished_at=started))
        result = await aembed(choice.entry, texts, timeout_s=policy.timeout_s)
    except ModelCallError as exc:
        if permit is not None:
            permit.release()
            if isinstance(exc, RateLimited) and limiter is not None:
                await limiter.rate_limited(choice.entry, exc.retry_after, 1)
        sink(CallRecord(**base, status="failed", error_kind=exc.kind,
                        error_message=f"{exc} (clustered with the lexical embedder instead)",
                        finished_at=datetime.now(UTC)))
        return LexicalEmbedder()
    if permit is not None:
        permit.release()
    if limiter is not None:
        await limiter.announced(choice.entry, result.quota, result.prompt_tokens)
    sink(CallRecord(**base, status="ok", prompt_tokens=result.prompt_tokens, cost_usd=result.cost_usd,
                    cost_source=result.cost_source, latency_s=result.latency_s, request_id=result.request_id,
                    model_reported=result.model_reported, finished_at=datetime.now(UTC)))
    return PrecomputedEmbedder("litellm", dict(zip(texts, result.vectors)))
