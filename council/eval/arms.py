"""Arms: what an eval compares, and which runs they need.

- ``single:MODEL``: one catalog model alone. When MODEL is the first choice of a seat of the shared panel,
  the arm is that seat's answer in the panel run (no extra call); otherwise it gets runs of its own, with
  the task's member policy pinned to that one model (one seat, quorum 1, the vote settles it alone).
- ``majority``: the plain, unweighted majority of the shared panel's answers (a tie is NOT_ENOUGH_INFO);
  for ``ask``, the answer most members agree with (equal after normalisation, or one inside the other as
  whole words), a tie going to the first member by label.
- a recipe name (``council``, and whatever else ``graphs/NAME.toml`` defines: e.g. review, revise,
  cascade): the recipe's verdict. ``council`` *is* the shared panel run; every other recipe runs on its own.

An arm naming a model outside the catalog, or a name that is neither of these nor a recipe the config's
recipe loader knows, is an ``InputError`` that lists what is available.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from council.config.resources import data_dir
from council.config.settings import load_recipe
from council.errors import ConfigError, InputError

__all__ = ["Arm", "PANEL_RECIPE", "known_recipes", "parse_arms"]

PANEL_RECIPE = "council"
"""The recipe whose member answers the shared arms (single, majority) are read from."""


class Arm(BaseModel):
    """One arm of an eval."""

    name: str
    """As written in ``--arms``: ``single:MODEL``, ``majority`` or a recipe name."""
    kind: Literal["single", "majority", "recipe"]
    model: str | None = None
    """For ``single``: the catalog name."""
    recipe: str | None = None
    """For ``recipe``: the recipe's name."""


def known_recipes() -> list[str]:
    """Names of the recipes shipped in graphs/ that load."""
    names = []
    for path in sorted(data_dir("graphs").glob("*.toml")):
        try:
            load_recipe(path.stem)
        except ConfigError:
            continue
        names.append(path.stem)
    return names


def parse_arms(spec: str | list[str], models: list[str]) -> list[Arm]:
    """Parse ``single:m-a,majority,council`` (or a list of names) against the catalog's model names."""
    names = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    if not names:
        raise InputError("no arms: give --arms, e.g. single:MODEL,majority,council")
    arms: list[Arm] = []
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputError(f"arm {name!r} is given twice")
        seen.add(name)
        if name.startswith("single:"):
            model = name.removeprefix("single:").strip()
            if model not in models:
                raise InputError(f"arm {name!r}: no model {model!r} in the catalog (models: {', '.join(models) or 'none'})")
            arms.append(Arm(name=name, kind="single", model=model))
        elif name == "majority":
            arms.append(Arm(name=name, kind="majority"))
        else:
            try:
                load_recipe(name)
            except ConfigError as exc:
                recipes = known_recipes()
                if "not found" not in str(exc):
                    raise InputError(f"arm {name!r}: {exc}") from None
                raise InputError(
                    f"unknown arm {name!r}: use single:MODEL, majority, or a recipe "
                    f"({', '.join(recipes) or 'none installed'})") from None
            arms.append(Arm(name=name, kind="recipe", recipe=name))
    return arms
