"""Human review through the Python API, against the scripted server over loopback: which conditions flag
a verdict, the review queue and its filters, decisions (unknown runs, unflagged runs, bad labels, a
second decision), the council's verdict left untouched, reliabilities learning from decisions, the
provenance graph and PROV-JSON with a person agent, and the monitoring figures against the stored rows."""

from __future__ import annotations

import json
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from council.batch.runner import check_many
from council.calls.answers import Citation, Claim, MemberAnswer
from council.config.policy import TaskPolicy
from council.deliberation.flags import review_reasons
from council.errors import InputError, RunNotFound
from council.provenance.graph import build_graph, to_prov
from council.review import ReviewFilter, ReviewStore, review_stats
from council.store.db import Store
from support import DISPUTED, batch_config, db_rows, members_script, write_jsonl

ROWS = [
    {"id": "c0", "claim": "Bridge 0 opened in 1900."},
    {"id": "c1", "claim": "Bridge 1 opened in 1901.", "tags": {"risk": "high"}},
    {"id": "d0", "claim": f"{DISPUTED} claim zero."},
    {"id": "d1", "claim": f"{DISPUTED} claim one.", "tags": {"risk": "low"}},
]


def _claim(cid: str, verified: bool | None) -> Claim:
    return Claim(claim_id=cid, run_id="r", answer_id="a", member_label="A", model="m", text="t", confidence=0.9,
                 citations=[Citation(source_id="P1", quote="q", verified=verified)])


def test_each_condition_fires_only_when_enabled_and_says_why() -> None:
    answers = [MemberAnswer(answer_id="a", run_id="r", member_label="A", model="m", call_id="c", answer="x",
                            claims=[_claim("k1", False), _claim("k2", True)], raw_text="")]
    base = dict(contested=False, agreement=1.0, confidence=0.9, degraded_reasons=[], answers=answers,
                support=["k2"], tags={})
    p = TaskPolicy(name="p", human_review="when_flagged")
    assert review_reasons(p, **base) == []
    assert review_reasons(TaskPolicy(name="p"), **{**base, "contested": True}) == []  # human_review = never
    assert [r.condition for r in review_reasons(TaskPolicy(name="p", human_review="always"), **base)] == ["always"]
    fired = review_reasons(p.model_copy(update={"review_below_agreement": 1.0, "review_below_confidence": 0.95,
                                                "review_tags": (("risk", ("high",)),)}),
                           **{**base, "contested": True, "agreement": 0.67, "degraded_reasons": ["member B failed"],
                              "tags": {"risk": "high"}})
    assert [(r.condition, r.detail) for r in fired] == [
        ("contested", "the weighted vote could not settle the verdict"),
        ("low_agreement", "agreement 0.67 below 1.00"),
        ("low_confidence", "confidence 0.90 below 0.95"),
        ("degraded", "member B failed"),
        ("tag", "risk=high"),
    ]
    evidence = p.model_copy(update={"evidence_required": True})
    assert review_reasons(evidence, **base) == []  # k2's citation was verified
    assert [r.condition for r in review_reasons(evidence, **{**base, "support": ["k1"]})] == ["unverified_evidence"]
    assert review_reasons(p.model_copy(update={"review_contested": False}), **{**base, "contested": True}) == []
    # the policy is written as TOML tables: review_tags = {risk = ["high"]} (or a single string)
    assert TaskPolicy(name="p", review_tags={"risk": "high"}).review_tags == (("risk", ("high",)),)


@pytest.fixture
def reviewed_batch(scripted, tmp_path: Path) -> dict[str, Any]:
    """A batch of four claims: c0 unanimous; c1 unanimous but tagged risk=high; d0, d1 split 1-2 and
    ruled SUPPORTED by the adjudicator (contested, low agreement)."""
    server = scripted(members_script(judge_faults=[]))
    db = f"sqlite:///{tmp_path / 'review.db'}"
    report = check_many(str(write_jsonl(tmp_path / "claims.jsonl", ROWS)), config=batch_config(server.base_url), db=db,
                        concurrency=2, batch_id="b1")
    other = check_many([{"id": "x0", "claim": f"{DISPUTED} elsewhere.", "tags": {"risk": "high"}}],
                       config=batch_config(server.base_url), db=db, batch_id="b2")
    runs = {r.id: r.run_id for r in report.results} | {r.id: r.run_id for r in other.results}
    return {"db": db, "report": report, "runs": runs, "server": server}


def test_flags_reach_the_batch_results_and_the_queue_filters(reviewed_batch: dict[str, Any]) -> None:
    db, runs, report = reviewed_batch["db"], reviewed_batch["runs"], reviewed_batch["report"]
    by_id = {r.id: r for r in report.results}
    assert [by_id[i].needs_review for i in ("c0", "c1", "d0", "d1")] == [False, True, True, True]
    assert by_id["c1"].review_reasons == "tag: risk=high"
    assert by_id["d0"].review_reasons == ("contested: the weighted vote could not settle the verdict; "
                                          "low_agreement: agreement 0.33 below 1.00; overruled_vote: adjudicator "
                                          "ruled SUPPORTED (confidence 0.80) where the vote leaned REFUTED "
                                          "(posterior 0.67)")
    assert by_id["d0"].warnings.startswith("adjudicator overruled the vote: vote REFUTED (posterior 0.67)")
    assert (report.needs_review, report.unreviewed) == (3, 3)
    assert report.exit_code(allow_contested=True) == 0 and report.exit_code(allow_contested=True, require_review=True) == 3

    desk = ReviewStore(Store(db))
    ids = {v: k for k, v in runs.items()}

    def queue(**kw: Any) -> list[str]:
        return [ids[i.run_id] for i in desk.queue(ReviewFilter(**kw))]

    everything = desk.queue()
    assert sorted(ids[i.run_id] for i in everything) == ["c1", "d0", "d1", "x0"]
    assert [i.flagged_at for i in everything] == sorted(i.flagged_at for i in everything)  # oldest first
    assert sorted(queue(batch_id="b1")) == ["c1", "d0", "d1"] and queue(batch_id="b2") == ["x0"]
    assert sorted(queue(tags={"risk": "high"})) == ["c1", "x0"]
    assert queue(tags={"risk": "high"}, batch_id="b1") == ["c1"]
    assert sorted(queue(condition="contested")) == ["d0", "d1", "x0"]
    assert queue(condition="tag", batch_id="b1") == ["c1"]
    assert len(queue(policy="fact_check")) == 4 and queue(policy="research") == []
    assert queue(limit=1) == [ids[everything[0].run_id]]
    with pytest.raises(InputError, match="unknown review condition 'cheap'"):
        desk.queue(ReviewFilter(condition="cheap"))
    item = next(i for i in everything if i.run_id == runs["d1"])
    assert (item.batch_id, item.line, item.item_id, item.tags, item.council_label) == ("b1", 4, "d1", {"risk": "low"}, "SUPPORTED")
    # deciding takes a run out of the default queue, not out of --all
    desk.decide(runs["d1"], "refuted", reviewer="ana")
    assert "d1" not in queue() and "d1" in queue(include_decided=True)


def test_decisions_bad_input_history_and_the_council_verdict_untouched(reviewed_batch: dict[str, Any]) -> None:
    db, runs = reviewed_batch["db"], reviewed_batch["runs"]
    store = Store(db)
    desk = ReviewStore(store)
    verdict_before = db_rows(db, "SELECT body_json FROM verdicts WHERE run_id = :r", r=runs["d0"])
    with pytest.raises(RunNotFound, match="no run with id 'nope'"):
        desk.decide("nope", "REFUTED", reviewer="ana")
    with pytest.raises(InputError, match="not flagged for review: pass --force"):
        desk.decide(runs["c0"], "REFUTED", reviewer="ana")
    with pytest.raises(InputError, match="label 'FALSE' is not a label of a fact check: use SUPPORTED, REFUTED, NOT_ENOUGH_INFO"):
        desk.decide(runs["d0"], "false", reviewer="ana")
    with pytest.raises(InputError, match="no reviewer"):
        desk.decide(runs["d0"], "REFUTED", reviewer=" ")
    assert db_rows(db, "SELECT COUNT(*) FROM review_decisions") == [(0,)]  # nothing recorded by the refusals

    forced = desk.decide(runs["c0"], "SUPPORTED", reviewer="ana", force=True)
    assert not forced.solicited and not forced.overturns
    first = desk.decide(runs["d0"][:10], "REFUTED", reviewer="ana", note="the 1932 records say otherwise")
    second = desk.decide(runs["d0"], "NOT_ENOUGH_INFO", reviewer="bo")
    assert first.solicited and first.overturns and first.council_label == "SUPPORTED"
    assert second.supersedes == first.decision_id
    history = desk.decisions(runs["d0"])
    assert [(d.label, d.reviewer, d.latest) for d in history] == [("REFUTED", "ana", False), ("NOT_ENOUGH_INFO", "bo", True)]
    assert history[0].note == "the 1932 records say otherwise"
    # the council's verdict is never overwritten: both stay
    assert db_rows(db, "SELECT body_json FROM verdicts WHERE run_id = :r", r=runs["d0"]) == verdict_before
    run = store.load_run(runs["d0"])
    assert run.verdict.label == "SUPPORTED" and run.decision.label == "NOT_ENOUGH_INFO" and len(run.decisions) == 2
    assert run.flagged_at is not None


def test_decisions_teach_the_learned_reliabilities(reviewed_batch: dict[str, Any]) -> None:
    db, runs = reviewed_batch["db"], reviewed_batch["runs"]
    store = Store(db)

    def rel() -> dict[str, tuple[int, int]]:
        return {m: (r.agree, r.total) for m, r in store.reliabilities(0.7, 4.0).items()}

    before = rel()
    # m-a said SUPPORTED on the three disputed claims, m-b and m-c REFUTED; the council said SUPPORTED
    assert before["m-a"] == (5, 5) and before["m-b"] == (2, 5)
    desk = ReviewStore(store)
    for key in ("d0", "d1", "x0"):
        desk.decide(runs[key], "REFUTED", reviewer="ana")
    after = rel()
    assert after["m-a"] == (2, 5) and after["m-b"] == (5, 5) and after["m-c"] == (5, 5)
    assert store.reliabilities(0.7, 4.0)["m-a"].value == pytest.approx((2 + 0.7 * 4) / (5 + 4))
    # the latest decision is the truth: changing one back moves the counts back by one
    desk.decide(runs["x0"], "SUPPORTED", reviewer="bo")
    assert rel()["m-a"] == (3, 5)


def test_decisions_in_the_provenance_graph_and_prov_json(reviewed_batch: dict[str, Any]) -> None:
    db, runs = reviewed_batch["db"], reviewed_batch["runs"]
    store = Store(db)
    desk = ReviewStore(store)
    first = desk.decide(runs["d0"], "REFUTED", reviewer="Ana Lima", note="n1")
    second = desk.decide(runs["d0"], "REFUTED", reviewer="bo")
    run = store.load_run(runs["d0"])
    g = build_graph(run)
    d1, d2 = f"decision:{first.decision_id}", f"decision:{second.decision_id}"
    assert g.nodes[d1]["kind"] == "ReviewDecision" and g.nodes[d1]["record_label"] == "REFUTED"
    assert g.nodes[d1]["overturns"] is True and g.nodes[d1]["latest"] is False and g.nodes[d2]["latest"] is True
    assert g.nodes["person:Ana Lima"]["kind"] == "Person"
    assert g.has_edge(d1, "person:Ana Lima", "attributed_to") and g.has_edge(d2, "person:bo", "attributed_to")
    assert g.has_edge(d1, f"verdict:{run.verdict.verdict_id}", "reviewed")
    assert g.has_edge(d2, d1, "supersedes") and g.has_edge(d1, f"run:{run.run_id}", "part_of")
    doc = json.loads(to_prov(run).serialize(format="json"))
    assert doc["agent"]["council:person-Ana_Lima"]["prov:type"]["$"] == "prov:Person"
    ent = doc["entity"][f"council:decision-{first.decision_id}"]
    assert ent["council:label"] == "REFUTED" and ent["council:note"] == "n1"
    attributions = {(a["prov:entity"], a["prov:agent"]) for a in doc["wasAttributedTo"].values()}
    assert (f"council:decision-{first.decision_id}", "council:person-Ana_Lima") in attributions
    assert (f"council:decision-{second.decision_id}", "council:person-bo") in attributions
    derived = {(d["prov:generatedEntity"], d["prov:usedEntity"]) for d in doc["wasDerivedFrom"].values()}
    assert (f"council:decision-{first.decision_id}", f"council:verdict-{run.verdict.verdict_id}") in derived
    assert (f"council:decision-{second.decision_id}", f"council:decision-{first.decision_id}") in derived  # revision


def test_stats_figures_equal_counts_from_the_stored_rows(reviewed_batch: dict[str, Any]) -> None:
    db, runs = reviewed_batch["db"], reviewed_batch["runs"]
    desk = ReviewStore(Store(db))
    t0 = datetime.now(UTC) + timedelta(minutes=5)
    desk.decide(runs["d0"], "REFUTED", reviewer="ana", at=t0)                      # overturns: a false-safe
    desk.decide(runs["d0"], "SUPPORTED", reviewer="bo", at=t0 + timedelta(minutes=1))  # reviewers disagree; latest confirms
    desk.decide(runs["c1"], "SUPPORTED", reviewer="ana", at=t0 + timedelta(minutes=3))  # confirms
    desk.decide(runs["c0"], "REFUTED", reviewer="ana", force=True, at=t0 + timedelta(minutes=4))  # unsolicited, missed
    (s,) = review_stats(Store(db))
    q = lambda sql: db_rows(db, sql)[0][0]  # noqa: E731
    runs_n = q("SELECT COUNT(*) FROM verdicts")
    flagged = q("SELECT COUNT(DISTINCT run_id) FROM review_flags")
    decided = q("SELECT COUNT(*) FROM review_decisions WHERE latest")
    overturned = q("SELECT COUNT(*) FROM review_decisions d JOIN runs r ON r.run_id = d.run_id "
                   "WHERE d.latest AND d.label <> r.verdict_label")
    pending = q("SELECT COUNT(DISTINCT f.run_id) FROM review_flags f WHERE NOT EXISTS "
                "(SELECT 1 FROM review_decisions d WHERE d.run_id = f.run_id)")
    assert (s.policy, s.runs, s.flagged, s.decided, s.pending, s.overturned) == ("fact_check", runs_n, flagged, decided,
                                                                                pending, overturned)
    assert (s.runs, s.flagged, s.decided, s.pending, s.overturned) == (5, 4, 3, 2, 1)
    assert s.review_rate == pytest.approx(4 / 5) and s.overturn_rate == pytest.approx(1 / 3)
    assert (s.passed, s.false_safe, s.alarms, s.false_alarm) == (3, 1, 0, 0) and s.false_alarm_rate is None
    assert (s.unsolicited, s.missed, s.multi_reviewed, s.reviewer_disagreement) == (1, 1, 1, 1)
    waits = []
    for key in ("d0", "c1"):
        flag = db_rows(db, "SELECT MIN(flagged_at) FROM review_flags WHERE run_id = :r", r=runs[key])[0][0]
        first = db_rows(db, "SELECT MIN(decided_at) FROM review_decisions WHERE run_id = :r", r=runs[key])[0][0]
        waits.append((datetime.fromisoformat(str(first)) - datetime.fromisoformat(str(flag))).total_seconds())
    assert s.median_time_to_decision_s == pytest.approx(statistics.median(waits))
    assert review_stats(Store(db), policy="research") == []
    assert review_stats(Store(db), since=datetime.now(UTC) + timedelta(days=1)) == []


def test_batch_rows_carry_tags_and_bad_tags_are_bad_rows(tmp_path: Path) -> None:
    from council.batch.input import read_claims

    jsonl = write_jsonl(tmp_path / "t.jsonl", [
        {"id": "a", "claim": "One.", "tags": {"risk": "high", "level": 3}},
        {"id": "b", "claim": "Two.", "tags": ["risk"]},
        {"id": "c", "claim": "Three.", "tags": {"risk": None}},
    ])
    parsed = read_claims(jsonl)
    assert [(i.claim_id, i.tags) for i in parsed.items] == [("a", {"risk": "high", "level": "3"})]
    assert [b.line for b in parsed.bad_rows] == [2, 3]
    assert all(b.reason.startswith("'tags' must be an object of short strings") for b in parsed.bad_rows)
    csv_file = tmp_path / "t.csv"
    csv_file.write_text('claim,id,tags\nOne.,a,risk=high;team=x\nTwo.,b,"{""risk"": ""low""}"\nThree.,c,risk\nFour.,d,\n',
                        encoding="utf-8")
    parsed = read_claims(csv_file)
    assert [(i.claim_id, i.tags) for i in parsed.items] == [
        ("a", {"risk": "high", "team": "x"}), ("b", {"risk": "low"}), ("d", {})]
    assert [b.line for b in parsed.bad_rows] == [4]


def test_a_single_check_is_tagged_through_the_api(scripted, tmp_path: Path) -> None:
    import council

    server = scripted(members_script())
    c = council.Council(batch_config(server.base_url), db=f"sqlite:///{tmp_path / 'one.db'}")
    flagged = c.check("Bridge 7 opened in 1907.", tags={"risk": "high"})
    plain = c.check("Bridge 8 opened in 1908.")
    assert [(r.condition, r.detail) for r in flagged.verdict.review_reasons] == [("tag", "risk=high")]
    assert flagged.verdict.needs_human_review and not plain.verdict.needs_human_review
    assert flagged.tags == {"risk": "high"} and plain.tags == {}
    assert [i.run_id for i in ReviewStore(c.store).queue()] == [flagged.run_id]


def test_review_on_postgresql(scripted) -> None:
    import uuid

    psycopg = pytest.importorskip("psycopg")

    server = "postgresql://postgres@127.0.0.1:5432"
    name = f"council_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(f"{server}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = f"{server}/{name}"
            srv = scripted(members_script(judge_faults=[]))
            report = check_many(ROWS, config=batch_config(srv.base_url), db=url, concurrency=2, batch_id="pg")
            runs = {r.id: r.run_id for r in report.results}
            store = Store(url)
            desk = ReviewStore(store)
            assert sorted(i.item_id for i in desk.queue(ReviewFilter(batch_id="pg"))) == ["c1", "d0", "d1"]
            assert [i.item_id for i in desk.queue(ReviewFilter(tags={"risk": "high"}))] == ["c1"]
            before = store.reliabilities(0.7, 4.0)["m-a"]
            desk.decide(runs["d0"], "REFUTED", reviewer="ana")
            second = desk.decide(runs["d0"], "REFUTED", reviewer="bo")
            assert [d.latest for d in desk.decisions(runs["d0"])] == [False, True] and second.supersedes
            after = store.reliabilities(0.7, 4.0)["m-a"]
            assert (before.agree - after.agree, before.total - after.total) == (1, 0)
            (s,) = review_stats(store)
            assert (s.runs, s.flagged, s.decided, s.overturned, s.multi_reviewed) == (4, 3, 1, 1, 1)
            store.engine.dispose()
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_verdicts_flagged_before_migration_0005_join_the_queue(reviewed_batch: dict[str, Any]) -> None:
    from sqlalchemy import text

    db, runs = reviewed_batch["db"], reviewed_batch["runs"]
    store = Store(db)
    with store.engine.begin() as conn:  # back to what a database from before 0005 held
        for run_id, body in conn.execute(text("SELECT run_id, body_json FROM verdicts")).all():
            old = json.loads(body)
            old.pop("review_reasons")
            conn.execute(text("UPDATE verdicts SET body_json = :b WHERE run_id = :r"), {"b": json.dumps(old), "r": run_id})
        conn.execute(text("DELETE FROM review_flags"))
        conn.execute(text("DELETE FROM council_migrations WHERE name = '0005_human_review'"))
    queue = {i.run_id: [r.condition for r in i.reasons] for i in ReviewStore(Store(db)).queue()}  # opening migrates
    assert queue[runs["d0"]] == ["contested", "low_agreement"] and queue[runs["c1"]] == ["always"]
    assert runs["c0"] not in queue
