"""Evals in the store (migration ``0008_evals``): one ``evals`` row per eval, one ``eval_outcomes`` row
per (item, arm), each naming the run and the call records it rests on."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import delete, func, select
from sqlalchemy.exc import SQLAlchemyError

from council.errors import InputError, StoreError
from council.store.db import Store
from council.store.tables import CallRow, EvalOutcomeRow, EvalRow
from .outcomes import ArmOutcome

__all__ = ["EvalInfo", "EvalStore"]


class EvalInfo(BaseModel):
    """One eval as stored: what ran, on which golden set, under which policy versions."""

    eval_id: str
    created_at: datetime
    updated_at: datetime
    task: str
    golden_path: str
    golden_hash: str
    """SHA-256 of the golden file."""
    arms: list[str]
    recipes: list[str]
    policies: dict[str, str]
    """Policy name -> ``name@version`` for every policy the eval's runs follow."""
    models: list[str]
    config_source: str | None
    budget_usd: float | None
    items_total: int
    status: str = "running"
    """``running``, ``done`` or ``budget``."""


def _now() -> datetime:
    return datetime.now(UTC)


class EvalStore:
    """Eval bookkeeping over a ``Store``'s engine."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.evals = EvalRow.__table__  # type: ignore[attr-defined]
        self.outcomes = EvalOutcomeRow.__table__  # type: ignore[attr-defined]

    def _fail(self, exc: SQLAlchemyError) -> StoreError:
        return StoreError(f"eval store {self.store.safe_url}: {type(exc).__name__}")

    def register(self, info: EvalInfo) -> EvalInfo:
        """Record the eval, or find it again (same id: same golden set, arms and policies); returns it."""
        try:
            with self.store.engine.begin() as conn:
                row = conn.execute(select(self.evals).where(self.evals.c.eval_id == info.eval_id)).first()
                if row is None:
                    conn.execute(self.evals.insert().values(
                        eval_id=info.eval_id, created_at=info.created_at, updated_at=info.updated_at, task=info.task,
                        golden_path=info.golden_path, golden_hash=info.golden_hash, arms_json=json.dumps(info.arms),
                        recipes_json=json.dumps(info.recipes), policies_json=json.dumps(info.policies),
                        models_json=json.dumps(info.models), config_source=info.config_source,
                        budget_usd=info.budget_usd, items_total=info.items_total, status="running"))
                else:
                    conn.execute(self.evals.update().where(self.evals.c.eval_id == info.eval_id).values(
                        updated_at=_now(), budget_usd=info.budget_usd, status="running"))
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        return self.get(info.eval_id)

    def set_status(self, eval_id: str, status: str) -> None:
        try:
            with self.store.engine.begin() as conn:
                conn.execute(self.evals.update().where(self.evals.c.eval_id == eval_id).values(
                    status=status, updated_at=_now()))
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc

    @staticmethod
    def _info(r: Any) -> EvalInfo:
        return EvalInfo(eval_id=r.eval_id, created_at=r.created_at, updated_at=r.updated_at, task=r.task,
                        golden_path=r.golden_path, golden_hash=r.golden_hash, arms=json.loads(r.arms_json),
                        recipes=json.loads(r.recipes_json), policies=json.loads(r.policies_json),
                        models=json.loads(r.models_json), config_source=r.config_source, budget_usd=r.budget_usd,
                        items_total=r.items_total, status=r.status)

    def resolve(self, prefix: str) -> str:
        """The full id of the one eval whose id starts with ``prefix``."""
        prefix = prefix.strip()
        try:
            with self.store.engine.connect() as conn:
                ids = [r[0] for r in conn.execute(select(self.evals.c.eval_id).where(
                    self.evals.c.eval_id.startswith(prefix, autoescape=True)).limit(2))]
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        if not prefix or not ids:
            raise InputError(f"no eval with id {prefix!r} in {self.store.safe_url} (see `council evals`)")
        if len(ids) > 1:
            raise InputError(f"eval id {prefix!r} is ambiguous: give more characters")
        return ids[0]

    def get(self, eval_id: str) -> EvalInfo:
        eval_id = self.resolve(eval_id)
        with self.store.engine.connect() as conn:
            return self._info(conn.execute(select(self.evals).where(self.evals.c.eval_id == eval_id)).one())

    def list(self, limit: int = 50) -> list[EvalInfo]:
        try:
            with self.store.engine.connect() as conn:
                rows = conn.execute(select(self.evals).order_by(self.evals.c.created_at.desc()).limit(limit)).all()
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        return [self._info(r) for r in rows]

    def save(self, eval_id: str, outcomes: list[ArmOutcome]) -> None:
        """Store the outcomes of one item (all its arms) in one transaction, replacing earlier ones."""
        if not outcomes:
            return
        rows = [dict(eval_id=eval_id, item_id=o.item_id, arm=o.arm, line=o.line, status=o.status,
                     prediction=o.prediction, correct=o.correct, abstained=o.abstained, confidence=o.confidence,
                     escalated=o.escalated, cost_usd=o.cost_usd, tokens=o.tokens, latency_s=o.latency_s,
                     run_id=o.run_id, call_ids_json=json.dumps(o.call_ids), error=o.error, updated_at=_now())
                for o in outcomes]
        t = self.outcomes
        try:
            with self.store.engine.begin() as conn:
                for r in rows:
                    conn.execute(delete(t).where(t.c.eval_id == eval_id, t.c.item_id == r["item_id"],
                                                 t.c.arm == r["arm"]))
                conn.execute(t.insert(), rows)
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc

    def load(self, eval_id: str) -> list[ArmOutcome]:
        t = self.outcomes
        try:
            with self.store.engine.connect() as conn:
                rows = conn.execute(select(t).where(t.c.eval_id == eval_id).order_by(t.c.line, t.c.arm)).all()
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        return [ArmOutcome(item_id=r.item_id, arm=r.arm, line=r.line, status=r.status, prediction=r.prediction,
                           correct=r.correct, abstained=bool(r.abstained), confidence=r.confidence,
                           escalated=r.escalated, cost_usd=r.cost_usd, tokens=r.tokens, latency_s=r.latency_s,
                           run_id=r.run_id, call_ids=json.loads(r.call_ids_json), error=r.error,
                           updated_at=r.updated_at) for r in rows]

    def spent_usd(self, run_ids: list[str]) -> float:
        """What the call records of these runs cost (what the eval actually spent on them)."""
        c = CallRow.__table__  # type: ignore[attr-defined]
        total = 0.0
        try:
            with self.store.engine.connect() as conn:
                for i in range(0, len(run_ids), 500):
                    total += float(conn.execute(select(func.coalesce(func.sum(c.c.cost_usd), 0.0)).where(
                        c.c.run_id.in_(run_ids[i:i + 500]))).scalar_one())
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        return round(total, 12)

    def run_statuses(self, run_ids: list[str]) -> dict[str, str]:
        from council.store.tables import RunRow

        t = RunRow.__table__  # type: ignore[attr-defined]
        out: dict[str, str] = {}
        try:
            with self.store.engine.connect() as conn:
                for i in range(0, len(run_ids), 500):
                    out.update({r.run_id: r.status for r in conn.execute(
                        select(t.c.run_id, t.c.status).where(t.c.run_id.in_(run_ids[i:i + 500])))})
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        return out
