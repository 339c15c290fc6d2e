"""Tests of council.testing: the script format and the scripted OpenAI-compatible server.

Every request is real HTTP over loopback (httpx, and litellm for the end-to-end check).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from council.testing import Script, ScriptedServer, load_script

ROOT = Path(__file__).resolve().parents[1]


def _server(models: dict[str, Any], seed: int = 0) -> ScriptedServer:
    return ScriptedServer(Script.model_validate({"seed": seed, "models": models}))


@pytest.fixture
def serve():
    """Start ScriptedServers from model dicts; all are stopped at teardown."""
    started: list[ScriptedServer] = []

    def start(models: dict[str, Any], seed: int = 0) -> ScriptedServer:
        srv = _server(models, seed).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@functools.cache
def _client() -> httpx.Client:
    # One pooled client: building a new one per request costs tens of milliseconds.
    return httpx.Client(timeout=5)


@pytest.fixture(scope="module", autouse=True)
def _close_client():
    yield
    if _client.cache_info().currsize:
        _client().close()
        _client.cache_clear()


def _chat(srv: ScriptedServer, question: str | list[dict[str, Any]], model: str = "member-a",
          **extra: Any) -> httpx.Response:
    messages = question if isinstance(question, list) else [{"role": "user", "content": question}]
    return _client().post(f"{srv.base_url}/chat/completions",
                          json={"model": model, "messages": messages, **extra})


def _content(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


# ------------------------------------------------------------------------- answers


def test_answer_matching_by_substring_and_default(serve):
    srv = serve({"member-a": {"answers": [
        {"match": "Great Wall", "content": "It is not visible from orbit."},
        {"match": "", "content": "default answer"},
    ]}})
    assert _content(_chat(srv, "Is the great wall visible from space?")) == "It is not visible from orbit."
    assert _content(_chat(srv, "What is the capital of France?")) == "default answer"
    # The LAST user message is what matches, not earlier turns.
    convo = [{"role": "system", "content": "Great Wall expert"},
             {"role": "user", "content": "Great Wall?"},
             {"role": "assistant", "content": "..."},
             {"role": "user", "content": "and Paris?"}]
    assert _content(_chat(srv, convo)) == "default answer"


def test_completion_shape_and_request_id_header(serve):
    srv = serve({"member-a": {"answers": [{"content": "hello"}]}})
    response = _chat(srv, "hi", temperature=0.2, response_format={"type": "json_object"})
    body = response.json()
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) == len("chatcmpl-") + 32
    assert response.headers["x-request-id"] == body["id"]
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "member-a"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "hello"}
    assert body["choices"][0]["finish_reason"] == "stop"
    models = httpx.get(f"{srv.base_url}/models").json()
    assert [m["id"] for m in models["data"]] == ["member-a"]


def test_json_content_is_served_as_a_json_string(serve):
    payload = {"answer": "No", "claims": [{"text": "not visible", "confidence": 0.9}]}
    srv = serve({"member-a": {"answers": [{"content": payload}]}})
    content = _content(_chat(srv, "anything"))
    assert isinstance(content, str)
    assert json.loads(content) == payload


def test_usage_explicit_and_estimated(serve):
    srv = serve({
        "explicit": {"prompt_tokens": 120, "completion_tokens": 40, "answers": [{"content": "x" * 10}]},
        "estimated": {"answers": [{"content": "y" * 10}]},
    })
    usage = _chat(srv, "hello", model="explicit").json()["usage"]
    assert usage == {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160}
    # 13 + 4 = 17 message characters -> ceil(17/4) = 5; 10 answer characters -> 3.
    messages = [{"role": "system", "content": "s" * 13},
                {"role": "user", "content": [{"type": "text", "text": "abcd"},
                                             {"type": "image_url", "image_url": {"url": "data:,"}}]}]
    usage = _chat(srv, messages, model="estimated").json()["usage"]
    assert usage == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def test_vision_style_parts_are_matched_by_their_text(serve):
    srv = serve({"member-a": {"answers": [{"match": "photo", "content": "a cat"}]}})
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is in this PHOTO?"},
                                             {"type": "image_url", "image_url": {"url": "data:,"}}]}]
    assert _content(_chat(srv, messages)) == "a cat"


# ------------------------------------------------------------------------- latency, concurrency


async def test_latency_is_respected_and_concurrent_requests_overlap(serve):
    srv = serve({"member-a": {"latency": 0.3, "answers": [{"content": "ok"}]}})
    async with httpx.AsyncClient(base_url=srv.base_url, timeout=5) as client:
        t0 = time.perf_counter()
        await client.post("/chat/completions",
                          json={"model": "member-a", "messages": [{"role": "user", "content": "warm"}]})
        assert time.perf_counter() - t0 >= 0.29
        srv.reset()
        responses = await asyncio.gather(*[
            client.post("/chat/completions",
                        json={"model": "member-a", "messages": [{"role": "user", "content": f"q{i}"}]})
            for i in range(3)])
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert srv.max_in_flight == 3
    stats = httpx.get(srv.base_url.removesuffix("/v1") + "/_stats").json()
    assert stats["max_in_flight"] == 3
    assert stats["max_in_flight_by_model"] == {"member-a": 3}
    assert stats["requests"] == {"member-a": 3}
    assert stats["in_flight"] == 0


# ------------------------------------------------------------------------- faults


def test_429_with_retry_after_on_first_attempt_then_success(serve):
    srv = serve({"member-a": {"answers": [{"content": "fine"}],
                              "faults": [{"kind": "429", "attempts": [1], "retry_after": 1}]}})
    first = _chat(srv, "q")
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "1"
    assert first.json()["error"]["type"] == "rate_limit_error"
    assert _content(_chat(srv, "q")) == "fine"
    assert [(r.attempt, r.fault, r.status) for r in srv.requests] == [(1, "429", 429), (2, None, 200)]


def test_attempts_are_counted_per_model_and_question(serve):
    srv = serve({"member-a": {"answers": [{"match": "wall", "content": "wall"}, {"content": "other"}],
                              "faults": [{"kind": "500", "attempts": [1]}]}})
    assert _chat(srv, "great wall").status_code == 500
    assert _chat(srv, "paris").status_code == 500  # a different answer key: its own attempt 1
    assert _content(_chat(srv, "great wall")) == "wall"
    assert _content(_chat(srv, "paris")) == "other"


@pytest.mark.parametrize(("kind", "status", "error_type"),
                         [("500", 500, "server_error"), ("503", 503, "service_unavailable_error")])
def test_server_error_faults_have_openai_error_bodies(serve, kind, status, error_type):
    srv = serve({"member-a": {"latency": 5, "answers": [{"content": "ok"}],
                              "faults": [{"kind": kind, "attempts": [1]}]}})
    t0 = time.perf_counter()
    response = _chat(srv, "q")
    assert time.perf_counter() - t0 < 1  # HTTP error faults come back at once, without the latency
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == error_type and "member-a" in error["message"]


def test_fault_match_limits_the_fault_to_matching_questions(serve):
    srv = serve({"member-a": {"answers": [{"content": "ok"}],
                              "faults": [{"kind": "503", "rate": 1.0, "match": "WALL"}]}})
    assert _chat(srv, "the great wall").status_code == 503
    assert _content(_chat(srv, "paris")) == "ok"


def test_malformed_json_and_wrong_schema_are_200s_with_bad_content(serve):
    srv = serve({"member-a": {"answers": [{"content": {"answer": "yes"}}],
                              "faults": [{"kind": "malformed_json", "attempts": [1]},
                                         {"kind": "wrong_schema", "attempts": [2]}]}})
    with pytest.raises(json.JSONDecodeError):
        json.loads(_content(_chat(srv, "q")))
    assert json.loads(_content(_chat(srv, "q"))) == {"unexpected": True}
    assert json.loads(_content(_chat(srv, "q"))) == {"answer": "yes"}
    assert [r.fault for r in srv.requests] == ["malformed_json", "wrong_schema", None]


def test_rate_faults_are_deterministic_for_a_seed(serve):
    models = {"member-a": {"answers": [{"content": "ok"}], "faults": [{"kind": "500", "rate": 0.5}]}}

    def sequence(seed: int) -> list[int]:
        srv = serve(models, seed=seed)
        return [_chat(srv, "q").status_code for _ in range(16)]

    first, again, other = sequence(7), sequence(7), sequence(8)
    assert first == again
    assert set(first) == {200, 500}
    assert other != first


def test_timeout_fault_makes_a_short_client_timeout_fire(serve):
    srv = serve({"member-a": {"timeout_sleep": 30, "answers": [{"content": "late"}],
                              "faults": [{"kind": "timeout", "attempts": [1]}]}})
    t0 = time.perf_counter()
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{srv.base_url}/chat/completions", timeout=0.5,
                   json={"model": "member-a", "messages": [{"role": "user", "content": "q"}]})
    assert time.perf_counter() - t0 < 1.5
    assert _content(_chat(srv, "q")) == "late"  # attempt 2 answers normally
    deadline = time.monotonic() + 1
    while len(srv.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    cancelled = [r for r in srv.requests if r.fault == "timeout"]
    assert [r.status for r in cancelled] == [499]  # the handler was cancelled quietly


def test_stop_does_not_wait_for_a_sleeping_handler():
    srv = _server({"member-a": {"timeout_sleep": 30, "answers": [{"content": "x"}],
                                "faults": [{"kind": "timeout", "rate": 1.0}]}}).start()

    async def hang() -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            await client.post(f"{srv.base_url}/chat/completions",
                              json={"model": "member-a", "messages": [{"role": "user", "content": "q"}]})

    async def scenario() -> None:
        task = asyncio.create_task(hang())
        while srv.stats()["in_flight"] == 0:
            await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        await asyncio.to_thread(srv.stop)
        assert time.perf_counter() - t0 < 1.5
        with pytest.raises(httpx.HTTPError):
            await task

    asyncio.run(scenario())


# ------------------------------------------------------------------------- request errors


def test_unknown_model_is_404_model_not_found(serve):
    srv = serve({"member-a": {"answers": [{"content": "ok"}]}})
    response = _chat(srv, "q", model="nobody")
    assert response.status_code == 404
    assert response.json()["error"] == {"message": "model 'nobody' is not in the script",
                                        "type": "invalid_request_error", "param": None,
                                        "code": "model_not_found"}


def test_stream_is_rejected_with_400(serve):
    srv = serve({"member-a": {"answers": [{"content": "ok"}]}})
    response = _chat(srv, "q", stream=True)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "streaming not supported by the scripted server"


def test_no_matching_answer_is_400_naming_model_and_question(serve):
    srv = serve({"member-a": {"answers": [{"match": "wall", "content": "ok"}]}})
    response = _chat(srv, "What is the capital of France?")
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "member-a" in message and "What is the capital" in message


def test_bad_request_bodies_are_400(serve):
    srv = serve({"member-a": {"answers": [{"content": "ok"}]}})
    url = f"{srv.base_url}/chat/completions"
    assert httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    assert httpx.post(url, json={"messages": []}).status_code == 400
    assert httpx.post(url, json={"model": "member-a", "messages": "hi"}).status_code == 400


# ------------------------------------------------------------------------- script loading


def test_load_script_toml_and_json(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('seed = 7\n[models."member-a"]\nlatency = 0.3\n'
                    '[[models."member-a".answers]]\nmatch = "Great Wall"\ncontent = {answer = "no"}\n'
                    '[[models."member-a".faults]]\nkind = "429"\nattempts = [1, 2]\nretry_after = 1\n')
    script = load_script(toml)
    assert script.seed == 7
    member = script.models["member-a"]
    assert member.answers[0].content == {"answer": "no"}
    assert member.faults[0].attempts == [1, 2]
    as_json = tmp_path / "s.json"
    as_json.write_text(script.model_dump_json())
    assert load_script(as_json) == script


@pytest.mark.parametrize(("text", "problem"), [
    ('[models."m"]\n[[models."m".answers]]\ncontent = "x"\n[[models."m".faults]]\nkind = "418"\nrate = 1\n',
     "models.m.faults.0.kind"),
    ('[models."m"]\n[[models."m".answers]]\ncontent = "x"\n[[models."m".faults]]\nkind = "500"\n',
     "exactly one of 'rate' or 'attempts'"),
    ('[models."m"]\n[[models."m".answers]]\ncontent = "x"\n[[models."m".faults]]\nkind = "500"\nrate = 1.5\n',
     "models.m.faults.0.rate"),
    ('[models."m"]\nlatncy = 1\n[[models."m".answers]]\ncontent = "x"\n', "models.m.latncy"),
    ('[models."m"]\nlatency = 1\n', "models.m: Value error, a model needs at least one answer"),
    ('seed = 1\n', "models"),
    ('[models."m"\n', "TOML syntax error"),
])
def test_invalid_script_raises_value_error_naming_file_and_problem(tmp_path, text, problem):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        load_script(path)
    assert str(path) in str(info.value)
    assert problem in str(info.value)


def test_missing_or_unsupported_script_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_script(tmp_path / "absent.toml")
    (tmp_path / "s.yaml").write_text("seed: 1")
    with pytest.raises(ValueError, match=r"\.toml or \.json"):
        ScriptedServer(tmp_path / "s.yaml")


def test_server_binds_only_loopback():
    with pytest.raises(ValueError, match="loopback"):
        ScriptedServer({"models": {"m": {"answers": [{"content": "x"}]}}}, host="0.0.0.0")


async def test_async_context_manager_serves_on_the_running_loop():
    async with ScriptedServer({"models": {"m": {"answers": [{"content": "async"}]}}}) as srv:
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{srv.base_url}/chat/completions",
                                         json={"model": "m", "messages": [{"role": "user", "content": "q"}]})
    assert response.json()["choices"][0]["message"]["content"] == "async"


# ------------------------------------------------------------------------- through litellm


@pytest.fixture(scope="session")
def litellm():
    # Without this, importing litellm tries to fetch the model cost map from the network.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm

    return litellm


async def test_litellm_acompletion_end_to_end(serve, litellm):
    srv = serve({"member-a": {"prompt_tokens": 12, "completion_tokens": 3,
                              "answers": [{"match": "great wall", "content": {"answer": "no"}}],
                              "faults": [{"kind": "429", "attempts": [1], "retry_after": 0}]}})
    kwargs = dict(model="openai/member-a", api_base=srv.base_url, api_key="x", max_retries=0,
                  messages=[{"role": "user", "content": "Is the Great Wall visible from space?"}])
    with pytest.raises(litellm.RateLimitError):
        await litellm.acompletion(**kwargs)
    response = await litellm.acompletion(**kwargs)
    assert json.loads(response.choices[0].message.content) == {"answer": "no"}
    assert response.usage.prompt_tokens == 12 and response.usage.completion_tokens == 3
    assert response.id == srv.requests[-1].request_id
    with pytest.raises(litellm.NotFoundError):
        await litellm.acompletion(**{**kwargs, "model": "openai/nobody"})


# ------------------------------------------------------------------------- command line


def _cli(*args: str, **popen: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "council.testing.server", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_cli_serves_a_script_until_terminated(tmp_path):
    script = tmp_path / "f.toml"
    script.write_text('[models."member-a"]\n[[models."member-a".answers]]\ncontent = "from the cli"\n')
    proc = _cli("--script", str(script), "--port", "0")
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:") and line.endswith("/v1")
        base_url = line.removeprefix("listening on ")
        response = httpx.post(f"{base_url}/chat/completions", timeout=5,
                              json={"model": "member-a", "messages": [{"role": "user", "content": "q"}]})
        assert response.json()["choices"][0]["message"]["content"] == "from the cli"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert out == "" and err == ""


def test_cli_bad_script_exits_2_with_one_error_line(tmp_path):
    script = tmp_path / "bad.toml"
    script.write_text('[models."m"]\nlatency = -1\n')
    proc = _cli("--script", str(script))
    out, err = proc.communicate(timeout=5)
    assert proc.returncode == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and "bad.toml" in lines[0] and "latency" in lines[0]
    assert "Traceback" not in err


def test_cli_writes_a_config_for_the_example_or_a_script_once_listening(tmp_path):
    import tomllib

    from council.config.settings import load_config

    proc = _cli("--example", "--write-config", str(tmp_path / "demo.toml"))
    try:
        base_url = proc.stdout.readline().strip().removeprefix("listening on ")
        cfg = load_config(tmp_path / "demo.toml")  # written before the line was printed
        assert {e.name for e in cfg.models} == {"atlas", "borealis", "cirrus", "dune", "judge"}
        assert {e.api_base for e in cfg.models} == {base_url}
        assert cfg.policies["adjudication"].allowed_models == ("judge",)
        assert tomllib.loads((tmp_path / "demo.toml").read_text())["database"] == "demo.db"  # next to the config
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    script = tmp_path / "s.json"
    script.write_text('{"models": {"a": {"answers": [{"content": "x"}]}, "b": {"answers": [{"content": "y"}]}}}')
    proc = _cli("--script", str(script), "--write-config", str(tmp_path / "s.toml"), "--adjudicator", "b")
    try:
        proc.stdout.readline()
        cfg = load_config(tmp_path / "s.toml")
        assert cfg.policies["research"].allowed_models == ("a",) and cfg.policies["research"].panel_size == 1
        assert cfg.policies["adjudication"].allowed_models == ("b",)
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    for args, message in (
        (["--script", str(script), "--write-config", str(tmp_path / "x.toml")], "needs --adjudicator MODEL"),
        (["--script", str(script), "--write-config", str(tmp_path / "x.toml"), "--adjudicator", "zz"],
         "the adjudicator 'zz' is not a model of the script (a, b)"),
    ):
        proc = _cli(*args)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2 and message in err and out == "" and "Traceback" not in err
    assert not (tmp_path / "x.toml").exists()
