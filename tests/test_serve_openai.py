"""A council as an OpenAI model, driven by the official ``openai`` client against the running service."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
openai = pytest.importorskip("openai", reason="the openai client is not installed")

from conftest import GREAT_WALL, answer, panel_script  # noqa: E402
from serve_support import live  # noqa: E402,F401

from council.store.db import Store  # noqa: E402

TOKEN = "openai-client-token-0123456789"


def _client(srv: Any, key: str = "unused") -> Any:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0, timeout=120)


def _store(srv: Any) -> Store:
    import tomllib

    return Store(tomllib.loads(srv.config_path.read_text())["database"])


def test_models_are_the_recipes_and_policies(live: Any) -> None:
    srv = live()
    ids = [m.id for m in _client(srv).models.list()]
    assert "council/research" in ids and "council/fact_check" in ids and "council/council" in ids


def test_chat_completion_is_the_verdict_with_summed_usage_and_the_run_id(live: Any) -> None:
    srv = live()
    resp = _client(srv).chat.completions.create(model="council/research", messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": GREAT_WALL}])
    info = resp.model_extra["council"]
    run = _store(srv).load_run(info["run_id"])
    assert resp.choices[0].message.content == run.verdict.answer
    assert resp.choices[0].finish_reason == "stop" and resp.model == "council/research"
    assert resp.usage.prompt_tokens == sum(c.prompt_tokens for c in run.calls) > 0
    assert resp.usage.completion_tokens == sum(c.completion_tokens for c in run.calls) > 0
    assert info["cost_usd"] == pytest.approx(run.total_cost_usd) and run.total_cost_usd > 0
    assert run.question == GREAT_WALL and len(run.calls) == len(srv.scripted.requests) == 4


def test_streaming_sends_the_verdict_and_usage(live: Any) -> None:
    srv = live(keepalive_s=0.05)
    chunks = list(_client(srv).chat.completions.create(model="council/research", stream=True, stream_options={
        "include_usage": True}, messages=[{"role": "user", "content": GREAT_WALL}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    run_id = chunks[-1].model_extra["council"]["run_id"]
    run = _store(srv).load_run(run_id)
    assert text == run.verdict.answer
    assert chunks[-1].usage.total_tokens == sum(c.prompt_tokens + c.completion_tokens for c in run.calls)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_stream_keepalive_comments_come_before_the_verdict(live: Any) -> None:
    import httpx

    slow = panel_script(**{"m-b": {"latency": 0.6, "answers": [{"content": answer("No.", [
        ("It cannot be seen with the naked eye from low Earth orbit.", 0.85)])}]}})
    srv = live(slow, keepalive_s=0.1)
    lines = []
    with httpx.Client(timeout=120) as c, c.stream("POST", srv.url + "/v1/chat/completions", json={
            "model": "council/research", "stream": True, "messages": [{"role": "user", "content": GREAT_WALL}]}) as r:
        run_id = r.headers["x-council-run-id"]
        lines = [x for x in r.iter_lines() if x]
    comments = [i for i, x in enumerate(lines) if x.startswith(":")]
    content = [i for i, x in enumerate(lines) if '"content": "No' in x]
    assert comments and content and max(comments) < content[0]
    assert f"council run {run_id}" in lines[comments[0]]
    assert lines[-1] == "data: [DONE]"


def test_fact_check_model_answers_with_the_label(live: Any) -> None:
    from conftest import ruling

    def member(label: str) -> dict[str, Any]:
        return {"latency": 0.05, "answers": [{"content": answer(f"{label}.", [("Paris is in France.", 0.9)], label=label)}]}

    script = panel_script(**{"m-a": member("SUPPORTED"), "m-b": member("SUPPORTED"), "m-c": member("SUPPORTED"),
                             "judge": {"answers": [{"content": ruling("Supported.", ["C1"], label="SUPPORTED")}]}})
    srv = live(script)
    resp = _client(srv).chat.completions.create(model="council/fact_check", messages=[
        {"role": "user", "content": "The Eiffel Tower is in Paris."}])
    run = _store(srv).load_run(resp.model_extra["council"]["run_id"])
    assert run.task == "check" and run.verdict.label == "SUPPORTED"
    assert resp.choices[0].message.content.startswith("SUPPORTED")
    assert resp.model_extra["council"]["label"] == "SUPPORTED"


def test_errors_reach_the_client_as_openai_errors(live: Any) -> None:
    srv = live(token=TOKEN)
    with pytest.raises(openai.AuthenticationError):
        _client(srv, "wrong-key").models.list()
    client = _client(srv, TOKEN)
    with pytest.raises(openai.BadRequestError, match="council/research"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="no user message"):
        client.chat.completions.create(model="council/research", messages=[{"role": "system", "content": "hi"}])
    assert not srv.scripted.requests


def test_a_council_that_reaches_no_verdict_is_an_error_not_an_answer(live: Any) -> None:
    down = {"latency": 0.01, "faults": [{"kind": "500", "rate": 1.0}], "answers": [{"content": "x"}]}
    srv = live(panel_script(**{"m-a": down, "m-b": down, "m-c": down, "m-spare": down}))
    with pytest.raises(openai.APIStatusError) as err:
        _client(srv).chat.completions.create(model="council/research", messages=[{"role": "user", "content": GREAT_WALL}])
    assert err.value.status_code == 502 and "no verdict" in str(err.value)
    run_id = err.value.response.headers["x-council-run-id"]
    run = _store(srv).load_run(run_id)
    assert run.verdict.decided_by == "none" and run.verdict.degraded
    assert len(run.calls) == len(srv.scripted.requests) > 0 and all(c.status == "failed" for c in run.calls)
