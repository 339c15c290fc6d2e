"""Where the shipped data lives: ``prompts/`` and ``graphs/``.

In a wheel they are inside the package (``council/prompts``); in a source checkout or an editable install
they are at the repository root beside ``council/``. Both are looked up, package first.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["data_dir"]


def data_dir(name: str) -> Path:
    """The directory of shipped data called ``name`` (``prompts`` or ``graphs``)."""
    package = Path(__file__).resolve().parent.parent  # council/ (this module is council/config/resources.py)
    for candidate in (package / name, package.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"council's {name}/ directory is missing from the installation")
