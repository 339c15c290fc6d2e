"""Provider rate limits (council.calls.ratelimit): config validation, the limiter itself, and batches against a
scripted provider that enforces an rpm limit per model (429 with Retry-After above it), in one process and in
two processes sharing a Redis limiter.

The scripted limits use a 1-second window (``rpm = 600, rpm_window_s = 1``: 10 requests in any second) and
the client limit a per-second rate just under it, so a throttled batch takes seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from conftest import answer, panel_config
from council.batch.cli import rate_limit_note
from council.batch.runner import BatchProgress, acheck_many
from council.calls.gateway import QuotaHeaders, _quota, _seconds
from council.calls.ratelimit import RateLimiter, Waiting
from council.config.catalog import ModelEntry
from council.config.ratelimits import RateLimitConfig
from council.config.settings import config_from_dict
from council.errors import ConfigError
from council.pipeline.engine import Council
from council.store.db import Store

REDIS = "redis://127.0.0.1:6379/0"
MEMBERS = ("m-a", "m-b", "m-c")
SERVER_PER_S = 10  # the scripted provider: rpm 600 counted over 1 s
CLIENT_RPS = 5  # the configured limit, half the provider's: the margin absorbs transport jitter


def redis_up() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS, socket_connect_timeout=1).ping())
    except Exception:
        return False


needs_redis = pytest.mark.skipif(not redis_up(), reason="no Redis server on 127.0.0.1:6379")


def limited_script(rpm_members: bool = True, headers: bool = True, per_s: int = SERVER_PER_S) -> dict[str, Any]:
    """Members that agree on every claim (no adjudicator call); m-a, m-b, m-c limited to 10 requests a second,
    announcing their remaining quota in headers (``headers``) or not."""
    def member(limited: bool) -> dict[str, Any]:
        extra = {"rpm": per_s * 60, "rpm_window_s": 1.0, "rate_headers": headers} if limited else {}
        return {"latency": 0.05, **extra,
                "answers": [{"content": answer("It is true.", [("The claim is true.", 0.9)], "SUPPORTED")}]}
    models = {m: member(rpm_members) for m in MEMBERS}
    models["m-spare"] = member(False)
    models["judge"] = member(False)
    return {"seed": 1, "models": models}


def limited_config(base_url: str, *, limits: bool, storage: str | None = None, **policy: Any) -> dict[str, Any]:
    cfg = panel_config(base_url, fact_check=policy)
    cfg["embedding"] = "lexical"
    if limits:
        table: dict[str, Any] = {"models": {m: {"rps": CLIENT_RPS} for m in MEMBERS}}
        if storage:
            table.update(storage=storage, namespace=f"test-{uuid.uuid4().hex[:12]}")
        cfg["rate_limits"] = table
    return cfg


def write_limited_config(path: Path, cfg: dict[str, Any]) -> Path:
    """The config as TOML: the conftest writer for the flat tables, [rate_limits] by hand (it nests)."""
    from conftest import to_toml

    limits = cfg.pop("rate_limits", None)
    lines = [to_toml(cfg)]
    if limits is not None:
        lines.append("[rate_limits]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in limits.items() if not isinstance(v, dict)]
        for name, table in limits.get("models", {}).items():
            lines.append(f'[rate_limits.models."{name}"]')
            lines += [f"{k} = {v}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def claims_file(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"c{i}", "claim": f"Bridge {i} opened in {1900 + i}."}) + "\n"
                            for i in range(n)), encoding="utf-8")
    return path


def rows(db: str, sql: str) -> list[Any]:
    with Store(db).engine.connect() as conn:
        return list(conn.execute(text(sql)))


def busiest_second(server: Any, model: str) -> int:
    """The most requests of ``model`` the server accepted within any 1-second span."""
    times = sorted(r.started for r in server.requests if r.model == model and r.status == 200)
    return max((sum(1 for t in times if s <= t < s + 1.0) for s in times), default=0)


def entry(name: str, provider: str = "prov") -> ModelEntry:
    return ModelEntry(name=name, model=f"openai/{name}", provider=provider, api_base="http://127.0.0.1:9/v1")


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(("limits", "message"), [
    ({"rpm": 0}, "rate_limits.models.m-a.rpm: Input should be greater than 0"),
    ({"tpm": -5}, "rate_limits.models.m-a.tpm: Input should be greater than 0"),
    ({"concurrent": 0}, "rate_limits.models.m-a.concurrent: Input should be greater than 0"),
    ({}, "set at least one of rpm, rps, tpm, concurrent"),
    ({"rpn": 5}, "rate_limits.models.m-a.rpn: Extra inputs are not permitted"),
])
def test_zero_negative_or_unknown_limits_are_config_errors(limits: dict[str, Any], message: str) -> None:
    cfg = panel_config("http://127.0.0.1:9/v1")
    cfg["rate_limits"] = {"models": {"m-a": limits}}
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        config_from_dict(cfg)


def test_a_limit_on_an_unknown_model_is_a_config_error() -> None:
    cfg = panel_config("http://127.0.0.1:9/v1")
    cfg["rate_limits"] = {"models": {"gpt-9": {"rpm": 10}}}
    with pytest.raises(ConfigError, match=r"rate_limits\.models\.gpt-9: no model 'gpt-9' in \[models\]"):
        config_from_dict(cfg)


def test_unknown_provider_and_unreachable_storage_fail_before_any_call(scripted, db_url: str) -> None:
    server = scripted(limited_script())
    cfg = limited_config(server.base_url, limits=False)
    cfg["rate_limits"] = {"providers": {"prov-zz": {"rpm": 10}}}
    with pytest.raises(ConfigError, match=r"rate_limits\.providers\.prov-zz: no model of the catalog has provider "
                                          r"'prov-zz' \(providers: prov-a, prov-b, prov-c, prov-d, prov-j\)"):
        Council(cfg, db=db_url).check("Bridge 1 opened in 1901.")
    cfg["rate_limits"] = {"storage": "redis://127.0.0.1:1/0", "models": {"m-a": {"rpm": 10}}}
    with pytest.raises(ConfigError, match=r"rate_limits\.storage 'redis://127\.0\.0\.1:1/0': cannot reach it"):
        Council(cfg, db=db_url).check("Bridge 1 opened in 1901.")
    cfg["rate_limits"] = {"storage": "nosuch://x", "models": {"m-a": {"rpm": 10}}}
    with pytest.raises(ConfigError, match=r"rate_limits\.storage 'nosuch://x'"):
        Council(cfg, db=db_url).check("Bridge 1 opened in 1901.")
    assert server.stats()["total_requests"] == 0
    assert Store(db_url).list_runs() == []


def test_cli_batch_with_unreachable_storage_exits_2_before_any_call(scripted, tmp_path: Path) -> None:
    server = scripted(limited_script())
    cfg = limited_config(server.base_url, limits=True, storage="redis://127.0.0.1:1/0")
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    proc = subprocess.run([sys.executable, "-m", "council.batch", str(claims_file(tmp_path / "c.jsonl", 3)),
                           "--config", str(write_limited_config(tmp_path / "c.toml", cfg)), "--db", db, "--quiet"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == 2, proc.stderr
    assert "error: rate_limits.storage 'redis://127.0.0.1:1/0': cannot reach it" in proc.stderr
    assert server.stats()["total_requests"] == 0


# ------------------------------------------------------------------------------------------ the scripted provider


def test_scripted_server_enforces_rpm_with_retry_after(scripted) -> None:
    import httpx

    server = scripted({"models": {"m": {"rpm": 120, "rpm_window_s": 1.0, "answers": [{"content": "hi"}]}}})
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
    with httpx.Client() as client:
        first, second, third = (client.post(f"{server.base_url}/chat/completions", json=body) for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
    assert first.headers["x-ratelimit-remaining-requests"] == "1" and second.headers["x-ratelimit-remaining-requests"] == "0"
    assert 0 < float(third.headers["Retry-After"]) <= 1.0
    assert third.json()["error"]["type"] == "rate_limit_error"
    assert [r.fault for r in server.requests] == [None, None, "rpm"]
    assert server.stats()["rpm_refused"] == {"m": 1}


def test_provider_quota_headers_are_parsed() -> None:
    assert _seconds("6m0s") == 360.0 and _seconds("20ms") == pytest.approx(0.02) and _seconds("1.5") == 1.5
    assert _seconds("soon") is None
    q = _quota({"llm_provider-x-ratelimit-remaining-requests": "0", "llm_provider-x-ratelimit-reset-requests": "1.250s",
                "x-ratelimit-remaining-tokens": "900", "x-ratelimit-reset-tokens": "2s"})
    assert q == QuotaHeaders(remaining_requests=0, reset_requests_s=1.25, remaining_tokens=900, reset_tokens_s=2.0)
    assert _quota({"content-type": "application/json"}) is None


# ------------------------------------------------------------------------------------------ the limiter


async def test_requests_per_second_are_spread_and_the_wait_is_reported() -> None:
    lim = RateLimiter(RateLimitConfig(models={"m": {"rps": 4}}), [entry("m")])
    permits = await asyncio.gather(*(lim.acquire(entry("m"), 10, 30.0) for _ in range(10)))
    assert all(p.granted for p in permits)
    queued = sorted(p.queued_s for p in permits)
    # spaced evenly, one every 1/4 s: the tenth leaves after 2.25 s
    assert queued[0] < 0.1
    assert all(q >= 0.25 * i - 0.02 for i, q in enumerate(queued))
    assert queued[-1] < 3.0


async def test_no_capacity_within_the_allowed_wait_is_refused_with_the_reason() -> None:
    lim = RateLimiter(RateLimitConfig(models={"m": {"rpm": 1}}), [entry("m")])
    assert (await lim.acquire(entry("m"), 10, 0.0)).granted
    refused = await lim.acquire(entry("m"), 10, 0.2)
    assert not refused.granted and refused.reason == "no rpm capacity for m within the policy's rate_limit_wait_s"
    too_big = RateLimiter(RateLimitConfig(models={"m": {"tpm": 1000}}), [entry("m")])
    refused = await too_big.acquire(entry("m"), 1500, 60.0)
    assert not refused.granted and "1500 tokens" in refused.reason and "tpm limit 1000 of model:m" in refused.reason


async def test_provider_limits_are_shared_by_its_models_and_tokens_count() -> None:
    lim = RateLimiter(RateLimitConfig(providers={"acme": {"tpm": 1000}}), [entry("x", "acme"), entry("y", "acme")])
    assert (await lim.acquire(entry("x", "acme"), 600, 0.0)).granted
    assert not (await lim.acquire(entry("y", "acme"), 600, 0.0)).granted  # 1200 > 1000 together
    assert (await lim.acquire(entry("y", "acme"), 400, 0.0)).granted


async def test_concurrent_limit_holds_and_is_split_between_processes() -> None:
    lim = RateLimiter(RateLimitConfig(models={"m": {"concurrent": 4}}), [entry("m")], share=2)
    in_flight = peak = 0

    async def call() -> None:
        nonlocal in_flight, peak
        permit = await lim.acquire(entry("m"), 1, 30.0)
        assert permit.granted
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        permit.release()

    await asyncio.gather(*(call() for _ in range(8)))
    assert peak == 2  # 4 concurrent split between 2 processes


async def test_a_429_or_an_exhausted_quota_pauses_the_model_for_every_caller() -> None:
    lim = RateLimiter(RateLimitConfig(), [entry("m"), entry("n")])
    assert await lim.rate_limited(entry("m"), 0.4, 1) == 0.4
    waiting = asyncio.ensure_future(lim.acquire(entry("m"), 1, 5.0))
    await asyncio.sleep(0.1)
    assert lim.waiting() == [Waiting(model="m", calls=1, reason="provider pause (429 or quota reset)")]
    permit = await waiting
    assert permit.granted and permit.queued_s >= 0.3 and lim.waiting() == []
    assert await lim.rate_limited(entry("m"), None, 3) == 4.0  # no Retry-After: backoff 1, 2, 4 ... s
    assert not (await lim.acquire(entry("m"), 1, 0.5)).granted  # paused 4 s, more than the 0.5 s allowed
    assert (await lim.acquire(entry("n"), 1, 0.0)).granted  # other models are not paused
    await lim.announced(entry("n"), QuotaHeaders(remaining_requests=0, reset_requests_s=0.3), 10)
    permit = await lim.acquire(entry("n"), 1, 5.0)
    assert permit.granted and permit.queued_s >= 0.25


@needs_redis
async def test_limits_and_pauses_in_redis_are_shared_between_limiters() -> None:
    cfg = RateLimitConfig(storage=REDIS, namespace=f"test-{uuid.uuid4().hex[:12]}", models={"m": {"rpm": 3}})
    one, two, three, four = (RateLimiter(cfg, [entry("m"), entry("n")]) for _ in range(4))
    granted = [(await lim.acquire(entry("m"), 1, 0.0)).granted for lim in (one, two, three, four)]
    assert granted == [True, True, True, False]  # 3 a minute between them all
    await one.rate_limited(entry("n"), 30.0, 1)
    assert not (await two.acquire(entry("n"), 1, 0.2)).granted


# ------------------------------------------------------------------------------------------ batches


async def test_batch_with_the_limit_gets_no_429_and_takes_about_calls_over_rate(scripted, tmp_path: Path) -> None:
    server = scripted(limited_script())
    db = f"sqlite:///{tmp_path / 'limited.db'}"
    n = 16
    seen: list[list[Waiting]] = []

    def progress(p: BatchProgress) -> None:
        if p.waiting:
            seen.append(list(p.waiting))

    report = await acheck_many(claims_file(tmp_path / "c.jsonl", n), config=limited_config(server.base_url, limits=True),
                               db=db, concurrency=8, on_progress=progress)
    assert report.counts == {"full": n}
    stats = server.stats()
    assert stats["rpm_refused"] == {}  # zero 429s
    assert stats["requests"] == {m: n for m in MEMBERS}  # no fallback, no retry
    for m in MEMBERS:
        assert busiest_second(server, m) <= SERVER_PER_S
    member_requests = [r for r in server.requests if r.model in MEMBERS]
    span = max(r.finished for r in member_requests) - min(r.started for r in member_requests)
    minimum = n / CLIENT_RPS  # calls per model / rate: 3.2 s
    # moving window: the first CLIENT_RPS go at once, so the last leaves after (n / rate - 1) s at the earliest;
    # the margin above is for this machine's load (the councils' own CPU time overlaps the waits)
    assert minimum - 1.0 <= span <= minimum * 1.5, span
    records = [r for run in Store(db).list_runs(limit=100) for r in Store(db).load_run(run.run_id).calls]
    assert len(records) == 3 * n and {r.status for r in records} == {"ok"}
    assert sum(1 for r in records if r.queued_s > 0.5) >= n  # most calls waited for their turn
    # eight councils in flight: a model's eighth call in line waits for the seven sends before it
    assert max(r.queued_s for r in records) >= 7 / CLIENT_RPS - 0.2
    for r in records:  # the wait is not latency: the record starts when the request is sent
        assert abs((r.finished_at - r.started_at).total_seconds() - r.latency_s) < 0.5
    from council.provenance.monitoring import stats_report

    by_model = {row.model: row for row in stats_report(Store(db)).models}
    for m in MEMBERS:  # council stats shows the wait apart from latency, from the same records
        mine = [r for r in records if r.model == m]
        assert by_model[m].queued_total_s == pytest.approx(sum(r.queued_s for r in mine))
        assert by_model[m].queued_p95_s is not None and by_model[m].queued_p95_s > 1.0
        assert by_model[m].rate_limited == 0
    assert any(w.model in MEMBERS and w.reason == "rps" for snapshot in seen for w in snapshot)
    assert rate_limit_note(seen[0]).startswith(" · waiting on rate limit: m-")


async def test_batch_without_the_limit_meets_429s_and_falls_back(scripted, tmp_path: Path) -> None:
    server = scripted(limited_script(headers=False, per_s=2))
    db = f"sqlite:///{tmp_path / 'unlimited.db'}"
    n = 16
    # No limits, a provider that does not announce its quota, and a policy allowing no wait for rate limits:
    # each 429 falls back at once.
    report = await acheck_many(claims_file(tmp_path / "c.jsonl", n), db=db, concurrency=8,
                               config=limited_config(server.base_url, limits=False, rate_limit_wait_s=0))
    refused = sum(server.stats()["rpm_refused"].values())
    assert refused > 0
    calls = rows(db, "SELECT model, model_requested, status, error_kind FROM calls")
    assert sum(1 for c in calls if c.error_kind == "rate_limit") == refused  # every 429 has its record
    fallbacks = [c for c in calls if c.status == "ok" and c.model != c.model_requested]
    assert fallbacks and {c.model for c in fallbacks} == {"m-spare"}
    assert server.stats()["requests"]["m-spare"] == len(fallbacks)
    assert sum(report.counts.values()) == n
    proc = subprocess.run([sys.executable, "-m", "council", "stats", "--db", db, "--json"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == 0, proc.stderr
    shown = {row["model"]: row for row in json.loads(proc.stdout)["models"]}
    for m in MEMBERS:  # the 429s and the skips for want of capacity, per model, as the records say
        assert shown[m]["rate_limited"] == sum(1 for c in calls if c.model == m and c.error_kind == "rate_limit")
        assert shown[m]["rate_limit_skips"] == sum(1 for c in calls if c.model == m and c.error_kind == "rate_limit_wait")
    assert sum(shown[m]["rate_limited"] for m in MEMBERS) == refused


@needs_redis
def test_two_processes_sharing_a_redis_limiter_stay_under_the_limit_together(scripted, tmp_path: Path) -> None:
    server = scripted(limited_script())
    config = write_limited_config(tmp_path / "c.toml", limited_config(server.base_url, limits=True, storage=REDIS))
    n = 16
    procs, dbs = [], []
    for name in ("one", "two"):  # two separate batches at once, each in its own database, one Redis limiter
        dbs.append(f"sqlite:///{tmp_path / name}.db")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "council.batch", str(claims_file(tmp_path / f"{name}.jsonl", n)), "--config",
             str(config), "--db", dbs[-1], "-j", "8", "--quiet", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()}))
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        assert json.loads(out)["counts"] == {"full": n}
    stats = server.stats()
    assert stats["rpm_refused"] == {}  # zero 429s, the two processes together
    assert stats["requests"] == {m: 2 * n for m in MEMBERS}
    for m in MEMBERS:
        assert busiest_second(server, m) <= SERVER_PER_S
    spans = [rows(db, "SELECT MIN(started_at) AS lo, MAX(started_at) AS hi FROM calls")[0] for db in dbs]
    lo, hi = max(str(s.lo) for s in spans), min(str(s.hi) for s in spans)
    assert lo < hi  # they were sending at the same time
    # together they send at the shared rate: 2n calls per model at CLIENT_RPS take about 2n / CLIENT_RPS s
    member_requests = [r for r in server.requests if r.model in MEMBERS]
    span = max(r.finished for r in member_requests) - min(r.started for r in member_requests)
    assert span >= 2 * n / CLIENT_RPS - 1.5, span


# ------------------------------------------------------------------------------------------ one member's chain


def chain_context(records: list[Any], limiter: RateLimiter, **policy: Any) -> Any:
    from council.calls.members import CallContext
    from council.calls.prompts import RenderedPrompt
    from council.config.policy import TaskPolicy

    prompt = RenderedPrompt(template_name="member.j2", template_hash="0" * 12, system="Reply in JSON.", user="Question: q")
    return CallContext(run_id="run-rl", node="member", member_label="A", prompt=prompt, sink=records.append,
                       policy=TaskPolicy(name="research", **{"timeout_s": 5.0, "max_output_tokens": 100, **policy}),
                       limiter=limiter)


def two_models(server: Any) -> list[ModelEntry]:
    return [ModelEntry(name=n, model=f"openai/{n}", api_base=server.base_url, provider=f"prov-{n}",
                       capabilities=frozenset({"text"}), input_usd_per_mtok=1.0, output_usd_per_mtok=1.0)
            for n in ("m-a", "m-b")]


GOOD = {"answer": "No.", "claims": [{"text": "It is not.", "confidence": 0.9}]}


async def test_a_429_is_waited_out_on_the_same_model_within_the_policy_wait(scripted) -> None:
    from council.calls.answers import AnswerDraft
    from council.calls.members import run_chain

    server = scripted({"models": {
        "m-a": {"answers": [{"content": GOOD}], "faults": [{"kind": "429", "attempts": [1], "retry_after": 0.6}]},
        "m-b": {"answers": [{"content": GOOD}]}}})
    chain = two_models(server)
    records: list[Any] = []
    out = await run_chain(chain_context(records, RateLimiter(RateLimitConfig(), chain), attempts_per_model=1),
                          chain, AnswerDraft)
    assert out.model is not None and out.model.name == "m-a"  # no fallback although attempts_per_model = 1
    assert [(r.model, r.status, r.error_kind) for r in records] == [("m-a", "failed", "rate_limit"), ("m-a", "ok", None)]
    assert records[0].queued_s < 0.1 and records[1].queued_s >= 0.55  # the Retry-After pause, on the retry's record
    assert records[1].latency_s < records[1].queued_s


async def test_a_429_asking_more_than_the_policy_wait_falls_back_at_once(scripted) -> None:
    from council.calls.answers import AnswerDraft
    from council.calls.members import run_chain

    server = scripted({"models": {
        "m-a": {"answers": [{"content": GOOD}], "faults": [{"kind": "429", "attempts": [1], "retry_after": 30}]},
        "m-b": {"answers": [{"content": GOOD}]}}})
    chain = two_models(server)
    records: list[Any] = []
    limiter = RateLimiter(RateLimitConfig(), chain)
    started = time.monotonic()
    out = await run_chain(chain_context(records, limiter, rate_limit_wait_s=5), chain, AnswerDraft)
    assert time.monotonic() - started < 5
    assert out.model is not None and out.model.name == "m-b"
    assert [(r.model, r.status) for r in records] == [("m-a", "failed"), ("m-b", "ok")]
    # the next caller of m-a does not even try it: the pause holds for everyone sharing the limiter
    records2: list[Any] = []
    out2 = await run_chain(chain_context(records2, limiter, rate_limit_wait_s=5), chain, AnswerDraft)
    assert [(r.model, r.status, r.error_kind) for r in records2] == [("m-a", "skipped", "rate_limit_wait"), ("m-b", "ok", None)]
    assert "no provider pause (429 or quota reset) capacity for m-a" in (records2[0].error_message or "")
    assert out2.model is not None and out2.model.name == "m-b"
    assert server.stats()["requests"] == {"m-a": 1, "m-b": 2}
