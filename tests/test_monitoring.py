"""Monitoring numbers on a store with known runs: exact per-model reliability, failure and fallback rates,
costs and latency percentiles; windows, periods and the model filter; the DataFrames; ``council stats``.

The store is filled through the Store API with hand-made records (no model is called), so every expected
number below can be worked out by hand from the three runs described in ``known_store``. It is checked on
SQLite and, when a server is reachable, on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
import pytest
from sqlalchemy import create_engine, text

from council import Store
from council.calls.answers import Claim, MemberAnswer, MemberFailure
from council.config.catalog import ModelEntry
from council.deliberation.clusters import ClaimCluster
from council.pipeline.engine import RunResult
from council.errors import InputError
from council.provenance.monitoring import ModelStats, model_stats, model_stats_frame, parse_when, percentile, stats_report
from council.config.policy import TaskPolicy
from council.calls.records import CallRecord
from council.deliberation.verdict import Verdict

ROOT = Path(__file__).resolve().parents[1]
PG_HOST = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
MEMBER_POLICY = TaskPolicy(name="fact_check", panel_size=3, quorum=2)
ADJ_POLICY = TaskPolicy(name="adjudication", panel_size=1, quorum=1)
MODELS = [ModelEntry(name=m, model=f"openai/{m}", provider=f"p-{m}", input_usd_per_mtok=1.0, output_usd_per_mtok=2.0)
          for m in ("m-a", "m-b", "m-c", "judge")]


# ------------------------------------------------------------------------------------------ the known store


class Maker:
    """Writes one run's records with terse calls; ids are derived from the run id."""

    def __init__(self, store: Store, run_id: str, task: str, created_at: datetime) -> None:
        self.s, self.run_id, self.task, self.t = store, run_id, task, created_at
        self.n = 0
        store.start_run(run_id=run_id, task=task, question=f"question of {run_id}", recipe="council",
                        member_policy=MEMBER_POLICY, adjudication_policy=ADJ_POLICY,
                        panel=[{"label": x, "chain": []} for x in "ABC"], models=MODELS, created_at=created_at)

    def call(self, seat: str, first: str, model: str, status: str, *, latency: float, cost: float = 0.0,
             error: str | None = None, cost_source: str = "catalog", node: str = "member") -> str:
        self.n += 1
        started = self.t + timedelta(seconds=self.n)
        rec = CallRecord(
            call_id=f"{self.run_id}-c{self.n}", run_id=self.run_id, node=node, member_label=seat,
            model_requested=first, model=model, provider=f"p-{model}",
            policy_name=(ADJ_POLICY if node == "adjudicate" else MEMBER_POLICY).name,
            policy_version=(ADJ_POLICY if node == "adjudicate" else MEMBER_POLICY).version,
            template_name="member.j2", template_hash="0123456789ab", attempt=self.n, status=status, error_kind=error,
            prompt_tokens=100 if status in ("ok", "invalid") else 0, completion_tokens=10 if status in ("ok", "invalid") else 0,
            cost_usd=cost, cost_source=cost_source if status != "skipped" else "none", latency_s=latency,
            started_at=started, finished_at=started + timedelta(seconds=latency),
        )
        self.s.add_call(rec)
        return rec.call_id

    def answer(self, seat: str, model: str, call_id: str, label: str | None, claims: list[tuple[str, str | None]]) -> None:
        answer_id = f"{self.run_id}-ans-{seat}"
        self.s.add_answer(MemberAnswer(
            answer_id=answer_id, run_id=self.run_id, member_label=seat, model=model, call_id=call_id,
            answer=f"{seat} says", label=label, raw_text="{}",  # type: ignore[arg-type]
            claims=[Claim(claim_id=cid, run_id=self.run_id, answer_id=answer_id, member_label=seat, model=model,
                          text=f"claim {cid}", confidence=0.8, cluster_id=cluster) for cid, cluster in claims],
        ))

    def clusters(self, statuses: dict[str, tuple[str, list[str]]]) -> None:
        """cluster id -> (status, claim ids); claims keep the cluster ids given to ``answer``."""
        run = self.s.load_run(self.run_id)
        clusters = [ClaimCluster(cluster_id=k, label=f"K{i + 1}", claim_ids=ids, member_labels=[], text="t",
                                 polarity="positive", status=st, settled_by="vote")  # type: ignore[arg-type]
                    for i, (k, (st, ids)) in enumerate(statuses.items())]
        self.s.add_reconciliation(self.run_id, run.answers, clusters)

    def finish(self, label: str | None, support: list[str], contradicted: list[str], degraded: bool,
               adjudicator_call: str | None = None) -> None:
        verdict = Verdict(
            verdict_id=f"{self.run_id}-v", run_id=self.run_id, answer="answer", label=label, confidence=0.8,  # type: ignore[arg-type]
            agreement=1.0, support=support, contradicted=contradicted, decided_by="vote", members_total=3,
            members_answered=2 if degraded else 3, quorum=2, quorum_met=True, degraded=degraded,
            adjudicator_call_id=adjudicator_call,
        )
        self.s.finish_run(self.run_id, verdict, "degraded" if degraded else "done")


def fill(store: Store) -> None:
    """Three runs, one, one and two days apart.

    r1 (check, T0): A m-a ok REFUTED [a1 in k1 accepted]; B m-b failed rate_limit, then m-a ok REFUTED
        [b1 in k1]; C m-c ok SUPPORTED [c1 in k2 rejected]; the judge ok. Verdict REFUTED, supports a1 b1.
    r2 (ask, T0+1d, degraded): A m-a ok [a2 in k3 accepted, a3 in k4 uncorroborated]; B m-b invalid, then
        m-b ok [b2 in k3]; C m-c timeout (cost unknown), then m-a skipped (price ceiling): C failed.
    r3 (check, T0+3d): A m-a ok REFUTED; B m-b ok SUPPORTED; verdict REFUTED, human feedback SUPPORTED.
    """
    r1 = Maker(store, "r1", "check", T0)
    c = r1.call("A", "m-a", "m-a", "ok", latency=0.2, cost=0.001)
    r1.answer("A", "m-a", c, "REFUTED", [("a1", "k1")])
    r1.call("B", "m-b", "m-b", "failed", latency=0.4, error="rate_limit", cost_source="none")
    c = r1.call("B", "m-b", "m-a", "ok", latency=0.3, cost=0.002)
    r1.answer("B", "m-a", c, "REFUTED", [("b1", "k1")])
    c = r1.call("C", "m-c", "m-c", "ok", latency=0.6, cost=0.0004)
    r1.answer("C", "m-c", c, "SUPPORTED", [("c1", "k2")])
    j = r1.call("adjudicator", "judge", "judge", "ok", latency=1.0, cost=0.005, node="adjudicate")
    r1.clusters({"k1": ("accepted", ["a1", "b1"]), "k2": ("rejected", ["c1"])})
    r1.finish("REFUTED", ["a1", "b1"], ["c1"], degraded=False, adjudicator_call=j)

    r2 = Maker(store, "r2", "ask", T0 + timedelta(days=1))
    c = r2.call("A", "m-a", "m-a", "ok", latency=0.25, cost=0.001)
    r2.answer("A", "m-a", c, None, [("a2", "k3"), ("a3", "k4")])
    r2.call("B", "m-b", "m-b", "invalid", latency=0.5, cost=0.0005, error="invalid_answer")
    c = r2.call("B", "m-b", "m-b", "ok", latency=0.35, cost=0.0015)
    r2.answer("B", "m-b", c, None, [("b2", "k3")])
    t = r2.call("C", "m-c", "m-c", "failed", latency=2.0, error="timeout", cost_source="unknown")
    s = r2.call("C", "m-c", "m-a", "skipped", latency=0.0, error="price_ceiling")
    store.add_failure(MemberFailure(run_id="r2", member_label="C", model_requested="m-c", error_kind="price_ceiling",
                                    reason="chain exhausted", call_ids=[t, s]))
    r2.clusters({"k3": ("accepted", ["a2", "b2"]), "k4": ("uncorroborated", ["a3"])})
    r2.finish(None, ["a2", "b2"], [], degraded=True)

    r3 = Maker(store, "r3", "check", T0 + timedelta(days=3))
    c = r3.call("A", "m-a", "m-a", "ok", latency=0.15, cost=0.001)
    r3.answer("A", "m-a", c, "REFUTED", [("a4", None)])
    c = r3.call("B", "m-b", "m-b", "ok", latency=0.45, cost=0.002)
    r3.answer("B", "m-b", c, "SUPPORTED", [("b4", None)])
    r3.finish("REFUTED", [], [], degraded=False)
    store.add_feedback("r3", "SUPPORTED", "checked by hand")


@pytest.fixture(scope="module")
def pg_base() -> str:
    try:
        engine = create_engine(PG_HOST, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_HOST}: {type(exc).__name__}")
    return PG_HOST


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def known(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """The store of ``fill``, on SQLite and on PostgreSQL (a schema of its own, dropped afterwards)."""
    if request.param == "sqlite":
        store = Store(f"sqlite:///{tmp_path_factory.mktemp('monitoring') / 'known.db'}")
        fill(store)
        yield store
        store.engine.dispose()
        return
    base = request.getfixturevalue("pg_base")
    schema = f"council_mon_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        store = Store(f"{base}?options=-csearch_path%3D{schema}")
        fill(store)
        yield store
        store.engine.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def by_model(rows: list[ModelStats]) -> dict[str, ModelStats]:
    return {r.model: r for r in rows}


# ------------------------------------------------------------------------------------------ whole window


def test_models_found_are_every_served_and_first_choice_model(known: Store) -> None:
    rows = model_stats(known)
    assert [r.model for r in rows] == ["judge", "m-a", "m-b", "m-c"]
    assert all(r.period is None for r in rows)


def test_m_a_numbers(known: Store) -> None:
    a = by_model(model_stats(known))["m-a"]
    assert (a.runs, a.calls, a.sent, a.ok, a.failed, a.invalid, a.skipped) == (3, 5, 4, 4, 0, 0, 1)
    assert a.failure_rate == 0.0
    assert a.errors == {"price_ceiling": 1}
    # its own seats: r1 A, r2 A, r3 A; it stood in for m-b in r1
    assert (a.seats, a.fallbacks, a.seats_failed, a.stood_in) == (3, 0, 0, 1)
    assert a.fallback_rate == 0.0 and a.seat_failure_rate == 0.0
    # labels (fact checks): r1 A and r1 B agree, r3 A goes against the human feedback; claims (questions):
    # a2 accepted (a3's cluster was not settled; claims of fact checks are judged by their labels)
    assert (a.labels_agree, a.labels_judged, a.claims_agree, a.claims_judged) == (2, 3, 1, 1)
    assert (a.agree, a.judged) == (3, 4)
    assert a.reliability == pytest.approx(0.75)
    assert (a.feedback_agree, a.feedback_judged, a.feedback_accuracy) == (0, 1, 0.0)
    assert a.answers == 4
    assert a.verdict_support_rate == pytest.approx(3 / 4)  # r3's verdict rests on no claim
    assert a.cost_usd == pytest.approx(0.005)
    assert (a.prompt_tokens, a.completion_tokens) == (400, 40)
    assert a.unknown_cost_calls == 0
    # sent latencies 0.15, 0.2, 0.25, 0.3 (the skipped record is left out)
    assert a.latency_p50_s == pytest.approx(0.225)
    assert a.latency_p90_s == pytest.approx(0.285)
    assert a.latency_p95_s == pytest.approx(0.2925)
    assert a.latency_mean_s == pytest.approx(0.225)
    assert a.latency_max_s == pytest.approx(0.3)
    assert a.first_call == T0 + timedelta(seconds=1)
    assert a.last_call == T0 + timedelta(days=3, seconds=1)


def test_m_b_numbers(known: Store) -> None:
    b = by_model(model_stats(known))["m-b"]
    assert (b.calls, b.sent, b.ok, b.failed, b.invalid, b.skipped) == (4, 4, 2, 1, 1, 0)
    assert b.failure_rate == pytest.approx(0.5)
    assert b.errors == {"invalid_answer": 1, "rate_limit": 1}
    assert (b.seats, b.fallbacks, b.seats_failed, b.stood_in) == (3, 1, 0, 0)
    assert b.fallback_rate == pytest.approx(1 / 3)
    assert (b.agree, b.judged, b.reliability) == (2, 2, 1.0)  # r3 label agrees with feedback; b2 accepted
    assert (b.labels_judged, b.claims_judged, b.feedback_accuracy) == (1, 1, 1.0)
    assert b.verdict_support_rate == pytest.approx(0.5)
    assert b.cost_usd == pytest.approx(0.004)
    # latencies 0.35, 0.4, 0.45, 0.5
    assert b.latency_p50_s == pytest.approx(0.425)
    assert b.latency_p90_s == pytest.approx(0.485)


def test_m_c_numbers(known: Store) -> None:
    c = by_model(model_stats(known))["m-c"]
    assert (c.runs, c.calls, c.sent, c.ok, c.failed) == (2, 2, 2, 1, 1)
    assert c.failure_rate == pytest.approx(0.5)
    assert (c.seats, c.fallbacks, c.seats_failed) == (2, 1, 1)  # r2: timeout, then the skipped m-a
    assert c.fallback_rate == pytest.approx(0.5) and c.seat_failure_rate == pytest.approx(0.5)
    assert (c.agree, c.judged, c.reliability) == (0, 1, 0.0)  # its r1 label was wrong
    assert c.feedback_accuracy is None
    assert c.verdict_support_rate == 0.0
    assert c.unknown_cost_calls == 1
    assert c.cost_usd == pytest.approx(0.0004)
    assert c.latency_p50_s == pytest.approx(1.3) and c.latency_max_s == pytest.approx(2.0)


def test_adjudicator_has_a_seat_but_no_reliability(known: Store) -> None:
    j = by_model(model_stats(known))["judge"]
    assert (j.runs, j.calls, j.seats, j.answers, j.judged) == (1, 1, 1, 0, 0)
    assert j.reliability is None and j.verdict_support_rate is None
    assert j.latency_p50_s == j.latency_p95_s == pytest.approx(1.0)


def test_report_totals(known: Store) -> None:
    report = stats_report(known)
    assert (report.runs, report.degraded_runs, report.failed_runs) == (3, 1, 0)
    total = 0.001 + 0.002 + 0.0004 + 0.005 + 0.001 + 0.0005 + 0.0015 + 0.001 + 0.002
    assert report.total_cost_usd == pytest.approx(total)
    assert sum(r.cost_usd for r in report.models) == pytest.approx(total)


# ------------------------------------------------------------------------------------------ windows, filters


def test_since_and_until_select_whole_runs(known: Store) -> None:
    later = by_model(model_stats(known, since=T0 + timedelta(hours=12)))
    assert later["m-c"].calls == 1 and later["m-c"].seats_failed == 1  # r2 only
    assert "judge" not in later
    assert later["m-a"].calls == 3  # r2 A, r2 C (skipped), r3 A
    early = by_model(model_stats(known, until=T0 + timedelta(days=2)))
    assert early["m-b"].calls == 3 and early["m-b"].reliability == 1.0  # r1 and r2: only b2 judged
    assert (early["m-b"].agree, early["m-b"].judged) == (1, 1)
    assert model_stats(known, since=T0 + timedelta(days=10)) == []
    # string and date bounds
    assert by_model(model_stats(known, since="2025-03-02"))["m-a"].calls == 3
    assert by_model(model_stats(known, since=date(2025, 3, 4)))["m-a"].calls == 1
    assert stats_report(known, since="2025-03-01T12:00:00+00:00", until="2025-03-01T13:00").runs == 1


def test_model_filter(known: Store) -> None:
    rows = model_stats(known, model="m-b")
    assert [r.model for r in rows] == ["m-b"]
    assert rows[0] == by_model(model_stats(known))["m-b"]
    assert model_stats(known, model="nobody") == []


def test_by_day_splits_runs_into_periods(known: Store) -> None:
    rows = model_stats(known, by="day")
    periods = sorted({r.period for r in rows})
    assert periods == [datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 2, tzinfo=UTC), datetime(2025, 3, 4, tzinfo=UTC)]
    cell = {(r.period.day, r.model): r for r in rows if r.period}
    assert cell[(1, "m-a")].calls == 2 and cell[(1, "m-a")].stood_in == 1
    assert cell[(2, "m-c")].seat_failure_rate == 1.0
    assert cell[(4, "m-a")].reliability == 0.0  # overruled by the human feedback
    assert (4, "m-c") not in cell
    weeks = {r.period for r in model_stats(known, by="week")}
    assert weeks == {datetime(2025, 2, 24, tzinfo=UTC), datetime(2025, 3, 3, tzinfo=UTC)}  # Mondays
    with pytest.raises(InputError, match="unknown period"):
        model_stats(known, by="month")  # type: ignore[arg-type]


def test_parse_when() -> None:
    now = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    assert parse_when(None) is None
    assert parse_when("7d", now=now) == now - timedelta(days=7)
    assert parse_when("12h", now=now) == now - timedelta(hours=12)
    assert parse_when("30m", now=now) == now - timedelta(minutes=30)
    assert parse_when("2w", now=now) == now - timedelta(weeks=2)
    assert parse_when("2026-01-02") == datetime(2026, 1, 2, tzinfo=UTC)
    assert parse_when("2026-01-02T10:00:00+02:00") == datetime(2026, 1, 2, 8, tzinfo=UTC)
    assert parse_when("2026-01-02T10:00:00Z") == datetime(2026, 1, 2, 10, tzinfo=UTC)
    assert parse_when(datetime(2026, 1, 2, 10)) == datetime(2026, 1, 2, 10, tzinfo=UTC)
    assert parse_when(date(2026, 1, 2)) == datetime(2026, 1, 2, tzinfo=UTC)
    with pytest.raises(InputError, match="cannot read 'last tuesday' as a date"):
        parse_when("last tuesday")


def test_percentile_matches_numpy_linear() -> None:
    import numpy as np

    values = [0.9, 0.1, 0.5, 2.0, 0.3, 0.7, 1.1]
    for q in (0, 10, 25, 50, 90, 95, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([], 50) is None
    assert percentile([4.0], 95) == 4.0


# ------------------------------------------------------------------------------------------ frames


def test_model_stats_frame(known: Store) -> None:
    frame = model_stats_frame(known)
    assert list(frame.index) == ["judge", "m-a", "m-b", "m-c"]
    assert frame.loc["m-a", "reliability"] == pytest.approx(0.75)
    assert frame.loc["m-b", "fallback_rate"] == pytest.approx(1 / 3)
    assert "period" not in frame.columns
    assert str(frame["first_call"].dt.tz) == "UTC"
    by_day = model_stats_frame(known, by="day")
    assert by_day.index.names == ["period", "model"]
    assert len(by_day) == len(model_stats(known, by="day"))
    empty = model_stats_frame(known, since=T0 + timedelta(days=10))
    assert empty.empty and "reliability" in empty.columns


def test_store_frames(known: Store) -> None:
    runs = known.runs_frame()
    assert list(runs.run_id) == ["r1", "r2", "r3"]
    assert list(runs.degraded) == [False, True, False]
    assert list(runs.verdict) == ["REFUTED", "answer", "REFUTED"]
    assert list(known.runs_frame(limit=2).run_id) == ["r2", "r3"]
    assert list(known.runs_frame(since="2025-03-02", until="2025-03-03").run_id) == ["r2"]

    calls = known.calls_frame()
    assert len(calls) == 12 and calls.started_at.is_monotonic_increasing
    m_b = known.calls_frame(model="m-b")
    # calls sent to m-b, and the call of m-b's seat that fell back to m-a
    assert list(zip(m_b.run_id, m_b.model, m_b.fallback)) == [
        ("r1", "m-b", False), ("r1", "m-a", True), ("r2", "m-b", False), ("r2", "m-b", False), ("r3", "m-b", False)]
    assert list(known.calls_frame(since="2025-03-04").call_id) == ["r3-c1", "r3-c2"]
    assert set(m_b.policy) == {MEMBER_POLICY.ref}


def test_run_result_frames(known: Store) -> None:
    result = RunResult.from_stored(known.load_run("r1"), known)
    claims = result.claims_frame()
    assert list(claims.claim_id) == ["a1", "b1", "c1"]
    assert list(claims.verdict) == ["supports", "supports", "contradicts"]
    assert list(claims.cluster) == ["K1", "K1", "K2"]
    assert list(claims.cluster_status) == ["accepted", "accepted", "rejected"]
    assert list(claims.model) == ["m-a", "m-a", "m-c"]
    calls = result.calls_frame()
    assert list(calls.member) == ["A", "B", "B", "C", "adjudicator"]
    assert list(calls.status) == ["ok", "failed", "ok", "ok", "ok"]
    assert calls.cost_usd.sum() == pytest.approx(0.0084)


# ------------------------------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every ``council stats`` invocation of the tests, run concurrently on one SQLite copy of the store."""
    tmp = tmp_path_factory.mktemp("stats-cli")
    url = f"sqlite:///{tmp / 'cli.db'}"
    store = Store(url)
    fill(store)
    store.engine.dispose()
    commands = {
        "table": ["--db", url],
        "json": ["--db", url, "--json"],
        "filtered": ["--db", str(tmp / "cli.db"), "--json", "--model", "m-c", "--since", "2025-03-02"],
        "by_day": ["--db", url, "--by", "day"],
        "bad_since": ["--db", url, "--since", "last tuesday"],
        "bad_by": ["--db", url, "--by", "month"],
    }
    env = dict(os.environ)
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", COLUMNS="250", NO_COLOR="1", COUNCIL_DB=str(tmp / "default.db"))
    env.pop("COUNCIL_CONFIG", None)
    procs = {name: subprocess.Popen([sys.executable, "-m", "council", "stats", *args], cwd=ROOT, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name, args in commands.items()}
    done = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=120)
        done[name] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    return done


def test_cli_table(cli_runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = cli_runs["table"]
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
            for line in proc.stdout.splitlines() if line.startswith("│")}
    assert list(rows) == ["judge", "m-a", "m-b", "m-c"]
    # runs, calls, failed, fallback, seat failed, stood in, reliability, vs feedback, in verdict, cost, p50, p95,
    # queued p95, 429s
    assert rows["m-a"] == ["3", "5", "0%", "0%", "0%", "1", "0.75 (3/4)", "0.00 (0/1)", "75%", "0.005000", "0.23",
                           "0.29", "0.00", "0"]
    assert rows["m-b"][-1] == "1"  # its rate_limit failure
    assert rows["m-b"][:9] == ["3", "4", "50%", "33%", "0%", "0", "1.00 (2/2)", "1.00 (1/1)", "50%"]
    assert rows["m-c"][6:8] == ["0.00 (0/1)", "-"]
    assert rows["judge"][6:9] == ["-", "-", "-"]
    assert "3 runs from the first run to now: 1 degraded, 0 failed, total cost $0.014400" in " ".join(proc.stdout.split())


def test_cli_json_has_the_api_numbers(cli_runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = cli_runs["json"]
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert (payload["runs"], payload["degraded_runs"], payload["since"], payload["model"]) == (3, 1, None, None)
    got = {row["model"]: ModelStats.model_validate(row) for row in payload["models"]}
    store = Store(proc.args[proc.args.index("--db") + 1])
    assert got == by_model(model_stats(store))
    store.engine.dispose()


def test_cli_filters(cli_runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = cli_runs["filtered"]
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["since"] == "2025-03-02T00:00:00Z" and payload["model"] == "m-c"
    assert payload["runs"] == 2
    assert [(r["model"], r["calls"], r["seat_failure_rate"]) for r in payload["models"]] == [("m-c", 1, 1.0)]


def test_cli_by_day(cli_runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = cli_runs["by_day"]
    assert proc.returncode == 0, proc.stderr
    periods = [line.split("│")[1].strip() for line in proc.stdout.splitlines() if line.startswith("│")]
    assert periods == ["2025-03-01"] * 4 + ["2025-03-02"] * 3 + ["2025-03-04"] * 2


@pytest.mark.parametrize("name, message", [
    ("bad_since", "error: cannot read 'last tuesday' as a date"),
    ("bad_by", "error: unknown period 'month'"),
])
def test_cli_bad_input_is_one_error_line(cli_runs: dict[str, subprocess.CompletedProcess[str]], name: str,
                                         message: str) -> None:
    proc = cli_runs[name]
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr


def test_stats_command_stays_light(tmp_path: Path) -> None:
    """``council stats`` reads the store only: no litellm, no langgraph, no pandas."""
    code = ("import json, sys\nsys.argv = ['council', 'stats', '--db', sys.argv[1]]\nimport council.cli\n"
            "try:\n    council.cli.app()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "print('@@' + json.dumps(sorted(m for m in ('litellm', 'langgraph', 'pandas', 'matplotlib') if m in sys.modules)))")
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", COUNCIL_DB=str(tmp_path / "d.db"))
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s.db")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.rsplit("@@", 1)[1]) == []

