"""Tests of council.gateway: redaction, litellm's model map, API keys, and one real call per attempt.

Every call goes through the real litellm path over loopback HTTP to the scripted server.
"""

from __future__ import annotations

import socket

import pytest

from council.config.catalog import ModelEntry
from council.errors import (
    CallTimeout,
    ConfigError,
    ModelCallError,
    PermanentError,
    ProviderUnavailable,
    RateLimited,
    TransientError,
)
from council.calls.gateway import ChatMessage, acomplete, missing_key, model_defaults, redact

MSGS = [ChatMessage(role="system", content="Answer briefly."), ChatMessage(role="user", content="Hello there?")]


def entry(srv, name: str, **kw) -> ModelEntry:
    fields = dict(name=name, model=f"openai/{name}", api_base=srv.base_url, provider="prov-test",
                  capabilities=frozenset({"text"}))
    fields.update(kw)
    return ModelEntry(**fields)


async def call(e: ModelEntry, timeout_s: float = 5.0, messages=MSGS):
    return await acomplete(e, messages, max_tokens=50, temperature=0.0, timeout_s=timeout_s)


# ------------------------------------------------------------------------------------------ redact


def test_redact_removes_known_secret_values():
    secret = "my-very-private-token-123"
    out = redact(f"failed with key {secret} (again: {secret})", [secret])
    assert secret not in out
    assert out == "failed with key *** (again: ***)"


def test_redact_ignores_secrets_too_short_to_be_keys():
    assert redact("a cat sat on the mat", ["at", ""]) == "a cat sat on the mat"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Incorrect API key provided: sk-proj-AbCdEf123456_xyz.", "Incorrect API key provided: sk-***."),
        ("key=sk-ant-api03-abcdefghijkl", "key=sk-***"),
        ("Authorization: Bearer eyJhbGciOi.JIUzI1NiJ9.abc-def", "Authorization: Bearer ***"),
        ('headers={"Authorization": "Bearer tok_abcdefgh1234"}', 'headers={"Authorization": "Bearer ***"}'),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic ***"),
        ("authorization=rawtokenvalue1234", "authorization=***"),
        ("x-api-key: abcdef0123456789", "x-api-key: ***"),
        ("api_key='abcd1234efgh'", "api_key='***'"),
    ],
)
def test_redact_removes_key_shaped_strings(text: str, expected: str):
    assert redact(text) == expected


def test_redact_keeps_ordinary_text():
    text = "RateLimitError: rate limit reached for model 'm-a' (scripted fault, attempt 1)"
    assert redact(text) == text


def test_redact_folds_to_one_line_and_truncates():
    assert redact("line one\n  line two\t\tthree\r\n") == "line one line two three"
    long = "word " * 200
    out = redact(long, limit=50)
    assert len(out) == 50
    assert out.endswith("…")
    assert out.startswith("word word")
    assert redact("short", limit=50) == "short"


# ------------------------------------------------------------------------------------------ model map


def test_model_defaults_for_a_model_litellm_knows():
    import litellm

    info = litellm.model_cost["gpt-4o-mini"]
    for model in ("gpt-4o-mini", "openai/gpt-4o-mini"):
        d = model_defaults(ModelEntry(name="mini", model=model))
        assert d.provider == "openai"
        assert d.input_usd_per_mtok == pytest.approx(info["input_cost_per_token"] * 1e6)
        assert d.output_usd_per_mtok == pytest.approx(info["output_cost_per_token"] * 1e6)
        assert d.input_usd_per_mtok == pytest.approx(0.15)  # per million tokens, not per token
        assert d.output_usd_per_mtok == pytest.approx(0.60)
        assert {"text", "vision", "json_schema", "tools", "long_context"} <= d.capabilities
        assert d.context_window == info["max_input_tokens"] == 128_000
        assert d.max_output_tokens == info["max_output_tokens"]


def test_model_defaults_for_an_unmapped_openai_compatible_model():
    d = model_defaults(ModelEntry(name="mine", model="openai/my-finetune-7b", api_base="http://127.0.0.1:9/v1"))
    assert d.provider == "openai"
    assert d.capabilities == frozenset({"text"})
    assert d.input_usd_per_mtok is None and d.output_usd_per_mtok is None
    assert d.context_window is None and d.max_output_tokens is None


def test_unknown_model_string_is_a_config_error_naming_it():
    with pytest.raises(ConfigError) as err:
        model_defaults(ModelEntry(name="mystery", model="totally-unknown-model-xyz"))
    msg = str(err.value)
    assert "'totally-unknown-model-xyz'" in msg
    assert "models.mystery" in msg
    assert "openai/" in msg  # says how to fix it


# ------------------------------------------------------------------------------------------ keys


def test_missing_key_with_api_key_env(monkeypatch: pytest.MonkeyPatch):
    e = ModelEntry(name="g", model="openai/gpt-4o-mini", api_key_env="COUNCIL_TEST_KEY_VAR")
    monkeypatch.delenv("COUNCIL_TEST_KEY_VAR", raising=False)
    assert missing_key(e) == "COUNCIL_TEST_KEY_VAR"
    monkeypatch.setenv("COUNCIL_TEST_KEY_VAR", "")
    assert missing_key(e) == "COUNCIL_TEST_KEY_VAR"  # empty is unset
    monkeypatch.setenv("COUNCIL_TEST_KEY_VAR", "value")
    assert missing_key(e) is None


def test_missing_key_uses_the_providers_own_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert missing_key(ModelEntry(name="g", model="openai/gpt-4o-mini")) == "OPENAI_API_KEY"
    assert missing_key(ModelEntry(name="c", model="anthropic/claude-3-5-sonnet-20240620")) == "ANTHROPIC_API_KEY"
    monkeypatch.setenv("OPENAI_API_KEY", "value")
    assert missing_key(ModelEntry(name="g", model="openai/gpt-4o-mini")) is None


def test_no_key_needed_with_api_base_or_local(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert missing_key(ModelEntry(name="v", model="openai/my-vllm", api_base="http://127.0.0.1:8000/v1")) is None
    assert missing_key(ModelEntry(name="o", model="ollama/llama3", local=True)) is None


# ------------------------------------------------------------------------------------------ calls


SCRIPT = {"models": {
    "ok": {"prompt_tokens": 1000, "completion_tokens": 500, "answers": [{"content": "hello there"}]},
    "rl": {"answers": [{"content": "x"}], "faults": [{"kind": "429", "attempts": [1], "retry_after": 2}]},
    "rl-bare": {"answers": [{"content": "x"}], "faults": [{"kind": "429", "attempts": [1]}]},
    "e500": {"answers": [{"content": "x"}], "faults": [{"kind": "500", "attempts": [1]}]},
    "e503": {"answers": [{"content": "x"}], "faults": [{"kind": "503", "attempts": [1]}]},
    "sleepy": {"timeout_sleep": 10, "answers": [{"content": "x"}], "faults": [{"kind": "timeout", "attempts": [1]}]},
    "picky": {"answers": [{"match": "only this question", "content": "x"}]},
}}


@pytest.fixture
def srv(scripted):
    return scripted(SCRIPT)


async def test_cost_from_catalog_prices(srv):
    e = entry(srv, "ok", input_usd_per_mtok=2.0, output_usd_per_mtok=4.0)
    r = await call(e)
    assert r.text == "hello there"
    assert (r.prompt_tokens, r.completion_tokens) == (1000, 500)
    assert r.cost_usd == pytest.approx((1000 * 2.0 + 500 * 4.0) / 1e6)
    assert r.cost_source == "catalog"
    assert r.model_reported == "ok"
    assert r.latency_s > 0
    [seen] = srv.requests
    assert r.request_id == seen.request_id
    assert r.request_id.startswith("chatcmpl-")
    assert seen.question == "Hello there?"


async def test_local_model_costs_zero_even_with_prices_set(srv):
    r = await call(entry(srv, "ok", local=True, input_usd_per_mtok=2.0, output_usd_per_mtok=4.0))
    assert (r.cost_usd, r.cost_source) == (0.0, "local")
    assert (r.prompt_tokens, r.completion_tokens) == (1000, 500)


async def test_unknown_price_gives_unknown_cost(srv):
    for prices in ({}, {"input_usd_per_mtok": 2.0}):
        r = await call(entry(srv, "ok", **prices))
        assert (r.cost_usd, r.cost_source) == (0.0, "unknown")
        assert r.prompt_tokens == 1000


async def test_extra_params_and_image_messages_reach_the_server(srv):
    from council.calls.gateway import ImagePart, ImageURL, TextPart

    msgs = [ChatMessage(role="user", content=[
        TextPart(text="What is in this picture?"),
        ImagePart(image_url=ImageURL(url="data:image/png;base64,iVBORw0KGgo=")),
    ])]
    r = await call(entry(srv, "ok", params={"top_p": 0.5}, input_usd_per_mtok=1.0, output_usd_per_mtok=1.0),
                   messages=msgs)
    assert r.text == "hello there"
    assert srv.requests[-1].question == "What is in this picture?"


async def test_429_is_rate_limited_with_retry_after(srv):
    with pytest.raises(RateLimited) as err:
        await call(entry(srv, "rl"))
    e = err.value
    assert isinstance(e, TransientError)
    assert e.kind == "rate_limit"
    assert e.status_code == 429
    assert e.retry_after == 2.0
    assert e.provider == "prov-test"
    assert "rate limit reached for model 'rl'" in str(e)
    assert srv.stats()["requests"] == {"rl": 1}  # litellm made no hidden retry


async def test_429_without_header_has_no_retry_after(srv):
    with pytest.raises(RateLimited) as err:
        await call(entry(srv, "rl-bare"))
    assert err.value.retry_after is None


@pytest.mark.parametrize(("name", "status"), [("e500", 500), ("e503", 503)])
async def test_5xx_is_provider_unavailable(srv, name: str, status: int):
    with pytest.raises(ProviderUnavailable) as err:
        await call(entry(srv, name))
    e = err.value
    assert isinstance(e, TransientError)
    assert e.kind == "server_error"
    assert e.status_code == status
    assert srv.stats()["requests"] == {name: 1}
    # The scripted fault is on attempt 1 only: the next attempt (made by council, not litellm) succeeds.
    assert (await call(entry(srv, name))).text == "x"


async def test_404_is_a_permanent_not_found(srv):
    with pytest.raises(PermanentError) as err:
        await call(entry(srv, "no-such-model"))
    e = err.value
    assert not isinstance(e, TransientError)
    assert e.kind == "not_found"
    assert e.status_code == 404
    assert "not in the script" in str(e)


async def test_400_is_a_permanent_bad_request(srv):
    with pytest.raises(PermanentError) as err:
        await call(entry(srv, "picky"))
    assert err.value.kind == "bad_request"
    assert err.value.status_code == 400


async def test_timeout_is_call_timeout(srv):
    with pytest.raises(CallTimeout) as err:
        await call(entry(srv, "sleepy"), timeout_s=0.3)
    e = err.value
    assert isinstance(e, TransientError)
    assert e.kind == "timeout"
    assert str(e).startswith("timed out: ")


async def test_connection_refused_is_a_transient_connection_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    e = ModelEntry(name="gone", model="openai/gone", api_base=f"http://127.0.0.1:{port}/v1", provider="prov-x")
    with pytest.raises(TransientError) as err:
        await call(e)
    assert isinstance(err.value, ProviderUnavailable)
    assert err.value.kind == "connection"
    assert err.value.status_code is None  # no server answered
    assert err.value.provider == "prov-x"


async def test_error_messages_never_carry_the_api_key(srv, monkeypatch: pytest.MonkeyPatch):
    secret = "zq-private-" + "9f8e7d6c5b4a"
    monkeypatch.setenv("COUNCIL_TEST_GATEWAY_KEY", secret)
    e = entry(srv, "picky", api_key_env="COUNCIL_TEST_GATEWAY_KEY")
    # The server quotes the question in its 400 error; a question that contains the key must not leak it.
    msgs = [ChatMessage(role="user", content=f"my key is {secret}, is it safe?")]
    with pytest.raises(ModelCallError) as err:
        await call(e, messages=msgs)
    assert secret not in str(err.value)
    assert "***" in str(err.value)
    assert "\n" not in str(err.value)
