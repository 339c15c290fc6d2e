"""The demonstration panel the notebooks run on: its workload goes right and wrong exactly as documented.

The notebooks only check that they run and draw; what they show is pinned down here, over loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from council import Council, RunResult
from council.testing import ScriptedServer
from council.testing.demo import (
    CANBERRA,
    DEMO_SOURCE,
    DEMO_WORKLOAD,
    EVEREST,
    GREAT_WALL,
    MIDDLEMARCH,
    PLUTO,
    demo_config,
    demo_panel,
    demo_script,
)


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunResult]]:
    """One pass over the workload on one council (so reliabilities are learned as it goes)."""
    srv, config = demo_panel(str(tmp_path_factory.mktemp("demo") / "demo.db"))
    try:
        council = Council(config)
        out = {}
        for task, question in DEMO_WORKLOAD:
            out[question] = council.check(question) if task == "check" else council.ask(question)
        yield out
    finally:
        srv.stop()


def test_every_run_has_a_verdict(workload: dict[str, RunResult]) -> None:
    assert len(workload) == len(DEMO_WORKLOAD) == 7
    for question, result in workload.items():
        assert result.verdict is not None and result.verdict.decided_by != "none", question
        assert result.total_cost_usd > 0


def test_fallback_when_a_member_always_fails(workload: dict[str, RunResult]) -> None:
    calls = [(c.member_label, c.model, c.status, c.error_kind) for c in workload[MIDDLEMARCH].calls if c.member_label == "B"]
    assert calls == [("B", "borealis", "failed", "server_error"), ("B", "dune", "ok", None)]
    assert not workload[MIDDLEMARCH].verdict.degraded


def test_degraded_when_first_choice_and_spare_fail(workload: dict[str, RunResult]) -> None:
    v = workload[CANBERRA].verdict
    assert v.degraded and v.quorum_met and v.members_answered == 2
    assert [f.member_label for f in workload[CANBERRA].failures] == ["C"]
    assert v.answer == "Canberra is the capital of Australia."


def test_pluto_has_a_timeout_and_a_repaired_answer(workload: dict[str, RunResult]) -> None:
    calls = {(c.member_label, c.model, c.status, c.error_kind) for c in workload[PLUTO].calls}
    assert ("B", "borealis", "failed", "timeout") in calls
    assert ("B", "dune", "ok", None) in calls
    assert ("C", "cirrus", "invalid", "invalid_answer") in calls
    assert ("C", "cirrus", "ok", None) in calls
    assert workload[PLUTO].verdict.label == "REFUTED"


def test_everest_dissent_is_rejected(workload: dict[str, RunResult]) -> None:
    r = workload[EVEREST]
    assert r.verdict.label == "SUPPORTED"
    dissent = next(c for c in r.claims if c.model == "cirrus")
    assert dissent.claim_id in r.verdict.contradicted


@pytest.mark.parametrize("attempt", range(3))
def test_judge_rules_right_whatever_the_shuffle(attempt: int, tmp_path: Path) -> None:
    """A fresh store each time (no learned reliability), so the vote cannot settle the dissent and the
    judge rules; the shuffled member order differs from run to run."""
    with ScriptedServer(demo_script()) as srv:
        result = Council(demo_config(srv.base_url, f"sqlite:///{tmp_path / 'wall.db'}")).ask(GREAT_WALL, sources=[DEMO_SOURCE])
    v = result.verdict
    assert v.decided_by == "adjudicator" and not v.degraded
    status = {c.model: k.status for k in result.clusters for c in result.claims if c.claim_id in k.claim_ids
              and c.text.startswith("The Great Wall is")}
    assert status == {"atlas": "accepted", "borealis": "accepted", "cirrus": "rejected"}
    verified = {c.model: [x.verified for x in c.citations] for c in result.claims if c.text.startswith("The Great Wall is")}
    assert verified == {"atlas": [True], "borealis": [True], "cirrus": [False]}


def test_demo_panel_defaults_to_a_fresh_temporary_database() -> None:
    srv, config = demo_panel()
    try:
        assert config["database"].startswith("sqlite:///") and "council-demo-" in config["database"]
        assert srv.base_url.startswith("http://127.0.0.1:")
        assert {m["api_base"] for m in config["models"].values()} == {srv.base_url}
    finally:
        srv.stop()
    srv2, config2 = demo_panel()
    srv2.stop()
    assert config2["database"] != config["database"]
