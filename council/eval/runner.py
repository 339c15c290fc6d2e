"""Running an eval: every arm on every golden item, sharing what can be shared, resumable, within a budget.

    report = council.evaluate("golden.jsonl", task="check", arms="single:gpt-4o-mini,majority,council",
                              config="council.toml", budget_usd=5.0)

Runs: one *panel* run per item (recipe ``council``) serves the ``council``, ``majority`` and the panel's
``single:`` arms at once; each other recipe arm, and each single model that has no seat on the panel, gets
runs of its own. The eval id hashes the golden file, the task, the arms and the versions of the policies
and models involved; each run id hashes the eval, the item and the run's kind. So rerunning the same
command on the same database finds the same eval: finished items are skipped, runs that a killed process
left behind are resumed (``RunRequest.resume``: stored answers kept, pending call records marked
interrupted), and outcomes skipped for budget are redone. One process per eval at a time.

Budget: ``budget_usd`` caps what the eval's runs cost in all, earlier invocations included; every call
reserves its worst case first (``Budget``), so the cap holds with ``concurrency`` runs in flight. When it
runs out, no new item starts, and the arms of unfinished items are recorded ``skipped_budget``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from council._sync import run_sync
from council.config.settings import CouncilConfig, load_recipe
from council.errors import ConfigError, CouncilError, InputError, QualificationError, StoreError
from .arms import PANEL_RECIPE, Arm, parse_arms
from .golden import GoldenItem, GoldenSet, Task, read_golden
from .outcomes import ArmOutcome, budget_hit, outcome_for, skipped
from .files import write_report
from .report import EvalReport, build_report
from .store import EvalInfo, EvalStore

__all__ = ["aevaluate", "evaluate"]

_BUDGET = "the eval's budget ran out before this item; rerun with a larger --budget-usd"
_FINAL = ("ok", "failed")


def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


class _Kind:
    """One kind of run per item: the shared panel, a recipe arm's own, or a single model's own."""

    def __init__(self, key: str, config: CouncilConfig, recipe: str, arms: list[Arm]) -> None:
        self.key, self.config, self.recipe, self.arms = key, config, recipe, arms
        self.council: Any = None

    def bind(self, db: str | None, budget: Any) -> None:
        from council.pipeline.engine import Council

        self.council = Council(self.config, db=db, recipe=self.recipe, budget=budget)


def _single_config(config: CouncilConfig, policy_name: str, model: str) -> CouncilConfig:
    """The config with the task's member policy pinned to ``model`` alone: one seat that the vote settles."""
    p = config.policies[policy_name]
    pinned = p.model_copy(update=dict(allowed_models=(model,), panel_size=1, quorum=1, min_supporters=1,
                                      vote_settle_at=0.501))
    return config.model_copy(update={"policies": {**config.policies, policy_name: pinned}})


def _plan(base: Any, task: Task, arms: list[Arm]) -> tuple[list[_Kind], dict[str, str]]:
    """The kinds of run the arms need, and the policy versions they follow."""
    from council.config.qualify import RequestNeeds, qualify

    recipe = load_recipe(PANEL_RECIPE)
    if task not in recipe.tasks:
        raise ConfigError(f"recipe {PANEL_RECIPE!r} has no task {task!r}")
    member_policy = recipe.tasks[task].member_policy
    config = base.config
    policies: dict[str, str] = {}

    def refs(label: str, cfg: CouncilConfig, recipe_name: str) -> None:
        r = load_recipe(recipe_name)
        if task not in r.tasks:
            raise InputError(f"arm {label!r}: recipe {recipe_name!r} has no {task!r} task")
        for name in (r.tasks[task].member_policy, r.adjudication.policy):
            if name not in cfg.policies:
                raise ConfigError(f"recipe {recipe_name!r} names unknown policy {name!r}")
            policies[f"{label}/{name}"] = cfg.policies[name].ref

    try:
        seats = qualify(base.catalog, config.policies[member_policy], RequestNeeds()).seats
    except QualificationError as exc:
        raise ConfigError(f"the {PANEL_RECIPE} panel cannot be formed: {exc}") from None
    first_choices = [s.chain[0].name for s in seats]
    shared = [a for a in arms if a.kind == "majority" or (a.kind == "recipe" and a.recipe == PANEL_RECIPE)
              or (a.kind == "single" and a.model in first_choices)]
    kinds: list[_Kind] = []
    if shared:
        kinds.append(_Kind("panel", config, PANEL_RECIPE, shared))
        refs("panel", config, PANEL_RECIPE)
    for a in arms:
        if a in shared:
            continue
        if a.kind == "recipe":
            kinds.append(_Kind(f"recipe:{a.recipe}", config, a.recipe or "", [a]))
            refs(a.name, config, a.recipe or "")
            continue
        cfg = _single_config(config, member_policy, a.model or "")
        try:
            qualify(base.catalog, cfg.policies[member_policy], RequestNeeds())
        except QualificationError as exc:
            raise InputError(f"arm {a.name!r}: {a.model} does not qualify for policy {member_policy!r}: {exc}") from None
        kinds.append(_Kind(a.name, cfg, PANEL_RECIPE, [a]))
        refs(a.name, cfg, PANEL_RECIPE)
    return kinds, policies


class _Eval:
    """The workers of one invocation and their shared state."""

    def __init__(self, gs: GoldenSet, info: EvalInfo, kinds: list[_Kind], estore: EvalStore, budget: Any,
                 concurrency: int, on_progress: Callable[[int, int, float], None] | None) -> None:
        self.gs, self.info, self.kinds, self.estore, self.budget = gs, info, kinds, estore, budget
        self.concurrency, self.on_progress = concurrency, on_progress
        self.budget_exhausted = False
        self.fatal: BaseException | None = None
        self.done = 0
        self.spent_before = budget.spent_usd

    def run_id(self, item: GoldenItem, kind: _Kind) -> str:
        return _run_id(self.info.eval_id, item, kind)

    async def run(self, todo: list[GoldenItem]) -> None:
        queue: asyncio.Queue[GoldenItem] = asyncio.Queue()
        for item in todo:
            queue.put_nowait(item)
        for k in self.kinds:  # compile once before the workers start (it may start local model servers)
            await k.council.prepare()
        await asyncio.gather(*(self._worker(queue) for _ in range(self.concurrency)))
        if self.fatal is not None:
            raise self.fatal
        left = []
        while not queue.empty():
            left.append(queue.get_nowait())
        for item in left:  # never started: the budget ran out
            self.estore.save(self.info.eval_id, [skipped(item, a, None, _BUDGET) for k in self.kinds for a in k.arms])

    async def _worker(self, queue: asyncio.Queue[GoldenItem]) -> None:
        while self.fatal is None and not self._out_of_budget():
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                outcomes = [o for os_ in await asyncio.gather(*(self._kind(item, k) for k in self.kinds)) for o in os_]
            except (ConfigError, StoreError) as exc:  # every item would fail the same way: stop
                self.fatal = self.fatal or exc
                return
            self.estore.save(self.info.eval_id, outcomes)
            self.done += 1
            if self.on_progress is not None:
                self.on_progress(self.done, len(self.gs.items), self.budget.spent_usd - self.spent_before)

    def _out_of_budget(self) -> bool:
        if self.budget.remaining_usd <= 1e-12:
            self.budget_exhausted = True
        return self.budget_exhausted

    async def _kind(self, item: GoldenItem, kind: _Kind) -> list[ArmOutcome]:
        from council.deliberation.sources import load_sources
        from council.pipeline.graph import RunRequest

        store = kind.council.store
        run_id = self.run_id(item, kind)
        status = self.estore.run_statuses([run_id]).get(run_id)
        run = store.load_run(run_id) if status in ("done", "degraded") else None
        if run is None or budget_hit(run):
            try:
                request = RunRequest(run_id=run_id, task=self.gs.task, question=item.text,
                                     sources=load_sources(item.sources), created_at=datetime.now(UTC),
                                     resume=status is not None)
                await kind.council.arun_request(request)
            except (ConfigError, StoreError):
                raise
            except CouncilError as exc:
                return self._failed(item, kind, run_id, str(exc))
            except Exception as exc:  # a bug must cost one item, not the eval
                return self._failed(item, kind, run_id, f"internal error: {type(exc).__name__}: {exc}")
            run = store.load_run(run_id)
        if budget_hit(run):
            self.budget_exhausted = True
            return [skipped(item, a, run_id, _BUDGET) for a in kind.arms]
        return [outcome_for(item, a, run) for a in kind.arms]

    def _failed(self, item: GoldenItem, kind: _Kind, run_id: str, why: str) -> list[ArmOutcome]:
        from council.errors import RunNotFound

        try:
            calls = kind.council.store.load_run(run_id).calls
        except RunNotFound:
            calls = []
        return [ArmOutcome(item_id=item.item_id, arm=a.name, line=item.line, status="failed", error=why,
                           run_id=run_id if calls else None, call_ids=[c.call_id for c in calls],
                           cost_usd=round(sum(c.cost_usd for c in calls), 12),
                           tokens=sum(c.prompt_tokens + c.completion_tokens for c in calls))
                for a in kind.arms]


def _run_id(eval_id: str, item: GoldenItem, kind: _Kind) -> str:
    return _digest("eval", eval_id, item.item_id, kind.key)[:32]


def _eval_id(gs: GoldenSet, arms: list[Arm], policies: dict[str, str], catalog: list[Any]) -> str:
    models = sorted((e.name, e.model, e.local, e.quality, e.input_usd_per_mtok, e.output_usd_per_mtok,
                     json.dumps(e.params, sort_keys=True, default=str)) for e in catalog)
    blob = json.dumps({"golden": gs.sha256, "task": gs.task, "arms": [a.name for a in arms],
                       "policies": policies, "models": models}, sort_keys=True, default=str)
    return _digest(blob)[:16]


async def aevaluate(
    golden: str | os.PathLike[str],
    *,
    task: Task = "check",
    arms: str | list[str] = "majority,council",
    config: Any = None,
    db: str | None = None,
    budget_usd: float | None = None,
    concurrency: int = 4,
    out: str | os.PathLike[str] | None = None,
    on_progress: Callable[[int, int, float], None] | None = None,
) -> EvalReport:
    """Run every arm on every item of the golden file; see the module docstring. Returns the report (and
    writes it to ``out``, .html or .json). Raises ``InputError`` for a bad golden file or arm,
    ``ConfigError``/``StoreError`` when the eval cannot run at all."""
    from council.calls.budget import Budget
    from council.pipeline.engine import Council

    started = time.monotonic()
    if concurrency < 1:
        raise InputError("concurrency must be at least 1")
    if budget_usd is not None and budget_usd <= 0:
        raise InputError("the budget must be positive")
    if out is not None and os.path.splitext(str(out))[1].lower() not in (".html", ".htm", ".json"):
        raise InputError(f"--out {out}: unknown report format: use .html or .json")
    gs = read_golden(golden, task)
    base = Council(config, db=db)
    db_url = db or base.config.database
    arm_list = parse_arms(arms, [e.name for e in base.catalog])
    kinds, policies = _plan(base, task, arm_list)
    estore = EvalStore(base.store)
    now = datetime.now(UTC)
    info = estore.register(EvalInfo(
        eval_id=_eval_id(gs, arm_list, policies, base.catalog), created_at=now, updated_at=now, task=task,
        golden_path=gs.path, golden_hash=gs.sha256, arms=[a.name for a in arm_list],
        recipes=sorted({k.recipe for k in kinds}), policies=policies,
        models=sorted({e.name for e in base.catalog}), config_source=base.config.source, budget_usd=budget_usd,
        items_total=len(gs.items),
    ))
    run_ids = [_run_id(info.eval_id, i, k) for i in gs.items for k in kinds]
    # What earlier invocations of this eval spent counts against the same cap.
    spent_before = estore.spent_usd(run_ids)
    budget = Budget(budget_usd if budget_usd is not None else float("inf"), spent_usd=spent_before)
    for k in kinds:
        k.bind(db_url, budget)
    ev = _Eval(gs, info, kinds, estore, budget, concurrency, on_progress)
    stored = {(o.item_id, o.arm): o for o in estore.load(info.eval_id)}
    todo = [i for i in gs.items if any(stored.get((i.item_id, a.name)) is None
                                       or stored[(i.item_id, a.name)].status not in _FINAL for a in arm_list)]
    ev.done = len(gs.items) - len(todo)
    if budget_usd is not None and budget.remaining_usd <= 1e-12 and todo:
        ev.budget_exhausted = True
        for item in todo:
            estore.save(info.eval_id, [skipped(item, a, None, _BUDGET) for a in arm_list])
    elif todo:
        await ev.run(todo)
    estore.set_status(info.eval_id, "budget" if ev.budget_exhausted else "done")
    report = build_report(
        estore.get(info.eval_id), gs.items, gs.bad_rows, estore.load(info.eval_id),
        spent_usd=estore.spent_usd(run_ids), spent_now_usd=round(budget.spent_usd - spent_before, 12),
        budget_exhausted=ev.budget_exhausted, elapsed_s=time.monotonic() - started, demo=base.demo)
    if out is not None:
        write_report(report, out)
    return report


def evaluate(golden: str | os.PathLike[str], **kwargs: Any) -> EvalReport:
    """Sync form of ``aevaluate`` (same arguments)."""
    return run_sync(aevaluate(golden, **kwargs))
