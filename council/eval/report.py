"""The eval report: typed, as DataFrames, as JSON, and as a rich table."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .golden import BadGoldenRow, GoldenItem
from .outcomes import ArmOutcome
from .stats import ArmStats, TagStats, arm_stats, tag_stats
from .store import EvalInfo

__all__ = ["EvalReport", "build_report"]


class EvalReport(BaseModel):
    """What an eval found: per arm, the statistics; per item and arm, the outcome and its run."""

    info: EvalInfo
    """The stored eval: id, golden set and its hash, arms, recipes, policy versions, models."""
    arms: list[ArmStats]
    """One row per arm, in the order asked."""
    tags: list[TagStats]
    """Accuracy per arm and tag."""
    outcomes: list[ArmOutcome]
    """Every (item, arm) outcome, with its run id and call ids."""
    bad_rows: list[BadGoldenRow] = []
    """Rows of the golden file that were skipped, with their line numbers."""
    spent_usd: float
    """What the eval's runs actually cost (shared member calls paid once), earlier invocations included."""
    spent_now_usd: float
    """What this invocation spent."""
    as_if_alone_usd: float
    """The sum of the arms' costs as if each had run alone."""
    budget_exhausted: bool
    elapsed_s: float
    demo: bool = False
    """The local demonstration panel answered (no config given)."""

    def arm(self, name: str) -> ArmStats:
        for a in self.arms:
            if a.arm == name:
                return a
        raise KeyError(name)

    def arms_frame(self) -> Any:
        """The per-arm table as a pandas DataFrame (one row per arm)."""
        import pandas as pd

        return pd.DataFrame([a.model_dump() for a in self.arms]).set_index("arm")

    def outcomes_frame(self) -> Any:
        """Every (item, arm) outcome as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame([o.model_dump(exclude={"updated_at"}) for o in self.outcomes])

    def tags_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame([t.model_dump() for t in self.tags])

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def build_report(info: EvalInfo, items: list[GoldenItem], bad_rows: list[BadGoldenRow], outcomes: list[ArmOutcome], *,
                 spent_usd: float, spent_now_usd: float, budget_exhausted: bool, elapsed_s: float,
                 demo: bool = False) -> EvalReport:
    tags = {i.item_id: i.tags for i in items}
    by_arm: dict[str, list[ArmOutcome]] = {a: [] for a in info.arms}
    for o in outcomes:
        by_arm.setdefault(o.arm, []).append(o)
    stats = [arm_stats(a, by_arm[a]) for a in info.arms]
    return EvalReport(
        info=info, arms=stats, tags=[t for a in info.arms for t in tag_stats(a, by_arm[a], tags)],
        outcomes=outcomes, bad_rows=bad_rows, spent_usd=spent_usd, spent_now_usd=spent_now_usd,
        as_if_alone_usd=round(sum(s.cost_usd for s in stats), 12), budget_exhausted=budget_exhausted,
        elapsed_s=elapsed_s, demo=demo,
    )
