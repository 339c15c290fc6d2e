"""Source documents given with a question: split into numbered passages, and citations verified.

Every member sees the same passages, numbered S1, S2, ... A citation counts as verified only if its quote
occurs in the cited passage after whitespace and case normalisation (and typographic quotes and dashes
folded to ASCII): a quote that was altered, or that stands in another passage, is not verified.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from pydantic import BaseModel, Field

from council.errors import InputError
from council.ids import content_id

__all__ = ["Passage", "Source", "load_sources", "normalize", "split_passages", "verify_quote"]

_MAX_PASSAGE_CHARS = 700
_MIN_QUOTE_CHARS = 8
_FOLD = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "-", "\u00a0": " "})


class Source(BaseModel):
    """A document given with the question."""

    source_id: str
    """Content hash of the document text."""
    title: str
    """File name, or ``text N`` for a string."""
    text: str


class Passage(BaseModel):
    """A numbered piece of a source, as the members see it."""

    passage_id: str
    """The id members cite: ``S1``, ``S2``, ... in order over all sources."""
    source_id: str
    position: int
    """0-based index of the passage within its source."""
    text: str
    key: str = Field(default="")
    """Content hash of source and passage text (stable across runs)."""


def normalize(text: str) -> str:
    """Case-folded text with typographic quotes and dashes made ASCII and whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).translate(_FOLD).casefold()
    return " ".join(text.split())


def load_sources(items: list[str | os.PathLike[str]] | None) -> list[Source]:
    """Read sources: an existing file path is read as UTF-8 text; any other string is the text itself."""
    out: list[Source] = []
    for i, item in enumerate(items or [], start=1):
        title, text = f"text {i}", str(item)
        path = Path(item) if isinstance(item, os.PathLike) or (isinstance(item, str) and len(item) < 4096 and "\n" not in item) else None
        try:
            is_file = path is not None and path.is_file()
        except (OSError, ValueError):  # a one-line text longer than a file name may be (ENAMETOOLONG)
            is_file = False
        if path is not None and is_file:
            try:
                text, title = path.read_text(encoding="utf-8"), path.name
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"source {path}: cannot read it as UTF-8 text ({exc})") from None
        elif isinstance(item, os.PathLike):
            raise InputError(f"source {item}: no such file")
        if not text.strip():
            raise InputError(f"source {title} is empty")
        out.append(Source(source_id=content_id(text), title=title, text=text))
    return out


def split_passages(sources: list[Source], max_chars: int = _MAX_PASSAGE_CHARS) -> list[Passage]:
    """Split every source into passages at paragraph, then sentence, boundaries; number them S1..Sn."""
    passages: list[Passage] = []
    for src in sources:
        chunks: list[str] = []
        for para in re.split(r"\n\s*\n", src.text):
            para = " ".join(para.split())
            if not para:
                continue
            if len(para) <= max_chars:
                chunks.append(para)
                continue
            current = ""
            for sentence in re.split(r"(?<=[.!?])\s+", para):
                if current and len(current) + 1 + len(sentence) > max_chars:
                    chunks.append(current)
                    current = sentence
                else:
                    current = f"{current} {sentence}".strip()
            if current:
                chunks.append(current)
        for pos, chunk in enumerate(chunks):
            n = len(passages) + 1
            key = content_id(src.source_id, str(pos), chunk)
            passages.append(Passage(passage_id=f"S{n}", source_id=src.source_id, position=pos, text=chunk, key=key))
    return passages


def verify_quote(quote: str, passage: Passage | None) -> bool:
    """True when ``quote`` (at least a few characters) occurs in ``passage`` after normalisation."""
    if passage is None:
        return False
    q = normalize(quote).strip(" \"'.")
    if len(q) < _MIN_QUOTE_CHARS:
        return False
    return q in normalize(passage.text)
