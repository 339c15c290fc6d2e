"""Sentence-style members: one plain sentence turned into a claim (and a label for a fact check)."""

from __future__ import annotations

import pytest

from council import Council
from council.errors import InvalidAnswer
from council.calls.plaintext import sentence_answer

from conftest import answer, ruling

CLAIM = "Paris is the capital of France."


@pytest.mark.parametrize(
    ("text", "label", "claim"),
    [
        ("True, Paris has been the capital since 987.", "SUPPORTED", CLAIM),
        ("Yes. It is.", "SUPPORTED", CLAIM),
        ("No, Paris is not the capital of France. It is Lyon.", "REFUTED", "It is not true that Paris is the capital of France."),
        (" The answer is false.", "REFUTED", "It is not true that Paris is the capital of France."),
        ("Incorrect: the capital is Lyon.", "REFUTED", "It is not true that Paris is the capital of France."),
        ("Paris is a large city.", "NOT_ENOUGH_INFO", "Paris is a large city."),
    ],
)
def test_fact_check_sentences_give_label_and_claim(text: str, label: str, claim: str) -> None:
    draft = sentence_answer(text, task="check", question=CLAIM, confidence=0.6)
    assert draft.label == label
    assert [c.text for c in draft.claims] == [claim]
    assert draft.claims[0].confidence == 0.6 and draft.confidence == 0.6
    assert draft.answer == text.strip().split(". ")[0].rstrip(".") + "." or draft.answer


def test_question_sentences_drop_the_leading_verdict_word_and_keep_polarity() -> None:
    draft = sentence_answer("No, the Great Wall is not visible from orbit. It is too narrow.", task="ask",
                            question="Is the Great Wall visible from orbit?", confidence=0.55)
    assert draft.answer == "No, the Great Wall is not visible from orbit."
    assert draft.label is None
    assert [(c.text, c.confidence) for c in draft.claims] == [("The Great Wall is not visible from orbit.", 0.55)]


@pytest.mark.parametrize("text", ["", "   \n  ", "...", "},{"])
def test_an_empty_answer_is_invalid(text: str) -> None:
    with pytest.raises(InvalidAnswer, match="empty"):
        sentence_answer(text, task="check", question=CLAIM, confidence=0.6)


def _sentence_config(base_url: str) -> dict:
    def entry(name: str, **extra: object) -> dict:
        return {"model": f"openai/{name}", "api_base": base_url, "quality": 50, "provider": f"p-{name}",
                "input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.2, **extra}

    return {
        "embedding": "lexical",
        "models": {
            "chatty": entry("chatty", answer_style="sentence", stated_confidence=0.65),
            "base": {**entry("base", answer_style="sentence", prompt_style="completion"),
                     "model": "text-completion-openai/base"},
            "structured": entry("structured"),
            "judge": entry("judge", quality=90),
        },
        "policies": {
            "fact_check": {"allowed_models": ["chatty", "base", "structured"], "fallback": "none", "timeout_s": 5.0},
            "adjudication": {"allowed_models": ["judge", "chatty"], "timeout_s": 5.0},
        },
    }


def test_a_council_mixes_sentence_completion_and_structured_members(scripted, db_url) -> None:
    srv = scripted({"models": {
        "chatty": {"answers": [{"content": "True, Paris is the capital."}]},
        "base": {"answers": [{"content": " true, it is the capital"}]},
        "structured": {"answers": [{"content": answer("Yes.", [(CLAIM, 0.9)], label="SUPPORTED")}]},
        "judge": {"answers": [{"content": ruling("Paris is the capital of France.", ["C1"], label="SUPPORTED")}]},
    }})
    result = Council(_sentence_config(srv.base_url), db=db_url).check(CLAIM)
    by_model = {a.model: a for a in result.answers}
    assert set(by_model) == {"chatty", "base", "structured"}
    assert by_model["chatty"].label == by_model["base"].label == "SUPPORTED"
    assert [c.text for c in by_model["chatty"].claims] == [CLAIM]
    assert by_model["chatty"].claims[0].confidence == 0.65
    # The completion-mode member went to /v1/completions with the completion template, the others to chat.
    records = {r.model: r for r in result.calls}
    assert records["base"].template_name == "member_completion.j2"
    assert records["chatty"].template_name == "member_sentence.j2"
    assert records["structured"].template_name == "member.j2"
    asked = {r.model: r.question for r in srv.requests}
    assert asked["base"].startswith("Statement: Paris is the capital of France.")
    # All three say the same thing: one cluster, accepted by vote, no adjudicator call.
    assert len(result.clusters) == 1 and result.clusters[0].status == "accepted"
    assert result.verdict.decided_by == "vote" and result.verdict.label == "SUPPORTED"
    assert "judge" not in {r.model for r in srv.requests}


def test_a_sentence_model_cannot_adjudicate(scripted, db_url) -> None:
    config = _sentence_config("http://127.0.0.1:9/v1")
    council = Council(config, db=db_url)
    from council.config.qualify import exclusion_reason, RequestNeeds

    chatty = next(e for e in council.catalog if e.name == "chatty")
    reason = exclusion_reason(chatty, council.config.policies["adjudication"], RequestNeeds())
    assert reason == "answers in sentence style; policy 'adjudication' needs structured"
