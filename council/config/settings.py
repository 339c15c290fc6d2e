"""Configuration: the model catalog, policy overrides, database and budget, from one TOML file.

The file is named by ``--config`` or the ``COUNCIL_CONFIG`` environment variable. API keys appear only as
the *name* of an environment variable (``api_key_env``); a key itself is never read from or written to the
file, the database, logs or exports.

    database = "sqlite:////path/to/council.db"   # optional; any SQLAlchemy URL
    budget_usd = 2.0                              # optional ceiling on one run's spend

    [models.gpt4o-mini]
    model = "openai/gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY"
    quality = 70

    [policies.research]                           # override any field of a shipped policy
    panel_size = 3
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .catalog import ModelEntry
from council.errors import ConfigError
from .policy import TaskPolicy
from .ratelimits import RateLimitConfig
from .resources import data_dir

__all__ = ["CouncilConfig", "Recipe", "load_config", "load_recipe", "recipe_names", "shipped_policies", "CONFIG_ENV",
           "STAGE_ORDER"]

CONFIG_ENV = "COUNCIL_CONFIG"


class TaskRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    member_policy: str
    """Policy the members of this task follow."""
    member_template: str
    """Prompt template (in prompts/) the members get."""
    sentence_template: str = "member_sentence.j2"
    """Prompt template for members that answer in one sentence (small chat models)."""
    completion_template: str = "member_completion.j2"
    """Prompt template for members that are base models in completion mode."""


class AdjudicationRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: str
    """Policy the adjudicator follows."""
    template: str
    """Prompt template (in prompts/) the adjudicator gets."""
    shuffle_members: bool = True
    """Show members to the adjudicator in an order shuffled per run."""
    injection_defences: bool = True
    """Defend the verdict against instructions in member and source text: flag suspicious members (their
    claims count at chance), show the adjudicator claims only, cut and datamarked, require its ruling to
    cite them (see ``council.deliberation.adjudication``). Off only to measure what the defences do."""


Stage = Literal["answer", "review", "revise", "escalate", "adjudicate", "decide", "record"]
STAGE_ORDER: tuple[str, ...] = ("answer", "review", "revise", "escalate", "adjudicate", "decide", "record")
"""The stages a recipe may combine, in the order the graph runs them (``answer``, ``decide`` and
``record`` are required)."""


class ReviewRecipe(BaseModel):
    """Peer review: each member reviews the other members' answers (never its own)."""

    model_config = ConfigDict(extra="forbid")
    policy: str = "peer_review"
    """Policy the reviewers' calls follow (graphs/policies.toml)."""
    template: str = "reviewer.j2"
    """Prompt template (in prompts/) a reviewer gets."""
    inaccurate_weight: float = Field(default=1.0, ge=0.0, le=1.0)
    """How much a claim judged inaccurate by every reviewer moves toward chance in the vote (0: not at all,
    1: to chance); a share of reviewers moves it proportionally, each reviewer weighted by its reliability."""


class RevisionRecipe(BaseModel):
    """Revision rounds: while the vote leaves something contested, members see their peers' claims
    (anonymous, with counts) and revise or hold; rounds stop at convergence or at the policy's
    ``max_revision_rounds``."""

    model_config = ConfigDict(extra="forbid")
    policy: str = "revision"
    """Policy the revision calls follow (graphs/policies.toml); its ``max_revision_rounds`` caps the rounds."""
    template: str = "reviser.j2"
    """Prompt template (in prompts/) a reviser gets."""


class CascadeRecipe(BaseModel):
    """Escalation: what the cheap panel leaves contested goes, item by item, to a stronger tier."""

    model_config = ConfigDict(extra="forbid")
    policy: str = "escalation"
    """Policy of the strong tier (graphs/policies.toml): its ``panel_size`` is how many strong models are asked."""
    template: str = "escalation.j2"
    """Prompt template (in prompts/) the strong tier gets."""


class Recipe(BaseModel):
    """A deliberation recipe (graphs/NAME.toml): the stages compiled into the LangGraph graph and the
    policy and prompt of each."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    stages: list[Stage] = Field(default_factory=lambda: ["answer", "adjudicate", "decide", "record"])
    """The stages, in graph order (see ``STAGE_ORDER``)."""
    tasks: dict[str, TaskRecipe]
    """Task kind (``ask``, ``check``) -> what its members do."""
    adjudication: AdjudicationRecipe
    review: ReviewRecipe | None = None
    """Set when ``review`` is a stage."""
    revision: RevisionRecipe | None = None
    """Set when ``revise`` is a stage."""
    cascade: CascadeRecipe | None = None
    """Set when ``escalate`` is a stage."""

    @model_validator(mode="before")
    @classmethod
    def _known_stages(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            for st in raw.get("stages", []) or []:
                if st not in STAGE_ORDER:
                    raise ValueError(f"unknown stage {st!r}: stages are {', '.join(STAGE_ORDER)}")
        return raw

    @model_validator(mode="after")
    def _stage_order(self) -> Recipe:
        order = [STAGE_ORDER.index(s) for s in self.stages]
        if order != sorted(order) or len(set(order)) != len(order):
            raise ValueError(f"stages must appear once each, in the order {', '.join(STAGE_ORDER)}")
        for required in ("answer", "decide", "record"):
            if required not in self.stages:
                raise ValueError(f"stage {required!r} is required")
        if "review" in self.stages and self.review is None:
            self.review = ReviewRecipe()
        if "revise" in self.stages and self.revision is None:
            self.revision = RevisionRecipe()
        if "escalate" in self.stages and self.cascade is None:
            self.cascade = CascadeRecipe()
        return self

    def stage_policies(self, task: str | None = None) -> dict[str, list[str]]:
        """Stage -> the policies its calls follow (``answer``: one per task, or ``task``'s alone)."""
        out: dict[str, list[str]] = {}
        for st in self.stages:
            if st == "answer":
                out[st] = [t.member_policy for k, t in self.tasks.items() if task in (None, k)]
            elif st == "review" and self.review is not None:
                out[st] = [self.review.policy]
            elif st == "revise" and self.revision is not None:
                out[st] = [self.revision.policy]
            elif st == "escalate" and self.cascade is not None:
                out[st] = [self.cascade.policy]
            elif st == "adjudicate":
                out[st] = [self.adjudication.policy]
            else:
                out[st] = []
        return out

    def check_policies(self, policies: dict[str, Any]) -> None:
        """Raise ConfigError naming the first stage whose policy is not defined."""
        for st, names in self.stage_policies().items():
            for n in names:
                if n not in policies:
                    raise ConfigError(f"recipe {self.name!r}: stage {st!r} names policy {n!r}, which is neither "
                                      f"in graphs/policies.toml nor in the config's [policies]")


class CouncilConfig(BaseModel):
    """A loaded configuration: catalog entries (unresolved), all policies, database and budget."""

    model_config = ConfigDict(extra="forbid")
    models: list[ModelEntry] = Field(default_factory=list)
    """The catalog as configured; resolve it against litellm's map with the gateway."""
    policies: dict[str, TaskPolicy]
    """Every policy: the shipped ones with the config's overrides applied."""
    database: str | None = None
    """SQLAlchemy URL of the store; None means the default SQLite file."""
    budget_usd: float | None = Field(default=None, gt=0)
    """Ceiling on one run's total spend."""
    embedding: str = "auto"
    """What clusters claims: ``auto`` (wordllama if installed, else lexical), ``wordllama``, ``lexical``,
    or the name of an embedding model in [models] (called through litellm, with call records)."""
    rate_limits: RateLimitConfig = Field(default_factory=RateLimitConfig)
    """Provider rate limits per model or provider, and the storage they are counted in (none by default)."""
    recipe: str = "council"
    """The deliberation recipe runs use unless one is given (``--recipe``, ``recipe=``): a shipped recipe's
    name (``council recipes`` lists them) or the path of a recipe .toml file."""
    source: str | None = None
    """Path of the file this config was read from."""


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None


def _first_error(exc: ValidationError, where: str) -> ConfigError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return ConfigError(f"{where}: {loc}: {err['msg']}")


def shipped_policies() -> dict[str, dict[str, Any]]:
    """The raw policy tables of graphs/policies.toml."""
    raw = _read_toml(data_dir("graphs") / "policies.toml", "policy file")
    return dict(raw.get("policies", {}))


def recipe_names() -> list[str]:
    """The shipped recipes: every graphs/*.toml but the policy file."""
    return sorted(p.stem for p in data_dir("graphs").glob("*.toml") if p.stem != "policies")


def load_recipe(name: str = "council") -> Recipe:
    """Load a deliberation recipe: a shipped one by name (graphs/NAME.toml) or a user's by path (``.toml``)."""
    if name.endswith(".toml") or "/" in name or os.sep in name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"recipe file {path} not found")
    else:
        path = data_dir("graphs") / f"{name}.toml"
        if name == "policies" or not path.is_file():
            raise ConfigError(f"unknown recipe {name!r}: the recipes are {', '.join(recipe_names())} "
                              "(or give the path of a recipe .toml file)")
    raw = _read_toml(path, "recipe")
    try:
        return Recipe.model_validate(raw.get("recipe", {}))
    except ValidationError as exc:
        raise _first_error(exc, f"recipe {path}") from None


def config_from_dict(raw: dict[str, Any], source: str | None = None) -> CouncilConfig:
    """Build a config from the parsed TOML tables (also the entry for configs made in Python)."""
    where = f"config {source}" if source else "config"
    raw = dict(raw)
    unknown = set(raw) - {"models", "policies", "database", "budget_usd", "embedding", "rate_limits", "recipe"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    models_raw = raw.get("models", {})
    if not isinstance(models_raw, dict):
        raise ConfigError(f"{where}: [models] must be a table of model entries")
    entries: list[ModelEntry] = []
    for name, table in models_raw.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: models.{name} must be a table")
        try:
            entries.append(ModelEntry.model_validate({"name": name, **table}))
        except ValidationError as exc:
            raise _first_error(exc, f"{where}: models.{name}") from None
    policies: dict[str, TaskPolicy] = {}
    overrides = raw.get("policies", {})
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: [policies] must be a table")
    base = shipped_policies()
    for name in sorted(set(base) | set(overrides)):
        if not isinstance(overrides.get(name, {}), dict):
            raise ConfigError(f"{where}: policies.{name} must be a table")
        table = {**base.get(name, {}), **overrides.get(name, {})}
        try:
            policies[name] = TaskPolicy.model_validate({"name": name, **table})
        except ValidationError as exc:
            raise _first_error(exc, f"{where}: policies.{name}") from None
    names = {e.name for e in entries}
    for name, pol in policies.items():
        unknown_models = [m for m in pol.allowed_models or () if m not in names]
        if unknown_models:  # a typo here would silently leave the policy with fewer (or no) models
            raise ConfigError(f"{where}: policies.{name}.allowed_models: {unknown_models[0]!r} is not a model of "
                              f"the catalog (known: {', '.join(sorted(names)) or 'none'})")
    rate_limits = _rate_limits(raw.get("rate_limits", {}), {e.name for e in entries}, where)
    try:
        return CouncilConfig(
            models=entries,
            rate_limits=rate_limits,
            policies=policies,
            database=raw.get("database"),
            budget_usd=raw.get("budget_usd"),
            embedding=raw.get("embedding", "auto"),
            recipe=raw.get("recipe", "council"),
            source=source,
        )
    except ValidationError as exc:
        raise _first_error(exc, where) from None


def _rate_limits(table: Any, model_names: set[str], where: str) -> RateLimitConfig:
    """The [rate_limits] table validated: positive numbers, and only models of [models]."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [rate_limits] must be a table")
    try:
        limits = RateLimitConfig.model_validate(table)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(["rate_limits", *(str(p) for p in err["loc"])])
        raise ConfigError(f"{where}: {loc}: {err['msg']}") from None
    for name in limits.models:
        if name not in model_names:
            known = ", ".join(sorted(model_names)) or "none"
            raise ConfigError(f"{where}: rate_limits.models.{name}: no model {name!r} in [models] (configured: {known})")
    return limits


def load_config(path: str | os.PathLike[str] | None = None) -> CouncilConfig:
    """Load the config file named by ``path`` or, when None, by the COUNCIL_CONFIG env var."""
    if path is None:
        path = os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"no config: pass --config FILE or set {CONFIG_ENV}")
    p = Path(path).expanduser()
    return config_from_dict(_read_toml(p, "config file"), source=str(p))
