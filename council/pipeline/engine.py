"""The public entry points: ``Council`` (async ``aask``/``acheck``, sync ``ask``/``check``) and ``RunResult``."""

from __future__ import annotations

import asyncio
import base64
import mimetypes
import os
import sys
import uuid
import weakref
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, PrivateAttr

from council._sync import run_sync
from council.calls.answers import Claim, MemberAnswer, MemberFailure
from council.config.catalog import ModelEntry
from council.deliberation.clusters import ClaimCluster
from council.deliberation.sources import Passage
from council.config.settings import CONFIG_ENV, CouncilConfig, config_from_dict, load_config, load_recipe
from council.errors import ConfigError, CouncilError, InputError
from council.calls.records import CallRecord, StageCost, stage_costs
from council.deliberation.cascade import Escalation
from council.deliberation.review import Review
from council.store.db import Store, StoredRun, resolve_db_url
from council.store.reviews import ReviewDecision
from council.deliberation.verdict import Verdict

if TYPE_CHECKING:
    from .graph import RunRequest

__all__ = ["Council", "RunOutcome", "RunResult", "ask", "check"]

_MAX_IMAGE_BYTES = 20 * 1024 * 1024
_RUNS_IN_FLIGHT: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()
"""Runs of ``arun`` in progress per event loop (litellm's logging worker is stopped when none is left)."""
Sources = list[str | os.PathLike[str]] | None


class RunOutcome(BaseModel):
    """How one run ended, taken from the pipeline's final state (no store reads): what a caller running
    many requests needs to decide what to do next. ``council.Council.arun_request`` returns it."""

    run_id: str
    verdict: Verdict
    failures: list[MemberFailure] = []
    """Members that gave no answer, and why."""
    contested: bool
    """Something stayed contested: a cluster is unresolved, or the adjudicator was needed and gave no
    ruling."""
    out_of_budget: bool
    """A member or the adjudicator was stopped by a budget ceiling (the run's or a shared one)."""

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RunOutcome:
        """Read the outcome off the graph's final state (``verdict``, ``reconciliation``, ``adjudication``)."""
        verdict, rec, adj = state["verdict"], state["reconciliation"], state.get("adjudication")
        no_ruling = adj is None or adj.ruling is None
        out_of_budget = any(f.error_kind == "budget" for f in rec.failures) or (
            adj is not None and adj.ruling is None and adj.error_kind == "budget")
        return cls(run_id=verdict.run_id, verdict=verdict, failures=list(rec.failures),
                   contested=bool(verdict.unresolved) or bool(rec.needs_adjudicator and no_ruling),
                   out_of_budget=out_of_budget)


class RunResult(BaseModel):
    """Everything a run produced, as typed records; ``.graph`` is its provenance graph."""

    run_id: str
    task: str
    question: str
    created_at: datetime
    status: str
    member_policy: str
    """``name@version`` of the members' policy."""
    adjudication_policy: str
    panel: list[dict[str, Any]]
    """Each seat's label and fallback chain (catalog names, first choice first)."""
    verdict: Verdict | None
    clusters: list[ClaimCluster] = []
    """Groups of equivalent claims across members, with how each was settled."""
    passages: list[Passage] = []
    """The numbered passages of the sources given with the question."""
    answers: list[MemberAnswer]
    """The members' answers in force (after any revision rounds)."""
    revised_answers: list[MemberAnswer] = []
    """Answers a revision round replaced: each later answer's ``revised_from`` names one of these."""
    failures: list[MemberFailure]
    calls: list[CallRecord]
    total_cost_usd: float
    recipe: str = "council"
    """The recipe the run followed (``council recipes`` lists them)."""
    reviews: list[Review] = []
    """Peer reviews (recipes with a ``review`` stage): who reviewed whom, judgements and rankings."""
    escalations: list[Escalation] = []
    """What the cascade put to the strong tier, why, and what came of it (recipes with ``escalate``)."""
    tags: dict[str, str] = {}
    """The run's item tags."""
    decisions: list[ReviewDecision] = []
    """People's decisions on the verdict, oldest first; the last is in force. The verdict is the council's own."""
    _store: Store | None = PrivateAttr(default=None)

    @property
    def stage_costs(self) -> list[StageCost]:
        """Calls and spend of each stage (answer, review, escalate, adjudicate...), from the call records."""
        return stage_costs(self.calls)

    @property
    def claims(self) -> list[Claim]:
        return [c for a in self.answers for c in a.claims]

    @property
    def graph(self) -> Any:
        """The provenance graph (networkx MultiDiGraph), rebuilt from the store."""
        from council.provenance.graph import build_graph

        if self._store is None:
            raise CouncilError("this result is not attached to a store")
        return build_graph(self._store.load_run(self.run_id))

    def claims_frame(self) -> Any:
        """Who said what, as a pandas DataFrame (see ``council.frames.claims_frame``)."""
        from council.store.frames import claims_frame

        return claims_frame(self)

    def calls_frame(self) -> Any:
        """The run's call records (model, tokens, cost, latency, status) as a pandas DataFrame."""
        from council.store.frames import calls_frame

        return calls_frame(self.calls)

    @classmethod
    def from_stored(cls, run: StoredRun, store: Store | None = None) -> RunResult:
        result = cls(
            run_id=run.run_id, task=run.task, question=run.question, created_at=run.created_at, status=run.status,
            member_policy=run.member_policy.ref, adjudication_policy=run.adjudication_policy.ref, panel=run.panel,
            verdict=run.verdict, clusters=run.clusters, passages=run.passages, answers=run.answers, failures=run.failures, calls=run.calls,
            revised_answers=run.revised_answers,
            total_cost_usd=run.total_cost_usd, recipe=run.recipe, reviews=run.reviews, escalations=run.escalations,
            tags=run.tags, decisions=run.decisions,
        )
        result._store = store
        return result


def _image_part(path: str | os.PathLike[str]) -> Any:
    from council.calls.gateway import ImagePart, ImageURL

    p = Path(path)
    mime, _ = mimetypes.guess_type(p.name)
    if not mime or not mime.startswith("image/"):
        raise InputError(f"--image {p}: not an image file (expected .png, .jpg, .gif or .webp)")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"--image {p}: cannot read it ({exc.strerror})") from None
    if not data:
        raise InputError(f"--image {p}: the file is empty")
    if len(data) > _MAX_IMAGE_BYTES:
        raise InputError(f"--image {p}: larger than {_MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
    return ImagePart(image_url=ImageURL(url=f"data:{mime};base64,{base64.b64encode(data).decode()}"))


class Council:
    """A configured council: catalog, policies, recipe and store. Reuse one for many questions.

    ``config`` is a CouncilConfig, a path to a TOML file, a dict of the same tables, or None for the
    file named by COUNCIL_CONFIG. ``db`` (a SQLAlchemy URL or a SQLite file path, as ``--db`` takes) overrides
    the config's database. ``budget``:
    a ``Budget`` every run of this council draws from (a batch's), besides the config's per-run budget.
    ``rate_limit_share``: how many processes split the config's ``concurrent`` rate limits (a batch with
    ``processes=N`` passes N).
    """

    def __init__(
        self,
        config: CouncilConfig | str | os.PathLike[str] | dict[str, Any] | None = None,
        *,
        db: str | os.PathLike[str] | None = None,
        recipe: str | None = None,
        budget: Any = None,
        rate_limit_share: int = 1,
    ) -> None:
        self._shared_budget = budget
        self._rate_limit_share = rate_limit_share
        self._limiter: Any = None
        self.demo = False
        """True when no config was given and the local demonstration panel is used."""
        if isinstance(config, CouncilConfig):
            self.config = config
        elif isinstance(config, dict):
            self.config = config_from_dict(config)
        elif config is None and not os.environ.get(CONFIG_ENV):
            from council.config.local import local_config_tables

            self.config = config_from_dict(local_config_tables(), source="(built-in local demonstration panel)")
            self.demo = True
        else:
            self.config = load_config(config)
        self.recipe = load_recipe(recipe or self.config.recipe)
        """The deliberation recipe: ``recipe``, else the config's ``recipe``, else ``council``."""
        self._db = resolve_db_url(db, config=self.config)
        self._store: Store | None = None
        self._catalog: list[ModelEntry] | None = None
        self._graph: Any = None
        self._deps: Any = None

    @property
    def store(self) -> Store:
        """The council's database, created on first use: a request refused before it reaches the store (a
        config error, an unservable request) writes nothing."""
        if self._store is None:
            self._store = Store(self._db, lazy=True)
        return self._store

    @property
    def db_url(self) -> str:
        """The database this council writes to (a SQLAlchemy URL)."""
        return self._db

    def preflight(self, task: Literal["ask", "check"] = "ask") -> None:
        """Raise what a run of ``task`` would raise for the config alone (unknown model, no qualified model,
        an unset API key variable) without running anything or touching the store; a batch calls it before
        it records anything."""
        from council.calls.gateway import missing_key
        from council.config.qualify import qualify

        policies = self.config.policies
        names = [self.recipe.tasks[task].member_policy, self.recipe.adjudication.policy]
        for name in names:
            if name not in policies:
                raise ConfigError(f"recipe {self.recipe.name!r} names unknown policy {name!r}")
            for seat in qualify(self.catalog, policies[name]).seats:
                for entry in seat.chain:
                    var = missing_key(entry)
                    if var:
                        raise ConfigError(f"model {entry.name!r} needs the API key env var {var}, which is not set")

    @property
    def catalog(self) -> list[ModelEntry]:
        """The configured models with defaults filled from litellm's model map."""
        if self._catalog is None:
            from council.config.catalog import resolve_catalog
            from council.calls.gateway import model_defaults

            if any(e.serve for e in self.config.models):
                from council.config.local import runtime

                runtime().start(self.config.models)  # local servers load their weights while litellm imports
            self._catalog = resolve_catalog(self.config.models, model_defaults)
        return self._catalog

    @property
    def limiter(self) -> Any:
        """The ``RateLimiter`` of this council's calls (built, and its storage checked, on first use)."""
        if self._limiter is None:
            from council.calls.ratelimit import RateLimiter

            self._limiter = RateLimiter(self.config.rate_limits, self.catalog, share=self._rate_limit_share)
        return self._limiter

    def _compiled(self) -> Any:
        if self._graph is None:
            from council.deliberation.embeddings import choose_embedding
            from .graph import GraphDeps, build_graph

            catalog = self.catalog
            if any(e.serve for e in catalog):
                from council.config.local import runtime

                catalog = self._catalog = runtime().ensure(catalog)
            self._deps = GraphDeps(config=self.config, catalog=catalog, recipe=self.recipe, store=self.store,
                                   budget_usd=self.config.budget_usd, shared_budget=self._shared_budget,
                                   embedding=choose_embedding(self.config.embedding, catalog), limiter=self.limiter)
            self._graph = build_graph(self._deps)
        return self._graph

    async def arun(
        self,
        question: str,
        *,
        task: Literal["ask", "check"] = "ask",
        image: str | os.PathLike[str] | None = None,
        sources: Sources = None,
        tags: dict[str, str] | None = None,
    ) -> RunResult:
        """Run the council on ``question``; raises CouncilError subclasses for bad input or config.

        ``sources``: documents given to every member, each a file path or the text itself; they are split
        into numbered passages, and members' citations are verified against them. ``tags``: labels of
        the item (``{"risk": "high"}``), stored with the run and matched by the policy's ``review_tags``.
        """
        from .graph import RunRequest
        from council.deliberation.sources import load_sources


        question = (question or "").strip()
        if not question:
            raise InputError("the question is empty" if task == "ask" else "the claim is empty")
        request = RunRequest(
            run_id=uuid.uuid4().hex, task=task, question=question,
            image=_image_part(image) if image is not None else None, sources=load_sources(sources),
            created_at=datetime.now(UTC), tags=dict(tags or {}),
        )
        loop = asyncio.get_running_loop()
        _RUNS_IN_FLIGHT[loop] = _RUNS_IN_FLIGHT.get(loop, 0) + 1
        try:
            await self.arun_request(request)
        finally:
            _RUNS_IN_FLIGHT[loop] -= 1
            if not _RUNS_IN_FLIGHT[loop] and "council.calls.gateway" in sys.modules:
                # The caller's loop may end without cancelling what is left on it: leave nothing pending.
                await sys.modules["council.calls.gateway"].stop_logging_worker()
        return RunResult.from_stored(self.store.load_run(request.run_id), self.store)

    async def prepare(self) -> None:
        """Compile the graph (which may start local model servers) before the first request; running a
        request does it otherwise. Safe to call more than once."""
        if self._graph is None:
            # Compiling may start local model servers (seconds): keep the event loop free meanwhile.
            await asyncio.to_thread(self._compiled)

    async def arun_request(self, request: RunRequest) -> RunOutcome:
        """Run one ``RunRequest`` (its run id chosen by the caller, so a rerun resumes the same run) and
        return its typed outcome straight from the pipeline, without reading the run back from the store.
        Raises CouncilError subclasses for bad input or config; the run is marked failed if anything
        raises."""
        await self.prepare()
        try:
            state = await self._graph.ainvoke({"request": request, "outcomes": []}, context=self._deps)
        except BaseException:
            self._deps.budgets.pop(request.run_id, None)  # the run's own budget: ``record`` never ran
            self._mark_failed(request.run_id)
            raise
        return RunOutcome.from_state(state)

    def _mark_failed(self, run_id: str) -> None:
        from council.errors import RunNotFound, StoreError

        from council.store.resume import interrupt_pending

        if self._store is None or not self._store.opened:
            return  # refused before it reached the store: there is nothing to mark, and nothing to create
        try:
            # A call in flight when the run stopped was sent: its pending record stays, as interrupted.
            interrupt_pending(self.store, run_id)
            self.store.finish_run(run_id, None, "failed")
        except (RunNotFound, StoreError):
            pass  # the run never opened (bad input), or the store itself is what failed

    async def aask(self, question: str, *, image: str | os.PathLike[str] | None = None, sources: Sources = None) -> RunResult:
        """Ask the council a research question."""
        return await self.arun(question, task="ask", image=image, sources=sources)

    async def acheck(self, claim: str, *, sources: Sources = None, tags: dict[str, str] | None = None) -> RunResult:
        """Fact-check one claim: the verdict carries SUPPORTED, REFUTED or NOT_ENOUGH_INFO."""
        return await self.arun(claim, task="check", sources=sources, tags=tags)

    def ask(self, question: str, *, image: str | os.PathLike[str] | None = None, sources: Sources = None) -> RunResult:
        return run_sync(self.aask(question, image=image, sources=sources))

    def check(self, claim: str, *, sources: Sources = None, tags: dict[str, str] | None = None) -> RunResult:
        return run_sync(self.acheck(claim, sources=sources, tags=tags))

    def feedback(self, run_id: str, label: str, note: str = "") -> None:
        """Record the true label of a fact-check run; models' reliabilities learn from it."""
        self.store.add_feedback(run_id, label, note)


def ask(question: str, *, config: Any = None, db: str | os.PathLike[str] | None = None, image: str | None = None,
        sources: Sources = None, recipe: str | None = None) -> RunResult:
    """One-shot: build a Council from ``config`` and ask it ``question`` (sync) following ``recipe``."""
    return Council(config, db=db, recipe=recipe).ask(question, image=image, sources=sources)


def check(claim: str, *, config: Any = None, db: str | os.PathLike[str] | None = None, sources: Sources = None,
          recipe: str | None = None) -> RunResult:
    """One-shot: build a Council from ``config`` and fact-check ``claim`` (sync) following ``recipe``."""
    return Council(config, db=db, recipe=recipe).check(claim, sources=sources)
