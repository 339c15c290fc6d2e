"""The review queue as a spreadsheet: export flagged runs to CSV, decide in the ``label`` column, import back.

Exported columns (``EXPORT_FIELDS``): the run, where it came from (batch, line, item id), when and why it
was flagged, its tags, the claim, the council's label, answer and confidence, and three columns for the
reviewer to fill: ``label``, ``note`` and ``reviewer`` (empty ``reviewer``: the importing person).

Import reads any CSV with at least ``run_id`` and ``label`` columns. Each row is checked on its own: an
unknown run, a label outside the task's labels, a run that was not flagged (unless forced) or a row without
a reviewer is reported with its line number and recorded nowhere; every valid row is recorded. A row
whose ``label`` is empty is left undecided.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, Field

from council.errors import InputError, RunNotFound
from council.store.reviews import QueueItem, ReviewDecision, ReviewStore

__all__ = ["EXPORT_FIELDS", "ImportProblem", "ImportReport", "export_queue", "import_decisions"]

EXPORT_FIELDS = ["run_id", "batch_id", "line", "item_id", "flagged_at", "policy", "conditions", "tags", "claim",
                 "council_label", "council_answer", "council_confidence", "label", "note", "reviewer"]


class ImportProblem(BaseModel):
    """A row that was not recorded, and why."""

    line: int
    """1-based line of the CSV file where the row starts."""
    run_id: str
    reason: str


class ImportReport(BaseModel):
    """What an import recorded and what it refused."""

    recorded: list[ReviewDecision] = Field(default_factory=list)
    problems: list[ImportProblem] = Field(default_factory=list)
    undecided: int = 0
    """Rows left with an empty label."""


def _row(item: QueueItem) -> dict[str, str]:
    d = item.decision
    return {
        "run_id": item.run_id, "batch_id": item.batch_id or "", "line": "" if item.line is None else str(item.line),
        "item_id": item.item_id or "", "flagged_at": item.flagged_at.isoformat(), "policy": item.policy,
        "conditions": "; ".join(f"{r.condition}: {r.detail}" for r in item.reasons),
        "tags": ";".join(f"{k}={v}" for k, v in sorted(item.tags.items())), "claim": item.question,
        "council_label": item.council_label or "", "council_answer": item.council_answer or "",
        "council_confidence": "" if item.confidence is None else f"{item.confidence:.4f}",
        "label": d.label if d else "", "note": d.note if d else "", "reviewer": d.reviewer if d else "",
    }


def export_queue(items: Iterable[QueueItem], out: str | os.PathLike[str]) -> int:
    """Write ``items`` as CSV to ``out`` (``-``: stdout), atomically; return how many rows were written."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS, lineterminator="\n")
    w.writeheader()
    n = 0
    for item in items:
        w.writerow(_row(item))
        n += 1
    if str(out) == "-":
        sys.stdout.write(buf.getvalue())
        sys.stdout.flush()
        return n
    target = Path(out)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(buf.getvalue(), encoding="utf-8", newline="")
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"--out {target}: cannot write it ({exc.strerror or exc})") from None
    return n


def import_decisions(desk: ReviewStore, path: str | os.PathLike[str], *, reviewer: str | None,
                     force: bool = False) -> ImportReport:
    """Record the decisions of a CSV file (see the module docstring). ``reviewer``: who is importing, the
    name for rows whose ``reviewer`` cell is empty (None: such rows are problems)."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise InputError(f"{p}: the file is empty (expected a header with run_id and label columns)") from None
    except csv.Error as exc:
        raise InputError(f"{p}: line 1: {exc}") from None
    missing = [c for c in ("run_id", "label") if c not in header]
    if missing:
        raise InputError(f"{p}: the header has no {' or '.join(missing)} column (columns: {', '.join(header)})")
    report = ImportReport()
    last = reader.line_num
    while True:
        start = last + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            report.problems.append(ImportProblem(line=start, run_id="", reason=f"CSV syntax: {exc}"))
            last = reader.line_num
            continue
        last = reader.line_num
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            report.problems.append(ImportProblem(line=start, run_id="", reason=(
                f"expected {len(header)} columns, got {len(cells)}")))
            continue
        row = dict(zip(header, cells))
        run_id = row["run_id"].strip()
        if not row["label"].strip():
            report.undecided += 1
            continue
        who = row.get("reviewer", "").strip() or reviewer
        if not run_id:
            report.problems.append(ImportProblem(line=start, run_id="", reason="empty run_id"))
            continue
        if not who:
            report.problems.append(ImportProblem(line=start, run_id=run_id, reason=(
                "no reviewer: fill the reviewer column, or pass --reviewer NAME or set COUNCIL_REVIEWER")))
            continue
        try:
            report.recorded.append(desk.decide(run_id, row["label"], reviewer=who, note=row.get("note", ""),
                                               force=force))
        except (InputError, RunNotFound) as exc:  # a StoreError is the database's fault, not the row's: it raises
            report.problems.append(ImportProblem(line=start, run_id=run_id, reason=str(exc)))
    return report
