"""Provider rate limits: every call waits here for capacity before it is sent.

The windows are counted by the ``limits`` library (moving windows, so no 60-second span ever holds more
than the limit): in this process's memory by default, or in Redis when ``[rate_limits] storage`` names a
``redis://`` URL, so every process using that storage (``council check -p N``, Ray workers, several
commands at once) stays under the limits together. A call counts against its model's limits and its
provider's: one request for ``rpm``/``rps``, its prompt estimate plus ``max_tokens`` for ``tpm``.
``concurrent`` is a semaphore per process (each of N processes holds an equal share).

Sends are also spaced evenly within a process (one request per ``60 / rpm`` or ``1 / rps`` seconds per
model and provider): a moving window alone would let a whole minute's quota go in one burst, and a burst
that meets a provider's window edge turns the smallest transport delay into a 429. Spacing leaves the
throughput at the limit, which is what the windows then guarantee across processes.

Adaptive: a 429 (its Retry-After, else an exponential backoff) or an answer whose headers announce that
the provider's quota is used up pauses that model for everyone sharing the limiter (the pause is kept in
the same storage) until the provider said capacity returns. Waiting is bounded by the caller
(``max_wait_s``, the policy's ``rate_limit_wait_s``): past it, the call falls back instead of waiting on.

Within a process, callers waiting on the same model are served first come, first served (one waiter at a
time polls the shared storage); across processes, whoever polls first after a slot frees gets it.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from council.config.catalog import ModelEntry
from council.config.ratelimits import Limits, RateLimitConfig
from council.errors import ConfigError

__all__ = ["Permit", "RateLimiter", "Waiting", "check_storage"]

_MAX_BACKOFF_S = 30.0
_MIN_SLEEP_S = 0.01
_PAUSE_PREFIX = "council-ratelimit"


class Waiting(BaseModel):
    """Calls of one model waiting for rate-limit capacity right now (what the progress bar shows)."""

    model: str
    """Catalog name of the model."""
    calls: int
    """Calls of this process waiting for it."""
    reason: str
    """What they wait on: ``rpm``, ``tpm``, ``concurrent``, ``429 Retry-After``, ``quota reset``, ..."""


@dataclass
class Permit:
    """The answer of :meth:`RateLimiter.acquire`: capacity for one call, or why there is none in time."""

    granted: bool
    queued_s: float
    """Seconds spent waiting for capacity."""
    reason: str = ""
    """Why no capacity was granted (when ``granted`` is False)."""
    _release: Any = None

    def release(self) -> None:
        """Free the call's concurrency slot (idempotent); call it when the request has ended."""
        release, self._release = self._release, None
        if release is not None:
            release()


@dataclass(frozen=True)
class _Rule:
    """One window limit that applies to a model: its ``limits`` item and the identifiers of its key."""

    what: str
    """``rpm``, ``rps`` or ``tpm`` (``tpm`` costs tokens, the others one request)."""
    scope: str
    """``model:NAME`` or ``provider:NAME``."""
    item: Any


@dataclass
class _LoopState:
    """Objects bound to one event loop: a FIFO gate and a concurrency semaphore per model."""

    gates: dict[str, asyncio.Lock] = field(default_factory=dict)
    semaphores: dict[str, asyncio.Semaphore] = field(default_factory=dict)


class _Pauses:
    """When each model may be called again, after a 429 or an exhausted quota: in memory, or in Redis."""

    def __init__(self, url: str | None, namespace: str) -> None:
        self._mem: dict[str, float] = {}
        self._lock = threading.Lock()
        self._redis: Any = None
        self._ns = namespace
        if url is not None:
            import redis

            self._redis = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)

    def _key(self, model: str) -> str:
        return f"{_PAUSE_PREFIX}:{self._ns}:pause:{model}"

    def until(self, model: str) -> float:
        """Epoch time before which ``model`` must not be called (0 when it is not paused)."""
        if self._redis is None:
            with self._lock:
                return self._mem.get(model, 0.0)
        value = self._redis.get(self._key(model))
        return float(value) if value is not None else 0.0

    def extend(self, model: str, until: float) -> None:
        """Pause ``model`` until ``until`` unless it is already paused longer."""
        if self._redis is None:
            with self._lock:
                self._mem[model] = max(self._mem.get(model, 0.0), until)
            return
        if self.until(model) < until:
            self._redis.set(self._key(model), repr(until), px=max(1, int((until - time.time()) * 1000) + 1000))


class RateLimiter:
    """The configured limits of a catalog, enforced for every call of the process; see the module docstring.

    ``share``: how many processes split each ``concurrent`` limit (``council check -p N`` passes N).
    Raises ConfigError for a limit on a provider no model of ``catalog`` has, or a storage it cannot reach.
    """

    def __init__(self, config: RateLimitConfig, catalog: list[ModelEntry], *, share: int = 1) -> None:
        providers = {e.provider for e in catalog if e.provider}
        for name in config.providers:
            if name not in providers:
                raise ConfigError(f"rate_limits.providers.{name}: no model of the catalog has provider {name!r} "
                                  f"(providers: {', '.join(sorted(providers)) or 'none'})")
        names = {e.name for e in catalog}
        for name in config.models:
            if name not in names:
                raise ConfigError(f"rate_limits.models.{name}: no model {name!r} in the catalog")
        self.config = config
        self.share = max(1, share)
        self._catalog = {e.name: e for e in catalog}
        self._strategy: Any = None
        self._remote = config.shared
        url = config.storage if self._remote else None
        self._rules: dict[str, list[_Rule]] = {}
        self._concurrent: dict[str, int] = {}
        for e in catalog:
            own, prov = config.models.get(e.name), config.providers.get(e.provider or "")
            self._rules[e.name] = [*self._rules_of(own, f"model:{e.name}"), *self._rules_of(prov, f"provider:{e.provider}")]
            caps = [lim.concurrent for lim in (own, prov) if lim is not None and lim.concurrent is not None]
            if caps:
                self._concurrent[e.name] = max(1, min(caps) // self.share)
        if any(self._rules.values()) or self._remote:
            self._strategy = self._connect(config.storage)
        self._pauses = _Pauses(url, config.namespace)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()
        self._waiting: dict[str, int] = defaultdict(int)
        self._why: dict[str, str] = {}
        self._next_send: dict[str, float] = {}
        """Rule scope -> the monotonic time before which this process sends it no request (even spacing)."""

    @staticmethod
    def _rules_of(limits: Limits | None, scope: str) -> list[_Rule]:
        if limits is None:
            return []
        from limits import RateLimitItemPerMinute, RateLimitItemPerSecond

        rules = []
        if limits.rpm is not None:
            rules.append(_Rule("rpm", scope, RateLimitItemPerMinute(limits.rpm)))
        if limits.rps is not None:
            rules.append(_Rule("rps", scope, RateLimitItemPerSecond(limits.rps)))
        if limits.tpm is not None:
            rules.append(_Rule("tpm", scope, RateLimitItemPerMinute(limits.tpm)))
        return rules

    @staticmethod
    def _connect(url: str | None) -> Any:
        from limits.errors import ConfigurationError
        from limits.storage import storage_from_string
        from limits.strategies import MovingWindowRateLimiter

        where = url or "memory://"
        try:
            storage = storage_from_string(where, socket_connect_timeout=3, socket_timeout=3) if url and \
                not url.startswith("memory://") else storage_from_string("memory://")
        except (ConfigurationError, ValueError) as exc:
            raise ConfigError(f"rate_limits.storage {where!r}: {exc}") from None
        if not storage.check():
            raise ConfigError(f"rate_limits.storage {where!r}: cannot reach it (is the server running?)")
        return MovingWindowRateLimiter(storage)

    # ------------------------------------------------------------------------------------------ waiting

    def waiting(self) -> list[Waiting]:
        """The models calls of this process are waiting on now, most waiting first."""
        rows = [Waiting(model=m, calls=n, reason=self._why.get(m, "")) for m, n in self._waiting.items() if n > 0]
        return sorted(rows, key=lambda w: (-w.calls, w.model))

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState()
        return state

    async def _io(self, fn: Any, *args: Any, **kw: Any) -> Any:
        """A storage operation: in a worker thread when it goes over the network, inline in memory."""
        if self._remote:
            return await asyncio.to_thread(fn, *args, **kw)
        return fn(*args, **kw)

    def _ids(self, rule: _Rule) -> tuple[str, str, str]:
        return (self.config.namespace, rule.scope, rule.what)

    async def _try_take(self, rules: list[_Rule], tokens: int) -> tuple[float, str]:
        """Take one request (and ``tokens``) from every window: (0, "") when done, else (seconds to wait,
        the limit that is full). Windows are tested before any is hit, so a full one wastes no slot of the
        others (a race with another process can still cost one: the limits then hold with room to spare)."""
        strategy = self._strategy
        for rule in rules:
            cost = tokens if rule.what == "tpm" else 1
            if not await self._io(strategy.test, rule.item, *self._ids(rule), cost=cost):
                stats = await self._io(strategy.get_window_stats, rule.item, *self._ids(rule))
                return max(_MIN_SLEEP_S, stats.reset_time - time.time()), rule.what
        for rule in rules:
            cost = tokens if rule.what == "tpm" else 1
            if not await self._io(strategy.hit, rule.item, *self._ids(rule), cost=cost):
                return _MIN_SLEEP_S, rule.what
        return 0.0, ""

    async def acquire(self, entry: ModelEntry, tokens: int, max_wait_s: float) -> Permit:
        """Wait until ``entry`` may be sent a call of ``tokens`` tokens (prompt estimate + max_tokens), for at
        most ``max_wait_s`` seconds. A granted permit holds a concurrency slot until ``release()``."""
        started = time.monotonic()
        deadline = started + max_wait_s
        rules = self._rules.get(entry.name, [])
        for rule in rules:
            if rule.what == "tpm" and tokens > rule.item.amount:
                return Permit(False, 0.0, f"a call of {tokens} tokens (prompt + max_tokens) is above the tpm limit "
                                          f"{rule.item.amount} of {rule.scope}")
        state = self._state()
        self._waiting[entry.name] += 1
        release = None
        try:
            cap = self._concurrent.get(entry.name)
            if cap is not None:
                sem = state.semaphores.setdefault(entry.name, asyncio.Semaphore(cap))
                self._why[entry.name] = "concurrent"
                if not await _within(sem, deadline):
                    return self._refused(started, entry, "concurrent")
                release = sem.release
            gate = state.gates.setdefault(entry.name, asyncio.Lock())
            if not await _within(gate, deadline):
                return self._refused(started, entry, self._why.get(entry.name, "rate limit"), release)
            try:
                while True:
                    now = time.time()
                    paused = await self._io(self._pauses.until, entry.name)
                    spacing = self._spacing_wait(rules)
                    if paused > now:
                        wait, why = paused - now, "provider pause (429 or quota reset)"
                    elif spacing > 0:
                        wait, why = spacing, rules[0].what if len(rules) == 1 else "rate limit"
                    elif rules:
                        wait, why = await self._try_take(rules, tokens)
                        if wait <= 0:
                            self._spaced(rules)
                    else:
                        wait, why = 0.0, ""
                    if wait <= 0:
                        break
                    self._why[entry.name] = why
                    if time.monotonic() + wait > deadline:
                        return self._refused(started, entry, why, release)
                    await asyncio.sleep(wait + random.uniform(0, _MIN_SLEEP_S))
            finally:
                gate.release()
        except BaseException:
            if release is not None:
                release()
            raise
        finally:
            self._waiting[entry.name] -= 1
        return Permit(True, time.monotonic() - started, _release=release)

    def _spacing_wait(self, rules: list[_Rule]) -> float:
        now = time.monotonic()
        return max((self._next_send.get(f"{r.scope}/{r.what}", 0.0) - now for r in rules if r.what != "tpm"), default=0.0)

    def _spaced(self, rules: list[_Rule]) -> None:
        now = time.monotonic()
        for r in rules:
            if r.what != "tpm":
                self._next_send[f"{r.scope}/{r.what}"] = now + r.item.get_expiry() / r.item.amount

    def _refused(self, started: float, entry: ModelEntry, why: str, release: Any = None) -> Permit:
        if release is not None:
            release()
        waited = time.monotonic() - started
        return Permit(False, waited, f"no {why} capacity for {entry.name} within the policy's rate_limit_wait_s")

    # ------------------------------------------------------------------------------------------ adapting

    async def rate_limited(self, entry: ModelEntry, retry_after: float | None, strike: int) -> float:
        """A 429 from ``entry``: pause it for everyone sharing the limiter for its Retry-After, else for an
        exponential backoff (1, 2, 4 ... s by ``strike``, at most 30 s), at least 0.25 s per strike; return the
        pause in seconds."""
        pause = retry_after if retry_after is not None else min(_MAX_BACKOFF_S, 2.0 ** (max(1, strike) - 1))
        # A Retry-After of 0 would retry at once, again and again: each strike waits a little longer.
        pause = max(pause, min(_MAX_BACKOFF_S, 0.25 * max(1, strike)))
        if pause > 0:
            await self._io(self._pauses.extend, entry.name, time.time() + pause)
        return pause

    async def announced(self, entry: ModelEntry, quota: Any, tokens: int) -> None:
        """The provider announced its remaining quota with an answer: when no request (or not another call of
        ``tokens`` tokens) is left, pause ``entry`` for everyone until the announced reset."""
        if quota is None:
            return
        pause = 0.0
        if quota.remaining_requests is not None and quota.remaining_requests <= 0 and quota.reset_requests_s:
            pause = quota.reset_requests_s
        if quota.remaining_tokens is not None and quota.remaining_tokens < tokens and quota.reset_tokens_s:
            pause = max(pause, quota.reset_tokens_s)
        if pause > 0:
            await self._io(self._pauses.extend, entry.name, time.time() + min(pause, _MAX_BACKOFF_S * 4))


def check_storage(config: RateLimitConfig) -> None:
    """Reach the configured shared storage now (ConfigError if it cannot be reached or its URL is not one
    the limiter knows): a batch checks it before it records or starts anything, without waiting for the
    model catalog that the full limiter needs."""
    if config.shared:
        RateLimiter._connect(config.storage)


async def _within(lock: asyncio.Lock | asyncio.Semaphore, deadline: float) -> bool:
    """Acquire ``lock`` by ``deadline`` (monotonic); False when it could not be had in time."""
    if not lock.locked():
        await lock.acquire()
        return True
    try:
        await asyncio.wait_for(lock.acquire(), timeout=max(0.0, deadline - time.monotonic()))
        return True
    except (TimeoutError, asyncio.TimeoutError):
        return False
