"""Members that answer in one plain sentence (small local models), turned into a structured answer.

A model whose entry says ``answer_style = "sentence"`` gets a short prompt (prompts/member_sentence.j2, or
prompts/member_completion.j2 for a base model in completion mode) and answers in plain text. Its first
sentence becomes the answer and one claim:
- a leading verdict word (yes/no, true/false, correct/incorrect) sets a fact check's label and is taken off
  the claim (``No, X is not Y`` -> claim ``X is not Y``); without one, the words true/false/yes/no in the
  sentence decide, else NOT_ENOUGH_INFO;
- for a fact check the claim is the checked claim itself when SUPPORTED, and its negation (``It is not true
  that ...``) when REFUTED, so members that agree on the label cluster together;
- the claim's confidence is the entry's ``stated_confidence`` (the model states none).
An empty or verdict-less answer where one is needed is an InvalidAnswer, retried like invalid JSON.

A model with ``confidence_from = "logprobs"`` answers a fact check with one token; its label and confidence
come from that token's probabilities (``logprob_answer``), not from any number it writes.
"""

from __future__ import annotations

import math
import re

from .answers import AnswerDraft, ClaimDraft, FactLabel
from council.config.catalog import PlattScaling
from council.errors import InvalidAnswer

__all__ = ["logprob_answer", "sentence_answer", "token_probability"]

_LEADING = re.compile(r"^\W*(yes|no|true|false|correct|incorrect|right|wrong)\b[\s,.:;!-]*", re.IGNORECASE)
_POSITIVE = {"yes", "true", "correct", "right"}
_NEGATIVE = {"no", "false", "incorrect", "wrong"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
_MAX_CHARS = 400


def _first_sentence(text: str) -> str:
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    sentence = _SENTENCE_END.split(line, maxsplit=1)[0].strip()
    return sentence[:_MAX_CHARS]


def _label_of(sentence: str) -> tuple[FactLabel, str]:
    m = _LEADING.match(sentence)
    if m:
        word = m.group(1).lower()
        rest = sentence[m.end():].strip()
        return ("SUPPORTED" if word in _POSITIVE else "REFUTED"), rest
    words = set(re.findall(r"[a-z]+", sentence.lower()))
    pos, neg = bool(words & _POSITIVE), bool(words & _NEGATIVE)
    if pos != neg:
        return ("SUPPORTED" if pos else "REFUTED"), sentence
    return "NOT_ENOUGH_INFO", sentence


def _negate(claim: str) -> str:
    return f"It is not true that {claim.strip().rstrip('.')}."


def sentence_answer(text: str, *, task: str, question: str, confidence: float) -> AnswerDraft:
    """The structured answer for a one-sentence reply; see the module docstring."""
    sentence = _first_sentence(text)
    if len(re.sub(r"\W", "", sentence)) < 2:
        raise InvalidAnswer("is empty: no sentence to take a claim from", raw_text=text)
    label, rest = _label_of(sentence)
    if task == "check":
        if label == "SUPPORTED":
            claim = question.strip()
        elif label == "REFUTED":
            claim = _negate(question)
        else:
            claim = rest or sentence
        return AnswerDraft(answer=sentence, label=label, confidence=confidence,
                           claims=[ClaimDraft(text=claim, confidence=confidence)])
    claim = rest or sentence
    claim = claim[:1].upper() + claim[1:]
    return AnswerDraft(answer=sentence, confidence=confidence, claims=[ClaimDraft(text=claim, confidence=confidence)])


def token_probability(text: str, logprobs: dict[str, float], tokens: dict[str, FactLabel]) -> tuple[float, float]:
    """``(P(SUPPORTED), mass)`` from the first token's alternatives: the probability mass of the tokens that
    mean SUPPORTED over that of both answers (``mass``: how much of the whole distribution the two answers
    hold). InvalidAnswer when neither answer is among the alternatives."""
    mass: dict[FactLabel, float] = {"SUPPORTED": 0.0, "REFUTED": 0.0}
    for token, lp in logprobs.items():
        label = tokens.get(token.strip().lower())
        if label in mass:
            mass[label] += math.exp(lp)
    total = mass["SUPPORTED"] + mass["REFUTED"]
    if total <= 0.0:
        seen = ", ".join(repr(t) for t in list(logprobs)[:5]) or "none (the server sent no logprobs)"
        raise InvalidAnswer(f"has no answer token among the first token's alternatives ({seen})", raw_text=text)
    return mass["SUPPORTED"] / total, total


def logprob_answer(text: str, logprobs: dict[str, float], *, tokens: dict[str, FactLabel], question: str,
                   calibration: PlattScaling | None) -> AnswerDraft:
    """The fact-check answer read from the first token's probabilities (``confidence_from = "logprobs"``).

    The probability mass of the alternatives that mean SUPPORTED (``tokens``, compared stripped and
    lower-cased: ``True``, `` true``, ``TRUE`` all count) against those that mean REFUTED gives the raw
    ``P(SUPPORTED)``, which ``calibration`` maps to a calibrated one. The label is the likelier side; the
    answer's confidence is the calibrated probability of that label. The answer text states the numbers,
    so the stored answer records where its confidence came from.
    """
    raw, total = token_probability(text, logprobs, tokens)
    p = calibration.apply(raw) if calibration is not None else raw
    label: FactLabel = "SUPPORTED" if p >= 0.5 else "REFUTED"
    confidence = p if label == "SUPPORTED" else 1.0 - p
    claim = question.strip() if label == "SUPPORTED" else _negate(question)
    how = f", calibrated {p:.3f}" if calibration is not None else ""
    answer = (f"{label} with probability {confidence:.3f} (first answer token {text.strip()!r}; token "
              f"P(SUPPORTED) {raw:.3f} over a mass of {total:.3f}{how})")
    return AnswerDraft(answer=answer, label=label, confidence=confidence,
                       claims=[ClaimDraft(text=claim, confidence=confidence)])
