"""Tests of council.members.run_chain: one call record per attempt down a member's fallback chain.

Every attempt is a real litellm call over loopback HTTP to the scripted server.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from council.calls import members
from council.calls.answers import AnswerDraft
from council.calls.budget import Budget
from council.config.catalog import ModelEntry, price_of
from council.calls.members import CallContext, ChainOutcome, call_id_for, parse_json_text, run_chain
from council.config.policy import TaskPolicy
from council.calls.prompts import RenderedPrompt
from council.config.qualify import estimate_tokens
from council.calls.records import CallRecord

QUESTION = "Is the Great Wall of China visible from low Earth orbit?"
GOOD = {"answer": "No.", "claims": [{"text": "It is not visible to the naked eye.", "confidence": 0.9}]}
PROMPT = RenderedPrompt(template_name="member.j2", template_hash="0123456789ab",
                        system="Reply with one JSON object: {answer, claims}.", user=f"Question: {QUESTION}")
PRICES = {"m-a": (1.0, 2.0), "m-b": (0.5, 1.0), "m-c": (0.1, 0.2)}


def model_script(content: Any = GOOD, faults: list[dict[str, Any]] | None = None, **kw: Any) -> dict[str, Any]:
    return {"latency": 0.01, "prompt_tokens": 200, "completion_tokens": 50,
            "answers": [{"content": content}], "faults": faults or [], **kw}


def chain_of(srv, *names: str, **overrides: dict[str, Any]) -> list[ModelEntry]:
    out = []
    for n in names:
        pin, pout = PRICES.get(n, (1.0, 1.0))
        fields: dict[str, Any] = dict(name=n, model=f"openai/{n}", api_base=srv.base_url, provider=f"prov-{n}",
                                      capabilities=frozenset({"text"}), input_usd_per_mtok=pin,
                                      output_usd_per_mtok=pout)
        fields.update(overrides.get(n, {}))
        out.append(ModelEntry(**fields))
    return out


def context(sink: list[CallRecord], budget: Budget | None = None, label: str = "A", **policy: Any) -> CallContext:
    pol = TaskPolicy(name="research", **{"timeout_s": 5.0, "max_output_tokens": 300, **policy})
    return CallContext(run_id="run-members", node="member", member_label=label, policy=pol, prompt=PROMPT,
                       sink=sink.append, budget=budget)


def assert_attempts(records: list[CallRecord]) -> None:
    assert [r.attempt for r in records] == list(range(1, len(records) + 1))
    assert len({r.call_id for r in records}) == len(records)
    for r in records:
        assert r.call_id == call_id_for("run-members", "member", r.member_label, r.attempt)
        assert r.run_id == "run-members" and r.node == "member"
        assert r.template_name == "member.j2" and r.template_hash == "0123456789ab"
        assert r.finished_at >= r.started_at


def catalog_cost(chain: list[ModelEntry], rec: CallRecord) -> float:
    entry = next(e for e in chain if e.name == rec.model)
    cost = price_of(entry, rec.prompt_tokens, rec.completion_tokens)
    assert cost is not None
    return cost


# ------------------------------------------------------------------------------------------ success


async def test_first_model_answers_with_one_ok_record(scripted):
    srv = scripted({"models": {"m-a": model_script(), "m-b": model_script()}})
    records: list[CallRecord] = []
    ctx = context(records)
    chain = chain_of(srv, "m-a", "m-b")
    out = await run_chain(ctx, chain, AnswerDraft)
    assert isinstance(out, ChainOutcome)
    assert out.value == AnswerDraft.model_validate(GOOD)
    assert out.model == chain[0]
    assert out.error_kind is None and out.reason is None
    assert out.records == records
    [rec] = records
    assert out.call_id == rec.call_id
    assert (rec.status, rec.model, rec.model_requested, rec.provider) == ("ok", "m-a", "m-a", "prov-m-a")
    assert (rec.prompt_tokens, rec.completion_tokens) == (200, 50)
    assert rec.cost_usd == pytest.approx((200 * 1.0 + 50 * 2.0) / 1e6)
    assert rec.cost_source == "catalog"
    assert rec.policy_name == "research" and rec.policy_version == ctx.policy.version
    assert rec.request_id == srv.requests[0].request_id
    assert rec.model_reported == "m-a"
    assert srv.stats()["requests"] == {"m-a": 1}
    assert_attempts(records)


# ------------------------------------------------------------------------------------------ transient


async def test_429_then_success_on_the_same_model_honours_retry_after(scripted, monkeypatch: pytest.MonkeyPatch):
    waits: list[float] = []

    async def recording_sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    monkeypatch.setattr(members, "asyncio", SimpleNamespace(sleep=recording_sleep))
    srv = scripted({"models": {
        "m-a": model_script(faults=[{"kind": "429", "attempts": [1], "retry_after": 1.5}]),
        "m-b": model_script(),
    }})
    records: list[CallRecord] = []
    chain = chain_of(srv, "m-a", "m-b")
    out = await run_chain(context(records, attempts_per_model=2), chain, AnswerDraft)
    assert out.value is not None and out.model == chain[0]
    assert [(r.model, r.status, r.error_kind) for r in records] == [("m-a", "failed", "rate_limit"), ("m-a", "ok", None)]
    assert waits == [1.5]  # the Retry-After header, not a default backoff
    failed = records[0]
    assert (failed.cost_usd, failed.cost_source, failed.prompt_tokens) == (0.0, "none", 0)
    assert "rate limit" in (failed.error_message or "")
    assert srv.stats()["requests"] == {"m-a": 2}
    assert_attempts(records)


async def test_transient_error_falls_back_at_once_with_one_attempt_per_model(scripted):
    srv = scripted({"models": {"m-a": model_script(faults=[{"kind": "503", "rate": 1.0}]), "m-b": model_script()}})
    records: list[CallRecord] = []
    chain = chain_of(srv, "m-a", "m-b")
    out = await run_chain(context(records, attempts_per_model=1), chain, AnswerDraft)
    assert out.model == chain[1]
    assert [(r.model, r.status, r.error_kind) for r in records] == [("m-a", "failed", "server_error"), ("m-b", "ok", None)]
    assert all(r.model_requested == "m-a" for r in records)
    assert out.call_id == records[1].call_id
    assert_attempts(records)


async def test_permanent_error_is_never_retried_on_the_same_model(scripted):
    srv = scripted({"models": {"m-b": model_script()}})  # m-a is not in the script: 404
    records: list[CallRecord] = []
    chain = chain_of(srv, "m-a", "m-b")
    out = await run_chain(context(records, attempts_per_model=3), chain, AnswerDraft)
    assert out.model == chain[1]
    assert [(r.model, r.status, r.error_kind) for r in records] == [("m-a", "failed", "not_found"), ("m-b", "ok", None)]
    assert_attempts(records)


async def test_timeout_record_has_unknown_cost_and_keeps_the_worst_case_charged(scripted):
    srv = scripted({"models": {"m-a": model_script(faults=[{"kind": "timeout", "attempts": [1]}], timeout_sleep=10),
                               "m-b": model_script()}})
    records: list[CallRecord] = []
    budget = Budget(1.0)
    chain = chain_of(srv, "m-a", "m-b")
    out = await run_chain(context(records, budget=budget, timeout_s=0.3), chain, AnswerDraft)
    assert out.model == chain[1]
    timed_out, ok = records
    assert (timed_out.status, timed_out.error_kind, timed_out.cost_source) == ("failed", "timeout", "unknown")
    worst_a = price_of(chain[0], estimate_tokens(PROMPT.system + PROMPT.user), 300)
    assert worst_a is not None
    # The provider may bill a request it timed out on: the budget keeps m-a's worst case, plus m-b's real cost.
    assert budget.spent_usd == pytest.approx(worst_a + ok.cost_usd)
    assert budget.committed_usd == pytest.approx(budget.spent_usd)


# ------------------------------------------------------------------------------------------ invalid


async def test_invalid_json_is_billed_then_retried_with_the_error_shown(scripted):
    srv = scripted({"models": {"m-a": model_script(faults=[{"kind": "malformed_json", "attempts": [1]}])}})
    records: list[CallRecord] = []
    chain = chain_of(srv, "m-a")
    out = await run_chain(context(records, answer_retries=1), chain, AnswerDraft)
    assert out.value == AnswerDraft.model_validate(GOOD)
    invalid, ok = records
    assert (invalid.status, invalid.error_kind) == ("invalid", "invalid_answer")
    assert invalid.error_message and invalid.error_message.startswith("not valid JSON")
    assert (invalid.prompt_tokens, invalid.completion_tokens) == (200, 50)
    assert invalid.cost_usd == pytest.approx((200 * 1.0 + 50 * 2.0) / 1e6)  # an invalid answer is still paid for
    assert invalid.cost_source == "catalog"
    assert invalid.request_id == srv.requests[0].request_id
    assert ok.status == "ok" and ok.model == "m-a"
    # The retry told the model what was wrong.
    retry_question = srv.requests[1].question
    assert retry_question.startswith("Your reply not valid JSON")
    assert_attempts(records)


async def test_wrong_schema_after_all_retries_falls_to_the_next_model(scripted):
    srv = scripted({"models": {"m-a": model_script(faults=[{"kind": "wrong_schema", "rate": 1.0}]),
                               "m-b": model_script()}})
    records: list[CallRecord] = []
    chain = chain_of(srv, "m-a", "m-b")
    out = await run_chain(context(records, answer_retries=2), chain, AnswerDraft)
    assert out.model == chain[1]
    assert out.value == AnswerDraft.model_validate(GOOD)
    assert [(r.model, r.status) for r in records] == [("m-a", "invalid")] * 3 + [("m-b", "ok")]
    for r in records[:3]:
        assert r.error_message and r.error_message.startswith("does not match the schema")
        assert r.cost_usd == pytest.approx((200 * 1.0 + 50 * 2.0) / 1e6)
    assert srv.stats()["requests"] == {"m-a": 3, "m-b": 1}
    assert_attempts(records)


async def test_answer_in_a_code_fence_is_accepted(scripted):
    fenced = '```json\n{"answer": "No.", "claims": [{"text": "Not visible.", "confidence": 0.8}]}\n```'
    srv = scripted({"models": {"m-a": model_script(content=fenced)}})
    records: list[CallRecord] = []
    out = await run_chain(context(records), chain_of(srv, "m-a"), AnswerDraft)
    assert out.value is not None and out.value.claims[0].text == "Not visible."
    assert out.raw_text == fenced
    assert [r.status for r in records] == ["ok"]


def test_parse_json_text_tolerates_fences_and_words_around():
    assert parse_json_text('Sure! {"a": 1} Hope that helps.') == {"a": 1}
    assert parse_json_text('```\n{"a": [1, 2]}\n```') == {"a": [1, 2]}
    with pytest.raises(ValueError):
        parse_json_text('{"answer": "unterminated')


# ------------------------------------------------------------------------------------------ ceilings


async def test_per_call_price_ceiling_skips_the_model_without_calling_it(scripted):
    srv = scripted({"models": {"m-a": model_script(), "m-b": model_script()}})
    records: list[CallRecord] = []
    chain = chain_of(srv, "m-a", "m-b", **{"m-a": {"input_usd_per_mtok": 100.0, "output_usd_per_mtok": 400.0}})
    # m-a worst case: ~20 prompt tokens * $100 + 300 * $400 per Mtok = about $0.12; m-b's is about $0.0003.
    out = await run_chain(context(records, max_call_usd=0.01), chain, AnswerDraft)
    assert out.model == chain[1]
    skipped, ok = records
    assert (skipped.status, skipped.error_kind, skipped.model) == ("skipped", "price_ceiling", "m-a")
    assert (skipped.cost_usd, skipped.cost_source, skipped.prompt_tokens) == (0.0, "none", 0)
    assert "per-call ceiling $0.01" in (skipped.error_message or "")
    assert ok.status == "ok" and ok.model == "m-b"
    assert srv.stats()["requests"] == {"m-b": 1}  # m-a was never sent a request
    assert_attempts(records)


async def test_exhausted_budget_skips_the_model_and_the_next_one_serves(scripted):
    srv = scripted({"models": {"m-a": model_script(), "m-b": model_script()}})
    records: list[CallRecord] = []
    chain = chain_of(srv, "m-a", "m-b", **{"m-a": {"input_usd_per_mtok": 50.0, "output_usd_per_mtok": 100.0}})
    budget = Budget(0.01)  # m-a's worst case (~$0.03) does not fit; m-b's (~$0.0003) does
    out = await run_chain(context(records, budget=budget), chain, AnswerDraft)
    assert out.model == chain[1]
    skipped, ok = records
    assert (skipped.status, skipped.error_kind, skipped.model) == ("skipped", "budget", "m-a")
    assert "would exceed the run budget" in (skipped.error_message or "")
    assert skipped.cost_usd == 0.0
    assert ok.status == "ok" and ok.model == "m-b"
    assert budget.spent_usd == pytest.approx(ok.cost_usd)
    assert budget.committed_usd == pytest.approx(ok.cost_usd)  # nothing left held
    assert srv.stats()["requests"] == {"m-b": 1}
    assert_attempts(records)


# ------------------------------------------------------------------------------------------ failure


async def test_whole_chain_failing_gives_a_typed_outcome(scripted):
    srv = scripted({"models": {
        "m-a": model_script(faults=[{"kind": "500", "rate": 1.0}]),
        "m-b": model_script(faults=[{"kind": "wrong_schema", "rate": 1.0}]),
    }})
    records: list[CallRecord] = []
    chain = chain_of(srv, "m-a", "m-b", "m-c")  # m-c is not served at all: 404
    out = await run_chain(context(records, answer_retries=1, attempts_per_model=1), chain, AnswerDraft)
    assert out.value is None and out.model is None and out.call_id is None
    assert out.error_kind == "not_found"
    assert out.reason is not None and out.reason.startswith("m-c: ")
    assert out.raw_text == '{"unexpected": true}'  # the last invalid answer, kept for inspection
    assert [(r.model, r.status, r.error_kind) for r in records] == [
        ("m-a", "failed", "server_error"),
        ("m-b", "invalid", "invalid_answer"),
        ("m-b", "invalid", "invalid_answer"),
        ("m-c", "failed", "not_found"),
    ]
    assert out.records == records
    assert_attempts(records)


async def test_last_error_is_reported_when_every_model_is_skipped(scripted):
    srv = scripted({"models": {"m-a": model_script()}})
    records: list[CallRecord] = []
    chain = chain_of(srv, "m-a", "m-b")
    out = await run_chain(context(records, max_call_usd=1e-9), chain, AnswerDraft)
    assert out.value is None
    assert out.error_kind == "price_ceiling"
    assert out.reason is not None and out.reason.startswith("m-b: worst-case cost")
    assert [r.status for r in records] == ["skipped", "skipped"]
    assert srv.stats()["total_requests"] == 0


async def test_fallback_none_stops_after_the_first_model(scripted):
    srv = scripted({"models": {"m-a": model_script(faults=[{"kind": "500", "rate": 1.0}]), "m-b": model_script()}})
    records: list[CallRecord] = []
    out = await run_chain(context(records, fallback="none"), chain_of(srv, "m-a", "m-b"), AnswerDraft)
    assert out.value is None and out.error_kind == "server_error"
    assert [r.model for r in records] == ["m-a"]
    assert srv.stats()["requests"] == {"m-a": 1}


# ------------------------------------------------------------------------------------------ billing


async def test_cost_is_always_charged_at_the_price_of_the_model_that_served(scripted):
    srv = scripted({"models": {
        "m-a": model_script(faults=[{"kind": "malformed_json", "rate": 1.0}]),
        "m-b": model_script(faults=[{"kind": "wrong_schema", "attempts": [1]}], prompt_tokens=300,
                            completion_tokens=70),
    }})
    records: list[CallRecord] = []
    chain = chain_of(srv, "m-a", "m-b", "m-c")
    out = await run_chain(context(records, answer_retries=1), chain, AnswerDraft)
    assert out.model == chain[1]
    assert [(r.model, r.status) for r in records] == [("m-a", "invalid"), ("m-a", "invalid"), ("m-b", "invalid"),
                                                      ("m-b", "ok")]
    for r in records:
        assert r.model_requested == "m-a"
        assert r.cost_usd == pytest.approx(catalog_cost(chain, r))
    assert records[0].cost_usd == pytest.approx((200 * 1.0 + 50 * 2.0) / 1e6)
    assert records[3].cost_usd == pytest.approx((300 * 0.5 + 70 * 1.0) / 1e6)
    assert records[3].provider == "prov-m-b"
    # Charging the first choice's price instead would have been different: the check can fail.
    assert records[3].cost_usd != pytest.approx(price_of(chain[0], 300, 70))


async def test_local_fallback_is_billed_zero_with_source_local(scripted):
    srv = scripted({"models": {"m-a": model_script(faults=[{"kind": "500", "rate": 1.0}]), "m-l": model_script()}})
    records: list[CallRecord] = []
    chain = chain_of(srv, "m-a", "m-l", **{"m-l": {"local": True, "input_usd_per_mtok": 5.0}})
    out = await run_chain(context(records), chain, AnswerDraft)
    assert out.model == chain[1]
    assert (records[1].cost_usd, records[1].cost_source) == (0.0, "local")
    assert (records[1].prompt_tokens, records[1].completion_tokens) == (200, 50)


async def test_parallel_members_get_distinct_call_ids(scripted):
    srv = scripted({"models": {"m-a": model_script(latency=0.1)}})
    records: list[CallRecord] = []
    chain = chain_of(srv, "m-a")
    outs = await asyncio.gather(*(run_chain(context(records, label=lab), chain, AnswerDraft) for lab in "ABC"))
    assert all(o.value is not None for o in outs)
    assert len({r.call_id for r in records}) == 3
    assert sorted(r.member_label for r in records) == ["A", "B", "C"]
    assert srv.max_in_flight == 3
