"""Negation: a claim's polarity, and its text with negations removed ("cannot be seen" -> "can be seen").

Clustering decides sameness on negation-stripped texts and contradiction on polarity; embeddings embed the
stripped forms too. Idioms built from negation words that do not negate ("no doubt", "not only") do not
count.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["polarity", "strip_negation"]

_NEGATIONS = {
    "not", "no", "never", "cannot", "nor", "neither", "none", "nobody", "nothing", "nowhere",
    "false", "untrue", "isn't", "aren't", "wasn't", "weren't", "doesn't", "don't", "didn't", "won't",
    "wouldn't", "can't", "couldn't", "shouldn't", "hasn't", "haven't", "hadn't", "mustn't", "isnt",
    "arent", "wasnt", "werent", "doesnt", "dont", "didnt", "wont", "cant", "couldnt", "hasnt", "havent",
}
_UNNEGATE = {"cannot": "can", "can't": "can", "cant": "can", "won't": "will", "wont": "will"}
_TOKEN = re.compile(r"[A-Za-z']+|[^A-Za-z'\s]+")


def _words(text: str) -> list[str]:
    return [t for t in _TOKEN.findall(text.lower().replace("’", "'")) if t.strip()]


# Phrases built from negation words that do not negate the claim ("there is no doubt that X" asserts X).
_NOT_NEGATING = re.compile(
    r"\b(no doubt|without (a )?doubt|not only|not just|nothing but|no less than|no fewer than|not least)\b",
    re.IGNORECASE,
)


def polarity(text: str) -> Literal["positive", "negative"]:
    """Negative when the claim carries an odd number of negations (idioms such as "no doubt" or
    "not only ... but also" do not count)."""
    neg = sum(1 for w in _words(_NOT_NEGATING.sub(" ", text)) if w in _NEGATIONS or w.endswith("n't"))
    return "negative" if neg % 2 else "positive"


def strip_negation(text: str) -> str:
    """The claim with its negations removed ("cannot be seen" -> "can be seen")."""
    out = []
    for w in _words(_NOT_NEGATING.sub(" ", text)):
        if w in _UNNEGATE:
            out.append(_UNNEGATE[w])
        elif w.endswith("n't"):
            out.append(w[:-3])
        elif w not in _NEGATIONS:
            out.append(w)
    return " ".join(out)
