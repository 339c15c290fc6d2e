"""Grouping equivalent claims of different members into clusters, and linking contradictions.

The paraphrase tests run with both real embedders: WordLlama (weights from the installed wheel) and the
lexical fallback. The claim pairs are the kind members actually write, not identical strings.
"""

from __future__ import annotations

import hashlib

import pytest

from council.calls.answers import Claim
from council.deliberation.clusters import cluster_claims, numbers, polarity, strip_negation
from council.deliberation.embeddings import LexicalEmbedder, WordLlamaEmbedder
from council.ids import content_id

WORDLLAMA = WordLlamaEmbedder()
LEXICAL = LexicalEmbedder()


def claim(member: str, text: str, confidence: float = 0.8, run: str = "run-1") -> Claim:
    return Claim(claim_id=content_id(run, member, text), run_id=run, answer_id=f"ans-{member}", member_label=member,
                 model=f"m-{member.lower()}", text=text, confidence=confidence)


def groups(clusters: list) -> set[frozenset[str]]:
    return {frozenset(k.claim_ids) for k in clusters}


def cluster_of(clusters: list, c: Claim):
    (k,) = [k for k in clusters if c.claim_id in k.claim_ids]
    return k


# ------------------------------------------------------------------------------------------ polarity


@pytest.mark.parametrize(("text", "expected"), [
    ("The Great Wall is visible from orbit.", "positive"),
    ("The Great Wall is not visible from orbit.", "negative"),
    ("It cannot be seen with the naked eye.", "negative"),
    ("It isn't visible to the naked eye.", "negative"),
    ("It isn’t visible to the naked eye.", "negative"),  # typographic apostrophe
    ("Nobody has seen it unaided.", "negative"),
    ("No human has ever walked on Mars.", "negative"),
    ("It is not untrue that the wall is long.", "positive"),  # two negations cancel
    ("The claim that it is visible is false.", "negative"),
    ("The notable wall is knotted.", "positive"),  # words merely containing 'not'
])
def test_polarity(text: str, expected: str) -> None:
    assert polarity(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("The Great Wall is not visible from orbit.", "the great wall is visible from orbit ."),
    ("It cannot be seen.", "it can be seen ."),
    ("It can't be seen and won't be.", "it can be seen and will be ."),
    ("It isn’t visible.", "it is visible ."),
    ("Vaccines do not cause autism.", "vaccines do cause autism ."),
    ("The wall is 6 m wide.", "the wall is 6 m wide ."),
])
def test_strip_negation(text: str, expected: str) -> None:
    assert strip_negation(text) == expected
    assert polarity(strip_negation(text)) == "positive"


def test_numbers_ignore_formatting_not_value() -> None:
    assert numbers("It is 1,000 km long.") == numbers("It is 1000 km long.") == frozenset({"1000"})
    assert numbers("6.0 m") == numbers("6 m") == frozenset({"6"})
    assert numbers("3.10 and 007") == frozenset({"3.1", "7"})
    assert numbers("6 m") != numbers("9 m")
    assert numbers("no digits here") == frozenset()


# ---------------------------------------------------------------------------------------- paraphrases

PARAPHRASES = [
    ("The Great Wall is not visible to the naked eye from low Earth orbit.",
     "The Great Wall cannot be seen with the naked eye from low Earth orbit."),
    ("Paris is the capital of France.", "The capital of France is Paris."),
    ("Mount Everest is the highest mountain on Earth.", "The highest mountain on Earth is Mount Everest."),
    ("The Eiffel Tower is located in Paris.", "The Eiffel Tower is in Paris."),
    ("Water boils at 100 degrees Celsius at sea level.", "At sea level, water boils at 100 °C."),
]
WORDLLAMA_ONLY_PARAPHRASES = [
    # wordllama sees meaning beyond shared words; the lexical fallback does not (and need not)
    ("The Great Wall is not visible to the naked eye from low Earth orbit.",
     "It cannot be seen with the naked eye from low Earth orbit."),
    ("Humans have walked on the Moon.", "People have set foot on the Moon."),
    ("Vaccines do not cause autism.", "There is no link between vaccines and autism."),
]


@pytest.mark.parametrize("embedder", [WORDLLAMA, LEXICAL], ids=["wordllama", "lexical"])
@pytest.mark.parametrize(("a", "b"), PARAPHRASES)
def test_paraphrases_of_two_members_form_one_cluster(embedder, a: str, b: str) -> None:
    ca, cb = claim("A", a, 0.9), claim("B", b, 0.7)
    unrelated = claim("C", "Berlin is the capital of Germany.")
    clusters = cluster_claims([ca, cb, unrelated], embedder)
    assert groups(clusters) == {frozenset({ca.claim_id, cb.claim_id}), frozenset({unrelated.claim_id})}
    k = cluster_of(clusters, ca)
    assert k.member_labels == ["A", "B"]  # one fact, two supporters
    assert k.text == a  # the most confident claim represents it
    assert k.contradicts == []


@pytest.mark.parametrize(("a", "b"), WORDLLAMA_ONLY_PARAPHRASES)
def test_wordllama_groups_paraphrases_with_few_shared_words(a: str, b: str) -> None:
    ca, cb = claim("A", a), claim("B", b)
    assert groups(cluster_claims([ca, cb], WORDLLAMA)) == {frozenset({ca.claim_id, cb.claim_id})}
    # the lexical embedder keeps them apart (so the threshold is not trivially low)
    assert len(cluster_claims([ca, cb], LEXICAL)) == 2


@pytest.mark.parametrize("embedder", [WORDLLAMA, LEXICAL], ids=["wordllama", "lexical"])
def test_different_facts_stay_apart(embedder) -> None:
    claims = [
        claim("A", "Paris is the capital of France."),
        claim("B", "Berlin is the capital of Germany."),
        claim("C", "The Great Wall is only about 6 m wide."),
        claim("D", "The Eiffel Tower is located in Paris."),
    ]
    clusters = cluster_claims(claims, embedder)
    assert len(clusters) == 4
    assert all(k.contradicts == [] for k in clusters)


def test_three_members_chain_into_one_cluster() -> None:
    a = claim("A", "The Great Wall is not visible to the naked eye from low Earth orbit.")
    b = claim("B", "The Great Wall cannot be seen with the naked eye from low Earth orbit.")
    c = claim("C", "It cannot be seen with the naked eye from low Earth orbit.")
    (k,) = cluster_claims([a, b, c], WORDLLAMA)
    assert set(k.claim_ids) == {a.claim_id, b.claim_id, c.claim_id}
    assert k.member_labels == ["A", "B", "C"]
    assert k.polarity == "negative"


# --------------------------------------------------------------------------------------- contradictions

NEGATIONS = [
    ("The Eiffel Tower is located in Paris.", "The Eiffel Tower is not located in Paris."),
    ("Mount Everest is the highest mountain on Earth.", "Mount Everest is not the highest mountain on Earth."),
    ("The Great Wall is visible to the naked eye from low Earth orbit.",
     "The Great Wall is not visible to the naked eye from low Earth orbit."),
    ("Vaccines cause autism.", "Vaccines do not cause autism."),
]


@pytest.mark.parametrize("embedder", [WORDLLAMA, LEXICAL], ids=["wordllama", "lexical"])
@pytest.mark.parametrize(("pos", "neg"), NEGATIONS)
def test_a_negated_claim_contradicts_instead_of_supporting(embedder, pos: str, neg: str) -> None:
    cp, cn = claim("A", pos), claim("B", neg)
    clusters = cluster_claims([cp, cn], embedder)
    assert len(clusters) == 2  # never one cluster, though they embed almost alike
    kp, kn = cluster_of(clusters, cp), cluster_of(clusters, cn)
    assert (kp.polarity, kn.polarity) == ("positive", "negative")
    assert kp.contradicts == [kn.cluster_id]
    assert kn.contradicts == [kp.cluster_id]


def test_contradiction_links_whole_clusters() -> None:
    a = claim("A", "The Great Wall is not visible to the naked eye from low Earth orbit.", 0.9)
    b = claim("B", "It cannot be seen with the naked eye from low Earth orbit.", 0.85)
    c = claim("C", "The Great Wall is visible to the naked eye from low Earth orbit.", 0.6)
    d = claim("D", "Humans have walked on the Moon.")
    e = claim("E", "No human has ever walked on the Moon.")
    clusters = cluster_claims([a, b, c, d, e], WORDLLAMA)
    assert groups(clusters) == {frozenset({a.claim_id, b.claim_id}), frozenset({c.claim_id}),
                                frozenset({d.claim_id}), frozenset({e.claim_id})}
    kab, kc, kd, ke = (cluster_of(clusters, x) for x in (a, c, d, e))
    assert kab.contradicts == [kc.cluster_id] and kc.contradicts == [kab.cluster_id]
    assert kd.contradicts == [ke.cluster_id] and ke.contradicts == [kd.cluster_id]


@pytest.mark.parametrize("embedder", [WORDLLAMA, LEXICAL], ids=["wordllama", "lexical"])
def test_claims_with_different_numbers_never_merge(embedder) -> None:
    six = claim("A", "The wall is only about 6 m wide.")
    nine = claim("B", "The wall is only about 9 m wide.")
    six_again = claim("C", "The wall is only about 6.0 m wide.")
    # even with a threshold every pair passes, different numbers keep claims apart
    clusters = cluster_claims([six, nine, six_again], embedder, threshold=-1.0)
    assert groups(clusters) == {frozenset({six.claim_id, six_again.claim_id}), frozenset({nine.claim_id})}
    # and a negation with other numbers is not a contradiction either
    not_nine = claim("D", "The wall is not 9 m wide.")
    clusters = cluster_claims([six, not_nine], embedder, threshold=-1.0)
    assert len(clusters) == 2 and all(k.contradicts == [] for k in clusters)
    # same number written differently: one fact
    a, b = claim("A", "The wall is 1,000 km long."), claim("B", "The wall is 1000 km long.")
    assert len(cluster_claims([a, b], embedder)) == 1


# ------------------------------------------------------------------------------------------ stable ids

CLAIMS = [
    ("A", "The Great Wall is not visible to the naked eye from low Earth orbit.", 0.9),
    ("A", "The wall is only about 6 m wide.", 0.8),
    ("B", "The Great Wall cannot be seen with the naked eye from low Earth orbit.", 0.85),
    ("C", "The Great Wall is visible to the naked eye from low Earth orbit.", 0.6),
    ("C", "Paris is the capital of France.", 0.7),
]


def test_cluster_ids_are_content_hashes_of_their_claims() -> None:
    claims = [claim(m, t, c) for m, t, c in CLAIMS]
    for k in cluster_claims(claims, WORDLLAMA):
        assert k.cluster_id == hashlib.sha256("|".join(sorted(k.claim_ids)).encode()).hexdigest()[:16]


def test_same_claims_give_same_ids_whatever_their_order() -> None:
    claims = [claim(m, t, c) for m, t, c in CLAIMS]
    first = cluster_claims(claims, WORDLLAMA)
    again = cluster_claims([claim(m, t, c) for m, t, c in CLAIMS], WORDLLAMA)
    assert [(k.cluster_id, k.label, k.claim_ids, k.contradicts) for k in first] == \
           [(k.cluster_id, k.label, k.claim_ids, k.contradicts) for k in again]
    reordered = cluster_claims(list(reversed(claims)), WORDLLAMA)
    by_id = {k.cluster_id: k for k in first}
    assert set(by_id) == {k.cluster_id for k in reordered}
    for k in reordered:
        assert set(k.claim_ids) == set(by_id[k.cluster_id].claim_ids)
        assert set(k.contradicts) == set(by_id[k.cluster_id].contradicts)
    # labels follow the order claims were stated in: K1 holds the first claim given
    assert first[0].label == "K1" and claims[0].claim_id in first[0].claim_ids
    assert reordered[0].label == "K1" and claims[-1].claim_id in reordered[0].claim_ids
    assert [k.label for k in first] == [f"K{i}" for i in range(1, len(first) + 1)]


def test_an_unrelated_claim_does_not_change_other_cluster_ids() -> None:
    claims = [claim(m, t, c) for m, t, c in CLAIMS]
    before = {k.cluster_id for k in cluster_claims(claims, WORDLLAMA)}
    extra = claim("B", "Mount Everest is the highest mountain on Earth.")
    after = cluster_claims([extra, *claims], WORDLLAMA)
    assert before < {k.cluster_id for k in after}
    assert len(after) == len(before) + 1


def test_claims_of_another_run_get_other_cluster_ids() -> None:
    run1 = cluster_claims([claim(m, t, c, run="run-1") for m, t, c in CLAIMS], WORDLLAMA)
    run2 = cluster_claims([claim(m, t, c, run="run-2") for m, t, c in CLAIMS], WORDLLAMA)
    assert [k.label for k in run1] == [k.label for k in run2]
    assert not {k.cluster_id for k in run1} & {k.cluster_id for k in run2}


def test_no_claims_no_clusters() -> None:
    assert cluster_claims([], WORDLLAMA) == []


def test_new_clusters_are_unsettled() -> None:
    (k,) = cluster_claims([claim("A", "Paris is the capital of France.")], LEXICAL)
    assert (k.status, k.settled_by, k.support, k.rationale) == ("uncorroborated", "none", 0.0, "")
