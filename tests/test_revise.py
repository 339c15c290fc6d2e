"""Revision rounds (recipe ``revise``), end to end over loopback through the real litellm path.

The scripted server plays the members and their revisions; assertions compare what the server received
(how many calls per model, what a reviser was shown) with what the store recorded: rounds, the
``revised_from`` links, flips, why the rounds stopped, billing records and provenance edges.
"""

from __future__ import annotations

from typing import Any


from conftest import GREAT_WALL, panel_config
from support import CapturingServer, db_rows, members_script, revision, revision_script, DISPUTED
from council import Council
from council.provenance import trace_claim
from council.provenance.graph import to_prov

NOT_VISIBLE = "The Great Wall is not visible to the naked eye from low Earth orbit."
VISIBLE = "The Great Wall is visible to the naked eye from low Earth orbit."


def _run(script: dict[str, Any], db: str, claim: str | None = None, **policies: dict[str, Any]) -> tuple[Any, Any]:
    """Ask the Great Wall question (or check ``claim``) with the revise recipe against ``script``: the run's
    result, and the (stopped) server that played the members, with the prompts it received."""
    srv = CapturingServer(script)
    srv.start()
    try:
        council = Council(panel_config(srv.base_url, **policies), db=db, recipe="revise")
        return (council.check(claim) if claim else council.ask(GREAT_WALL)), srv
    finally:
        srv.stop()


def test_a_round_runs_while_contested_and_stops_when_the_vote_converges(db_url: str) -> None:
    result, srv = _run(revision_script(), db_url)
    v = result.verdict
    assert v is not None and result.status == "done"
    assert v.rounds == 2 and v.revision_stop == "converged: nothing contested after 1 revision round(s)"
    assert v.decided_by == "vote" and v.adjudicator_call_id is None
    # Each member answered once and revised once; the adjudicator was not needed.
    assert srv.stats()["requests"] == {"m-a": 2, "m-b": 2, "m-c": 2}
    revise_calls = [c for c in result.calls if c.node == "revise"]
    assert len(revise_calls) == 3 and {c.policy_name for c in revise_calls} == {"revision"}
    assert {s.stage: s.calls for s in result.stage_costs}["revise"] == 3
    # Every answer in force is of round 2 and links to the member's first answer.
    first = {a.member_label: a for a in result.revised_answers}
    assert sorted(first) == ["A", "B", "C"] and all(a.round == 1 for a in first.values())
    now = {a.member_label: a for a in result.answers}
    assert {m: (a.round, a.revision) for m, a in now.items()} == {"A": (2, "hold"), "B": (2, "hold"), "C": (2, "revise")}
    assert all(a.revised_from == first[m].answer_id for m, a in now.items())
    assert {c.call_id for c in revise_calls} == {a.call_id for a in now.values()}
    # C's flips: its claim retracted, the majority's claim stated. Holding members flip nothing.
    assert [(f.member_label, f.kind, f.before, f.after, f.subject) for f in v.flips] == [
        ("C", "claim", "stated", "retracted", VISIBLE), ("C", "claim", "absent", "stated", NOT_VISIBLE)]
    by_text = {k.text: k for k in result.clusters}
    assert by_text[NOT_VISIBLE].status == "accepted" and sorted(by_text[NOT_VISIBLE].member_labels) == ["A", "B", "C"]
    assert VISIBLE not in by_text  # the stored clusters are the last vote's
    # The store: 6 answers, the first three superseded by the second; old claims left their clusters.
    assert db_rows(db_url, "SELECT round, COUNT(*), COUNT(superseded_by) FROM answers GROUP BY round ORDER BY round") \
        == [(1, 3, 3), (2, 3, 0)]
    assert db_rows(db_url, "SELECT COUNT(*) FROM claims c JOIN answers a ON a.answer_id = c.answer_id "
                           "WHERE a.round = 1 AND c.cluster_id IS NOT NULL") == [(0,)]


def test_a_reviser_sees_its_own_answer_and_its_peers_claims_counted_but_anonymous(db_url: str) -> None:
    _, srv = _run(revision_script(), db_url)
    (system, user), = [p for p in srv.prompts("m-c") if "Revision round 2." in p[1]]
    assert "Your previous answer: Yes." in user
    assert f"1 of 3 members state: {VISIBLE} (you state this) [contested]" in user
    assert "2 of 3 members state: It cannot be seen with the naked eye from low Earth orbit." in user \
        or f"2 of 3 members state: {NOT_VISIBLE}" in user
    # No member label or model name reaches a reviser.
    for who in ("m-a", "m-b", "Member A", "member A", "Response 1"):
        assert who not in user and who not in system
    assert "a majority is not evidence" in system and "<data-" in user


def test_every_member_holding_is_convergence_and_the_adjudicator_decides(db_url: str) -> None:
    result, srv = _run(revision_script(c_rounds=[revision("hold", "The photos show it.")]), db_url)
    v = result.verdict
    assert v is not None
    assert v.rounds == 2 and v.revision_stop == "converged: every member held its answer in round 2"
    assert v.flips == [] and v.decided_by == "adjudicator"
    # One revision round instead of the policy's two: three calls saved by stopping at convergence.
    assert srv.stats()["requests"] == {"m-a": 2, "m-b": 2, "m-c": 2, "judge": 1}
    assert {a.member_label: a.revision_reason for a in result.answers}["C"] == "The photos show it."


def test_rounds_stop_at_the_policy_maximum_while_still_contested(db_url: str) -> None:
    def more(*extra: str) -> dict[str, Any]:
        return revision("revise", "adding detail", "Yes.", [(VISIBLE, 0.6)] + [(x, 0.7) for x in extra])

    result, srv = _run(revision_script(c_rounds=[more("It is over 20,000 km long."),
                                                 more("It is over 20,000 km long.", "Its building took centuries.")]), db_url)
    v = result.verdict
    assert v is not None
    assert v.rounds == 3 and v.revision_stop == "stopped at the policy's maximum of 2 revision round(s), still contested"
    assert srv.stats()["requests"] == {"m-a": 3, "m-b": 3, "m-c": 3, "judge": 1}
    assert [(f.round, f.subject) for f in v.flips] == [(2, "It is over 20,000 km long."),
                                                       (3, "Its building took centuries.")]
    # The chain of answers: round 3 revises round 2, which revises round 1.
    c = sorted((a for a in [*result.revised_answers, *result.answers] if a.member_label == "C"), key=lambda a: a.round)
    assert [a.round for a in c] == [1, 2, 3]
    assert c[1].revised_from == c[0].answer_id and c[2].revised_from == c[1].answer_id
    # A policy of one round stops after it.
    one, srv = _run(revision_script(c_rounds=[more("It is over 20,000 km long.")]), db_url, revision={"max_revision_rounds": 1})
    assert one.verdict is not None and one.verdict.rounds == 2
    assert one.verdict.revision_stop == "stopped at the policy's maximum of 1 revision round(s), still contested"


def test_a_failed_revision_keeps_the_members_answer_and_degrades_the_run(db_url: str) -> None:
    script = revision_script()
    script["models"]["m-c"]["faults"] = [{"kind": "500", "rate": 1.0, "match": "Revision round"}]
    result, srv = _run(script, db_url)
    v = result.verdict
    assert v is not None and v.degraded and result.status == "degraded"
    assert any(r.startswith("revision by member C in round 2 missing: ") for r in v.degraded_reasons), v.degraded_reasons
    now = {a.member_label: a for a in result.answers}
    assert now["C"].round == 1 and now["C"].answer == "Yes."  # its first answer stands
    failed = [c for c in result.calls if c.node == "revise" and c.member_label == "C"]
    assert failed and all(c.status == "failed" for c in failed)  # billed as a failed call, not lost
    assert v.revision_stop == "converged: every member held its answer in round 2"


def test_fact_check_label_flip_is_recorded_and_settles_the_vote(db_url: str) -> None:
    script = members_script()
    script["models"]["m-a"]["answers"].insert(0, {"match": "Revision round", "content": revision(
        "revise", "Two members refute it.", "It is refuted.", [("Disputed, says REFUTED.", 0.7)], label="REFUTED")})
    for m in ("m-b", "m-c"):
        script["models"][m]["answers"].insert(0, {"match": "Revision round", "content": revision("hold")})
    result, srv = _run(script, db_url, f"{DISPUTED}: the bridge opened in 1901.")
    v = result.verdict
    assert v is not None and v.label == "REFUTED" and v.decided_by == "vote" and v.rounds == 2
    labels = [(f.member_label, f.before, f.after) for f in v.flips if f.kind == "label"]
    assert labels == [("A", "SUPPORTED", "REFUTED")]
    (system, user), = [p for p in srv.prompts("m-a") if "Revision round 2." in p[1]]
    assert "2 of 3 members: REFUTED" in user and "1 of 3 members: SUPPORTED" in user


def test_revision_rounds_in_the_provenance_graph_prov_and_trace(db_url: str) -> None:
    result, srv = _run(revision_script(), db_url)
    g = result.graph
    now = {a.member_label: a for a in result.answers}
    first = {a.member_label: a for a in result.revised_answers}
    for m in "ABC":
        assert g.has_edge(f"answer:{now[m].answer_id}", f"answer:{first[m].answer_id}", key="revised_from")
        assert g.nodes[f"answer:{now[m].answer_id}"]["round"] == 2
        assert g.nodes[f"answer:{first[m].answer_id}"]["in_force"] is False
        assert g.has_edge(f"answer:{now[m].answer_id}", f"call:{now[m].call_id}", key="generated_by")
    # The retracted claim is still in the graph, stated in C's first answer, in no cluster.
    old = next(c for c in first["C"].claims if c.text == VISIBLE)
    assert g.has_edge(f"claim:{old.claim_id}", f"answer:{first['C'].answer_id}", key="stated_in")
    assert not [e for e in g.out_edges(f"claim:{old.claim_id}", data="relation") if e[2] == "member_of"]
    new = next(c for c in now["C"].claims if c.text == NOT_VISIBLE)
    t = trace_claim(g, new.claim_id)
    assert t.round == 2 and t.revised_from == [f"answer:{first['C'].answer_id}"]
    assert t.call_record.node == "revise" and "revised_from" in t.describe()
    doc = to_prov(result._store.load_run(result.run_id))  # type: ignore[union-attr]
    prov_json = doc.serialize(format="json")  # PROV-JSON writes wasRevisionOf as a derivation of type Revision
    assert prov_json.count('"prov:Revision"') == 3


def test_flips_between_lists_every_change() -> None:
    from council.calls.answers import AnswerDraft
    from council.deliberation.claims import build_answer
    from council.deliberation.revision import flips_between, revision_stop

    def ans(label: str, claims: list[str], round_: int, call: str) -> Any:
        return build_answer(run_id="r", member_label="A", model="m", call_id=call, task="check", raw_text="",
                            draft=AnswerDraft(answer="x", label=label, claims=[{"text": c, "confidence": 0.5} for c in claims]),
                            round_=round_)

    n = 3  # the policy's maximum of revision rounds
    before = ans("SUPPORTED", ["One.", "Two  words."], 1, "c1")
    after = ans("REFUTED", ["two words.", "Three."], 2, "c2")
    flips = flips_between(before, after)
    assert [(f.kind, f.subject, f.before, f.after) for f in flips] == [
        ("label", "label", "SUPPORTED", "REFUTED"), ("claim", "One.", "stated", "retracted"),
        ("claim", "Three.", "absent", "stated")]
    assert {c.claim_id for c in after.claims}.isdisjoint({c.claim_id for c in before.claims})
    assert revision_stop(1, n, contested=False, changed=True) == "not needed: the vote left nothing contested"
    assert revision_stop(1, n, contested=True, changed=True) is None
    assert revision_stop(2, n, contested=True, changed=False) == "converged: every member held its answer in round 2"
    assert revision_stop(n + 1, n, contested=True, changed=True) is not None
