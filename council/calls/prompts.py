"""Prompt templates: jinja2 files in ``prompts/``, one per graph node, rendered with StrictUndefined.

A template defines two blocks, ``system`` and ``user``. Its name and content hash go on every call record,
so a record says exactly which prompt produced it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from council.config.resources import data_dir
from council.ids import content_id

__all__ = ["RenderedPrompt", "render", "schema_text", "template_names"]


class RenderedPrompt(BaseModel):
    """A rendered template: the text of both blocks and the template's identity."""

    template_name: str
    template_hash: str
    """sha256 (12 hex digits) of the template source."""
    system: str
    user: str


_TAG_START = re.compile(r"<(?=/?[A-Za-z])")


def _as_data(value: Any) -> Any:
    """Every interpolated value is data: a tag-like ``<`` in it is escaped, so text written by a member or a
    source (``</member>``, ``<passage id=...>``) can never close or forge the fences a template puts around it."""
    return _TAG_START.sub("&lt;", value) if isinstance(value, str) else value


@lru_cache(maxsize=1)
def _env() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("prompts"))),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        finalize=_as_data,
    )


def template_names() -> list[str]:
    """Every template shipped in prompts/."""
    return sorted(p.name for p in data_dir("prompts").glob("*.j2"))


@lru_cache(maxsize=64)
def _hash(name: str) -> str:
    source = (data_dir("prompts") / name).read_bytes()
    return content_id(source, length=12)


@lru_cache(maxsize=64)
def schema_text(model: type[BaseModel]) -> str:
    """A pydantic model's JSON schema, compact, for a prompt that asks for JSON (cached: building a
    schema costs milliseconds, and every run of a batch asks for the same two)."""
    import json

    return json.dumps(model.model_json_schema(), separators=(",", ":"))


def render(name: str, **context: Any) -> RenderedPrompt:
    """Render both blocks of template ``name``; a missing variable raises jinja2.UndefinedError."""
    template = _env().get_template(name)
    ctx = template.new_context(context)
    blocks = {}
    for block in ("system", "user"):
        if block not in template.blocks:
            raise ValueError(f"prompt template {name} has no {{% block {block} %}}")
        blocks[block] = "".join(template.blocks[block](ctx)).strip()
    return RenderedPrompt(template_name=name, template_hash=_hash(name), **blocks)
