"""Golden sets: labelled questions or claims to evaluate arms on, read from JSONL or CSV, and scoring.

JSONL, one object per line::

    {"id": "tf001", "claim": "Paris is the capital of France.", "label": "SUPPORTED",
     "tags": {"risk": "low", "domain": "geography"}, "sources": ["notes/paris.txt"]}
    {"id": "q01", "question": "What is the capital of Australia?", "answer": "Canberra",
     "aliases": ["Canberra, ACT"], "tags": ["geography"]}

- ``id`` (string or integer; default: a hash of the text) must be unique.
- ``claim`` or ``question``: the text put to the arms (either name works for both tasks).
- ``--task check``: ``label`` is SUPPORTED, REFUTED or NOT_ENOUGH_INFO (any case).
- ``--task ask``: ``answer`` (the reference) and/or ``aliases`` (other accepted forms).
- ``tags``: an object (``{"risk": "high"}`` is the tag ``risk=high``) or a list of strings; the report
  breaks accuracy down by tag. ``sources``: file paths (relative to the golden file) or texts given to
  every member.

CSV: a header with ``id``, ``claim`` or ``question``, ``label`` or ``answer``, and optional ``aliases``
(a JSON array, or values separated by ``|``), ``sources`` (a JSON array or one source) and ``tags`` (a JSON
object or array, or ``key=value;key=value``).

A row that cannot be used (invalid JSON, no text, no expected label or reference, an unknown label, a
duplicate id) is a ``BadGoldenRow`` with its 1-based line number; the other rows still run. A file that
cannot be read, or holds no usable row, raises ``InputError``.

Scoring ``ask`` answers (``score_answer``): the answer and every accepted form are normalised (case,
accents, punctuation, the articles a/an/the, number words zero to twenty as digits, whitespace); the answer
is right when some accepted form occurs in it as a whole-word sequence. What this cannot score: a correct
paraphrase or synonym not listed in the aliases (scored wrong), an answer that names the right entity
only to deny it or among several candidates ("not Sydney but Canberra" matches "Sydney" too if Sydney
were an alias: scored right), units or number formats other than the ones written (``100 °C`` vs ``212
°F``). An empty answer cannot be scored at all (``correct`` is None).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from council.errors import InputError

__all__ = ["BadGoldenRow", "GoldenItem", "GoldenSet", "LABELS", "normalize_answer", "read_golden", "score_answer",
           "score_label"]

Task = Literal["check", "ask"]
LABELS = ("SUPPORTED", "REFUTED", "NOT_ENOUGH_INFO")
_NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
            "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(_NUMBERS)}
_ARTICLES = {"a", "an", "the"}
_ID_MAX = 200


class GoldenItem(BaseModel):
    """One labelled item of a golden set."""

    line: int
    """1-based line of the file where the row starts."""
    item_id: str
    """The row's id, else ``sha:`` and a hash of its text."""
    text: str
    """The claim or question put to the arms."""
    label: str | None = None
    """For ``check``: the expected label."""
    answers: list[str] = []
    """For ``ask``: the reference answer first, then its aliases."""
    tags: list[str] = []
    """``key=value`` or plain tags, for the breakdown."""
    sources: list[str] = []
    """File paths or texts given to every member."""


class BadGoldenRow(BaseModel):
    """A row that was skipped, and why."""

    line: int
    reason: str


class GoldenSet(BaseModel):
    """A golden file as read: its items, its bad rows, and the hash of its bytes."""

    path: str
    task: Task
    sha256: str
    """SHA-256 of the file's bytes (evals with the same hash ran on the same set)."""
    items: list[GoldenItem]
    bad_rows: list[BadGoldenRow]


def normalize_answer(text: str) -> list[str]:
    """Words of ``text`` after normalisation (see the module docstring)."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    words = re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", text)
    return [_NUMBER_WORDS.get(w, w) for w in words if w not in _ARTICLES]


def score_answer(prediction: str | None, accepted: list[str]) -> bool | None:
    """True when an accepted form occurs in ``prediction`` as a whole-word sequence; None when the
    prediction is empty (nothing to score)."""
    words = normalize_answer(prediction or "")
    if not words:
        return None
    n = len(words)
    for form in accepted:
        target = normalize_answer(form)
        k = len(target)
        if k and any(words[i:i + k] == target for i in range(n - k + 1)):
            return True
    return False


def score_label(prediction: str | None, expected: str) -> bool | None:
    """Exact label match; None when there is no label to score."""
    return None if not prediction else prediction.upper() == expected


def _tags(value: Any) -> list[str] | str:
    """The row's tags as strings, or a reason why they are invalid."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = value.strip()
        if value.startswith(("{", "[")):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                return "'tags' is not valid JSON"
        else:
            out = []
            for part in value.split(";"):
                if part.strip():
                    k, sep, v = part.partition("=")
                    out.append(f"{k.strip()}={v.strip()}" if sep else k.strip())
            return out
    if isinstance(value, dict):
        if not all(isinstance(v, (str, int, float, bool)) for v in value.values()):
            return "'tags' values must be strings or numbers"
        return [f"{k}={v}" for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
        return [v.strip() for v in value]
    return "'tags' must be an object, a list of strings, or key=value;key=value"


def _str_list(value: Any, name: str, split: str | None = None) -> list[str] | str:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        v = value.strip()
        if v.startswith("["):
            try:
                value = json.loads(v)
            except json.JSONDecodeError:
                return f"'{name}' is not a valid JSON array"
        else:
            return [p.strip() for p in (v.split(split) if split else [v]) if p.strip()]
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) and str(v).strip() for v in value):
        return [str(v).strip() for v in value]
    return f"'{name}' must be a list of non-empty strings"


class _Reader:
    def __init__(self, task: Task, base_dir: Path) -> None:
        self.task, self.base_dir = task, base_dir
        self.items: list[GoldenItem] = []
        self.bad: list[BadGoldenRow] = []
        self.ids: dict[str, int] = {}

    def bad_row(self, line: int, reason: str) -> None:
        self.bad.append(BadGoldenRow(line=line, reason=reason))

    def _source(self, s: str) -> str:
        if len(s) < 1024 and "\n" not in s and not os.path.isabs(s):
            candidate = self.base_dir / s
            if candidate.is_file():
                return str(candidate)
        return s

    def add(self, line: int, row: dict[str, Any]) -> None:
        text = row.get("claim") if row.get("claim") not in (None, "") else row.get("question")
        if not isinstance(text, str) or not text.strip():
            return self.bad_row(line, "no 'claim' or 'question' text")
        text = " ".join(text.split())
        raw_id = row.get("id")
        if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
            item_id = "sha:" + hashlib.sha256(text.encode()).hexdigest()[:12]
        elif isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            return self.bad_row(line, "'id' must be a string or an integer")
        else:
            item_id = str(raw_id).strip()
            if len(item_id) > _ID_MAX:
                return self.bad_row(line, f"'id' is longer than {_ID_MAX} characters")
        label: str | None = None
        answers: list[str] = []
        if self.task == "check":
            raw = row.get("label")
            if not isinstance(raw, str) or not raw.strip():
                return self.bad_row(line, "no expected 'label' (SUPPORTED, REFUTED or NOT_ENOUGH_INFO)")
            label = raw.strip().upper().replace(" ", "_")
            if label not in LABELS:
                return self.bad_row(line, f"unknown label {raw!r}: use SUPPORTED, REFUTED or NOT_ENOUGH_INFO")
        else:
            ref = row.get("answer")
            if ref is not None and not isinstance(ref, (str, int, float)):
                return self.bad_row(line, "'answer' must be a string")
            aliases = _str_list(row.get("aliases"), "aliases", split="|")
            if isinstance(aliases, str):
                return self.bad_row(line, aliases)
            answers = ([str(ref).strip()] if ref is not None and str(ref).strip() else []) + aliases
            if not answers:
                return self.bad_row(line, "no reference 'answer' or 'aliases' to score against")
            if not any(normalize_answer(a) for a in answers):
                return self.bad_row(line, "the reference answer has no letters or digits to match")
        tags = _tags(row.get("tags"))
        if isinstance(tags, str):
            return self.bad_row(line, tags)
        sources = _str_list(row.get("sources"), "sources")
        if isinstance(sources, str):
            return self.bad_row(line, sources)
        first = self.ids.get(item_id)
        if first is not None:
            return self.bad_row(line, f"duplicate id {item_id!r} (first on line {first})")
        self.ids[item_id] = line
        self.items.append(GoldenItem(line=line, item_id=item_id, text=text, label=label, answers=answers, tags=tags,
                                     sources=[self._source(s) for s in sources]))


def _read_jsonl(data: bytes, r: _Reader) -> None:
    for n, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            r.bad_row(n, "not valid UTF-8")
            continue
        except json.JSONDecodeError as exc:
            r.bad_row(n, f"invalid JSON: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(row, dict):
            r.bad_row(n, f"expected a JSON object, got {type(row).__name__}")
            continue
        r.add(n, row)


def _read_csv(data: bytes, r: _Reader, path: Path) -> None:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        names = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise InputError(f"{path}: the file is empty (a CSV golden set needs a header row)") from None
    if "claim" not in names and "question" not in names:
        raise InputError(f"{path}: the header has no 'claim' or 'question' column (columns: {', '.join(names)})")
    last = reader.line_num
    while True:
        start = last + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            r.bad_row(start, f"CSV syntax: {exc}")
            last = reader.line_num
            continue
        last = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(names):
            r.bad_row(start, f"expected {len(names)} columns ({', '.join(names)}), got {len(row)}")
            continue
        r.add(start, dict(zip(names, row)))


def read_golden(path: str | os.PathLike[str], task: Task) -> GoldenSet:
    """Read a golden set from a .jsonl/.ndjson or .csv file for ``task`` (see the module docstring)."""
    if task not in ("check", "ask"):
        raise InputError(f"unknown task {task!r}: use check or ask")
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv"):
        raise InputError(f"{p}: unknown golden-set format {suffix or '(no extension)'!r}: use .jsonl or .csv")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}") from None
    r = _Reader(task, p.parent)
    (_read_csv(data, r, p) if suffix == ".csv" else _read_jsonl(data, r))
    if not r.items:
        first = "; ".join(f"line {b.line}: {b.reason}" for b in r.bad[:3])
        raise InputError(f"{p}: no usable {task} item" + (f" ({len(r.bad)} bad rows; {first})" if r.bad else " (the file is empty)"))
    return GoldenSet(path=str(p), task=task, sha256=hashlib.sha256(data).hexdigest(), items=r.items,
                     bad_rows=sorted(r.bad, key=lambda b: b.line))
