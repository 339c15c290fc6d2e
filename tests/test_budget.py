"""Tests of council.budget: ceilings enforced by reservation, so parallel calls cannot overspend together."""

from __future__ import annotations

import asyncio
import threading

import pytest

from council.calls.budget import Budget, Reservation
from council.errors import BudgetExceeded
from council.config.catalog import ModelEntry, price_of
from council.calls.members import CallContext, run_chain
from council.calls.answers import AnswerDraft
from council.config.policy import TaskPolicy
from council.calls.prompts import RenderedPrompt
from council.config.qualify import estimate_tokens
from council.calls.records import CallRecord


def test_a_budget_must_be_positive():
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="positive"):
            Budget(bad)


def test_reservations_refuse_overspend():
    b = Budget(1.0)
    first = b.reserve(0.6)
    assert first.amount == 0.6
    with pytest.raises(BudgetExceeded):
        b.reserve(0.5)  # 0.6 + 0.5 > 1.0
    assert b.committed_usd == pytest.approx(0.6)
    second = b.reserve(0.4)  # exactly up to the limit is allowed
    assert second.amount == 0.4
    assert b.committed_usd == pytest.approx(1.0)
    with pytest.raises(BudgetExceeded):
        b.reserve(0.0001)
    assert b.spent_usd == 0.0  # nothing is spent until settled


def test_settle_with_actual_cost_frees_the_rest_of_the_hold():
    b = Budget(1.0)
    r = b.reserve(0.9)
    with pytest.raises(BudgetExceeded):
        b.reserve(0.2)
    b.settle(r, 0.1)
    assert b.spent_usd == pytest.approx(0.1)
    assert b.committed_usd == pytest.approx(0.1)
    b.reserve(0.9)  # 0.1 spent + 0.9 held = 1.0: allowed
    with pytest.raises(BudgetExceeded):
        b.reserve(0.01)


def test_settle_with_unknown_cost_keeps_the_worst_case_charged():
    b = Budget(1.0)
    r = b.reserve(0.7)
    b.settle(r, None)
    assert b.spent_usd == pytest.approx(0.7)
    assert b.committed_usd == pytest.approx(0.7)
    with pytest.raises(BudgetExceeded):
        b.reserve(0.31)
    assert isinstance(b.reserve(0.3), Reservation)


def test_settling_twice_charges_once():
    b = Budget(1.0)
    r = b.reserve(0.5)
    assert r is not None
    b.settle(r, 0.2)
    b.settle(r, 0.2)
    b.settle(r, None)
    assert r.settled is True
    assert b.spent_usd == pytest.approx(0.2)
    assert b.committed_usd == pytest.approx(0.2)


def test_actual_cost_above_the_hold_is_still_charged():
    # A provider may bill more than the estimate; the budget records what was really spent.
    b = Budget(1.0)
    r = b.reserve(0.1)
    assert r is not None
    b.settle(r, 0.3)
    assert b.spent_usd == pytest.approx(0.3)
    with pytest.raises(BudgetExceeded):
        b.reserve(0.71)
    assert isinstance(b.reserve(0.7), Reservation)


def test_many_threads_reserving_at_once_never_exceed_the_limit():
    b = Budget(1.0)
    n_threads, per_thread = 16, 50
    start = threading.Barrier(n_threads)
    granted: list[int] = [0] * n_threads
    over: list[float] = []

    def work(i: int) -> None:
        start.wait()
        for _ in range(per_thread):
            try:
                b.reserve(0.01)
            except BudgetExceeded:
                pass
            else:
                granted[i] += 1
            seen = b.committed_usd
            if seen > 1.0 + 1e-9:
                over.append(seen)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert over == []
    assert sum(granted) == 100  # 800 tries, exactly 1.0 / 0.01 granted
    assert b.committed_usd == pytest.approx(1.0)


def test_threads_reserving_and_settling_keep_spent_within_the_limit():
    b = Budget(2.0)
    n_threads = 12
    start = threading.Barrier(n_threads)
    charged: list[float] = []
    over: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        start.wait()
        for k in range(40):
            try:
                r = b.reserve(0.05)
            except BudgetExceeded:
                continue
            actual = 0.02 if k % 2 else None  # half known and cheaper, half unknown (worst case kept)
            b.settle(r, actual)
            with lock:
                charged.append(0.05 if actual is None else actual)
            seen = b.committed_usd
            if seen > 2.0 + 1e-9:
                over.append(seen)  # an assert here would die with the thread, unseen

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert over == []
    # At the last refusal spent + held > 1.95 with at most 11 holds of 0.05 out: the budget was really used.
    assert b.spent_usd > 1.4
    assert b.spent_usd == pytest.approx(sum(charged))
    assert b.spent_usd <= 2.0 + 1e-9
    assert b.committed_usd == pytest.approx(b.spent_usd)  # nothing left held
    with pytest.raises(BudgetExceeded):
        b.reserve(2.0 - b.spent_usd + 0.01)


async def test_many_asyncio_tasks_holding_across_awaits_never_exceed_the_limit():
    b = Budget(1.0)
    peak = 0.0
    granted = 0

    async def call(i: int) -> None:
        nonlocal peak, granted
        try:
            r = b.reserve(0.15)
        except BudgetExceeded:
            return
        granted += 1
        peak = max(peak, b.committed_usd)
        await asyncio.sleep(0.01)  # every task holds its reservation while the others try
        b.settle(r, 0.05)

    await asyncio.gather(*(call(i) for i in range(40)))
    assert granted == 6  # 6 * 0.15 = 0.9; a 7th would hold 1.05
    assert peak == pytest.approx(0.9)
    assert b.spent_usd == pytest.approx(6 * 0.05)


async def test_parallel_model_calls_sharing_a_budget_cannot_overspend_together(scripted):
    """Eight members call a priced model at once through the real gateway; the budget admits only what fits."""
    # Prompt tokens are left to the server's estimate (chars / 4, as council's own); completion is scripted.
    srv = scripted({"models": {"m": {"latency": 0.2, "completion_tokens": 100, "answers": [
        {"content": {"answer": "No.", "claims": [{"text": "Not visible.", "confidence": 0.9}]}}]}}})
    entry = ModelEntry(name="m", model="openai/m", api_base=srv.base_url, provider="prov", quality=50,
                       input_usd_per_mtok=10.0, output_usd_per_mtok=20.0, capabilities=frozenset({"text"}))
    pol = TaskPolicy(name="research", max_output_tokens=500, timeout_s=10.0, max_call_usd=None)
    prompt = RenderedPrompt(template_name="member.j2", template_hash="0" * 12, system="Answer in JSON.",
                            user="Question: Is the Great Wall visible from orbit?")
    worst = price_of(entry, estimate_tokens(prompt.system + prompt.user), pol.max_output_tokens)
    assert worst is not None
    budget = Budget(worst * 3.5)  # room for three worst cases held at once, not four
    records: list[CallRecord] = []

    async def member(label: str):
        ctx = CallContext(run_id="run-budget", node="member", member_label=label, policy=pol, prompt=prompt,
                          sink=records.append, budget=budget)
        return await run_chain(ctx, [entry], AnswerDraft)

    outcomes = await asyncio.gather(*(member(label) for label in "ABCDEFGH"))
    answered = [o for o in outcomes if o.value is not None]
    skipped = [r for r in records if r.status == "skipped"]
    assert len(answered) == 3
    assert len(skipped) == 5
    assert {r.error_kind for r in skipped} == {"budget"}
    assert srv.stats()["requests"] == {"m": 3}
    assert srv.max_in_flight == 3  # the three admitted calls really overlapped
    spent = sum(r.cost_usd for r in records)
    prompt_tokens = estimate_tokens(prompt.system + prompt.user)
    assert [r.prompt_tokens for r in records if r.status == "ok"] == [prompt_tokens] * 3
    assert spent == pytest.approx(3 * (prompt_tokens * 10.0 + 100 * 20.0) / 1e6)
    assert budget.spent_usd == pytest.approx(spent)
    assert budget.spent_usd <= budget.limit_usd
