"""Reading a batch of claims: JSONL or CSV in, typed items and numbered bad rows out.

JSONL: one JSON object per line, ``{"claim": "...", "id": "c1", "context": "...", "sources": [...]}``;
only ``claim`` is required. CSV: a header row naming a ``claim`` column, and optionally ``id``,
``context`` and ``sources`` columns (a ``sources`` cell is a JSON array of strings, or one source). A
source is a file path (relative paths are looked up next to the input file first) or the text itself;
``context`` is text given to every member as one more source.

A row that cannot be checked (invalid JSON, not an object, no claim, an empty or oversized claim, a
duplicate id or a duplicate claim, a row with the wrong number of CSV fields) becomes a ``BadRow``
carrying its 1-based line number; the rest of the batch runs. Every input line is accounted for: it is
blank, part of a parsed row (a quoted CSV field may span lines), or named by a bad row. A CSV quote left
open (to the end of the file, or across lines that then do not make one row) makes its first line a bad
row naming the lines it would have swallowed, and the lines after it are read as rows of their own.
Problems with the file as a whole (cannot be read, unknown extension, a CSV without a ``claim`` column,
no claims at all) raise ``InputError``.

Identity: an item's key is its ``id`` when given, else a hash of its content, so the same claim keeps
its key across reruns. The batch id hashes the task with the whole file's bytes: rerunning the same
command on the same file finds the same batch (``batch_id=`` names one explicitly, e.g. for a file that
grows between runs).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from council.store.queue import ClaimItem
from council.errors import InputError

__all__ = ["BadRow", "BatchInput", "ClaimItem", "DEFAULT_MAX_CLAIM_CHARS", "read_claims"]

DEFAULT_MAX_CLAIM_CHARS = 4000
_ID_MAX = 200
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\n|\r)|[^\r\n]+$")


class BadRow(BaseModel):
    """A row that was skipped, and why."""

    line: int
    reason: str
    claim_id: str | None = None


class BatchInput(BaseModel):
    """What a batch file held: the items, the bad rows, and the batch id derived from the content."""

    source: str
    """The file's path, or ``(list)`` for in-memory input."""
    batch_id: str
    items: list[ClaimItem]
    bad_rows: list[BadRow]


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


class _Collector:
    """Validates rows one by one, tracking ids and contents already seen."""

    def __init__(self, max_chars: int, base_dir: Path | None) -> None:
        self.max_chars = max_chars
        self.base_dir = base_dir
        self.items: list[ClaimItem] = []
        self.bad: list[BadRow] = []
        self._keys: dict[str, int] = {}

    def bad_row(self, line: int, reason: str, claim_id: str | None = None) -> None:
        self.bad.append(BadRow(line=line, reason=reason, claim_id=claim_id))

    def _source(self, s: str) -> str:
        # A short one-line string naming a file next to the input means that file.
        if self.base_dir is not None and len(s) < 1024 and "\n" not in s and not os.path.isabs(s):
            try:
                candidate = self.base_dir / s
                if candidate.is_file():
                    return str(candidate)
            except (OSError, ValueError):
                pass
        return s

    def add(self, line: int, row: dict[str, Any]) -> None:
        raw_id = row.get("id")
        claim_id: str | None = None
        if raw_id is not None and not (isinstance(raw_id, str) and not raw_id.strip()):
            if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
                return self.bad_row(line, "'id' must be a string or an integer")
            claim_id = str(raw_id).strip()
            if len(claim_id) > _ID_MAX:
                return self.bad_row(line, f"'id' is longer than {_ID_MAX} characters")
        if "claim" not in row or row["claim"] is None:
            return self.bad_row(line, "missing 'claim'", claim_id)
        claim = row["claim"]
        if not isinstance(claim, str):
            return self.bad_row(line, "'claim' must be a string", claim_id)
        claim = claim.strip()
        if not claim:
            return self.bad_row(line, "empty claim", claim_id)
        if len(claim) > self.max_chars:
            return self.bad_row(line, f"claim is {len(claim)} characters, over the limit of {self.max_chars}", claim_id)
        context = row.get("context")
        if context is not None and not isinstance(context, str):
            return self.bad_row(line, "'context' must be a string", claim_id)
        context = context.strip() if context and context.strip() else None
        sources = row.get("sources")
        if sources is None or sources == "":
            sources = []
        elif isinstance(sources, str):
            sources = [sources]
        if not isinstance(sources, list) or not all(isinstance(s, str) and s.strip() for s in sources):
            return self.bad_row(line, "'sources' must be a list of non-empty strings (file paths or texts)", claim_id)
        sources = [self._source(s) for s in sources]
        key = f"id:{claim_id}" if claim_id is not None else f"sha:{_digest(claim, context or '', *sources)}"
        first = self._keys.get(key)
        if first is not None:
            what = f"duplicate id {claim_id!r}" if claim_id is not None else "duplicate claim"
            return self.bad_row(line, f"{what} (first on line {first})", claim_id)
        self._keys[key] = line
        self.items.append(ClaimItem(line=line, key=key, claim_id=claim_id, claim=claim, context=context,
                                    sources=sources))


def _read_jsonl(data: bytes, c: _Collector) -> None:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            c.bad_row(n, "not valid UTF-8")
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            c.bad_row(n, f"invalid JSON: {exc.msg} at column {exc.colno}")
            continue
        if isinstance(row, str):
            row = {"claim": row}
        if not isinstance(row, dict):
            c.bad_row(n, f"expected a JSON object, got {type(row).__name__}")
            continue
        c.add(n, row)


def _sources_cell(cell: str) -> Any:
    cell = cell.strip()
    if cell.startswith("["):
        try:
            return json.loads(cell)
        except json.JSONDecodeError:
            return None  # reported as a bad 'sources' value
    return cell


class _Lines:
    """The physical lines of a CSV text, fed to ``csv.reader`` one at a time from any line, so that each
    record's first and last line are known (a quoted field may span lines)."""

    def __init__(self, text: str) -> None:
        self.lines = _LINE.findall(text)
        self.pos = 0  # index of the next line to feed

    def _feed(self) -> Iterator[str]:
        while self.pos < len(self.lines):
            self.pos += 1
            yield self.lines[self.pos - 1]

    def reader(self, start: int, delimiter: str) -> Any:
        """A csv reader over the lines from index ``start`` (0-based)."""
        self.pos = start
        return csv.reader(self._feed(), delimiter=delimiter, strict=True)


def _unclosed(exc: csv.Error) -> bool:
    return "unexpected end of data" in str(exc)


def _read_csv(data: bytes, c: _Collector, path: str, delimiter: str) -> None:
    """Every line ends up in a parsed row, a bad row naming its lines, or blank. A row whose quote is left
    open (to the end of the file, or until a line that does not fit) is a bad row naming the lines it would
    have swallowed, and the lines after its first are read again as rows of their own."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    src = _Lines(text)
    reader = src.reader(0, delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{path}: no claims: the file is empty (a CSV batch needs a header row with a "
                         "'claim' column)") from None
    except csv.Error as exc:
        raise InputError(f"{path}: the header row (line 1): {exc}") from None
    names = [h.strip().lower() for h in header]
    if "claim" not in names:
        raise InputError(f"{path}: the header has no 'claim' column (columns: {', '.join(names) or 'none'})")
    while True:
        first = src.pos + 1  # 1-based line the next record starts on
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            last = src.pos
            if _unclosed(exc):
                swallowed = f", swallowing lines {first}-{last}" if last > first else ""
                c.bad_row(first, f"a quote opened on this line is never closed (it runs to the end of the file"
                                 f"{swallowed}); skipped" + (", and the lines after it read as rows of their own"
                                                            if last > first else ""))
            else:
                span = f" (the row spans lines {first}-{last})" if last > first else ""
                c.bad_row(first, f"CSV syntax: {exc}{span}; skipped" + (", and the lines after it read as rows "
                                                                         "of their own" if last > first else ""))
            reader = src.reader(first, delimiter)  # index ``first`` is the line after the bad one
            continue
        last = src.pos
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            if last > first:  # an unbalanced quote joined lines that are rows of their own
                c.bad_row(first, f"a quote opened on this line joins lines {first}-{last} into one row of "
                                 f"{len(row)} columns, not {len(names)} ({', '.join(names)}); skipped, and the "
                                 "lines after it read as rows of their own")
                reader = src.reader(first, delimiter)
            else:
                c.bad_row(first, f"expected {len(names)} columns ({', '.join(names)}), got {len(row)}")
            continue
        fields: dict[str, Any] = dict(zip(names, row))
        if "sources" in fields:
            fields["sources"] = _sources_cell(fields["sources"])
        c.add(first, fields)


def read_claims(
    claims: str | os.PathLike[str] | Iterable[str | dict[str, Any]],
    *,
    task: str = "check",
    max_claim_chars: int = DEFAULT_MAX_CLAIM_CHARS,
    batch_id: str | None = None,
) -> BatchInput:
    """Read a batch from a .jsonl/.ndjson/.csv/.tsv file, or from an iterable of claims (strings, or
    dicts with the JSONL fields); see the module docstring."""
    if max_claim_chars < 1:
        raise InputError("the claim size limit must be at least 1 character")
    if isinstance(claims, (str, os.PathLike)):
        path = Path(claims)
        suffix = path.suffix.lower()
        if suffix not in (".jsonl", ".ndjson", ".csv", ".tsv"):
            raise InputError(f"{path}: unknown batch format {suffix or '(no extension)'!r}: use .jsonl or .csv")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
        c = _Collector(max_claim_chars, path.parent)
        if suffix in (".csv", ".tsv"):
            _read_csv(data, c, str(path), "\t" if suffix == ".tsv" else ",")
        else:
            _read_jsonl(data, c)
        content = hashlib.sha256(data).hexdigest()
        source = str(path)
    else:
        c = _Collector(max_claim_chars, None)
        h = hashlib.sha256()
        for n, row in enumerate(claims, start=1):
            if isinstance(row, str):
                row = {"claim": row}
            if not isinstance(row, dict):
                c.bad_row(n, f"expected a string or a dict, got {type(row).__name__}")
                continue
            h.update(json.dumps(row, sort_keys=True, default=str).encode() + b"\n")
            c.add(n, row)
        content, source, data = h.hexdigest(), "(list)", b""
    if not c.items and not c.bad:
        if source == "(list)":
            what = "the list is empty"
        elif Path(source).suffix.lower() in (".csv", ".tsv"):
            what = "only a header row"
        else:
            what = "the file is empty" if not data.strip() else "only blank lines"
        raise InputError(f"{source}: no claims ({what})")
    bid = batch_id.strip() if batch_id else _digest(task, content)
    if not bid or len(bid) > _ID_MAX:
        raise InputError(f"a batch id must be 1 to {_ID_MAX} characters")
    return BatchInput(source=source, batch_id=bid, items=c.items, bad_rows=sorted(c.bad, key=lambda b: b.line))
