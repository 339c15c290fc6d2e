"""Reports on disk: JSON (read back by ``council eval compare``) or a self-contained HTML page."""

from __future__ import annotations

import json
import os
from pathlib import Path

from council.errors import InputError
from .html import render_html
from .report import EvalReport

__all__ = ["read_report", "write_report"]


def write_report(report: EvalReport, path: str | os.PathLike[str]) -> Path:
    """Write the report as JSON (``.json``) or as a self-contained HTML page with its figures (``.html``)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".json":
        text = report.to_json()
    elif suffix in (".html", ".htm"):
        text = render_html(report)
    else:
        raise InputError(f"--out {p}: unknown report format {suffix or '(no extension)'!r}: use .html or .json")
    try:
        p.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--out {p}: cannot write it ({exc.strerror or exc})") from None
    return p


def read_report(path: str | os.PathLike[str]) -> EvalReport:
    """Read a JSON report written by ``write_report``."""
    try:
        return EvalReport.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable eval report ({exc})") from None
