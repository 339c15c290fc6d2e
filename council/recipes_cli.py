"""``council recipes`` and the recipe part of a run's output: stages, reviews, rankings, escalations, cost
per stage. Registered in ``council.cli``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["recipes", "print_stages", "revision_rows", "stage_payload"]


def recipes(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Config TOML file (its policy overrides "
                                                "are shown; default: $COUNCIL_CONFIG, else the shipped policies).",
                                                show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """List the deliberation recipes: their stages and the policy (name@version) of each stage."""
    import os

    from council.config.settings import CONFIG_ENV, config_from_dict, load_config, load_recipe, recipe_names
    from council.errors import CouncilError

    try:
        cfg = load_config(config) if (config or os.environ.get(CONFIG_ENV)) else config_from_dict({})
        rows = []
        for name in recipe_names():
            r = load_recipe(name)
            stages = [{"stage": st, "policies": [cfg.policies[p].ref if p in cfg.policies else f"{p} (missing)"
                                                  for p in pols]}
                      for st, pols in r.stage_policies().items()]
            rows.append({"name": r.name, "description": r.description, "stages": stages,
                         "default": r.name == cfg.recipe})
    except CouncilError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console()
    for row in rows:
        t = Table("stage", "policy", title=f"{row['name']}{' (default)' if row['default'] else ''}: {row['description']}",
                  title_justify="left")
        for s in row["stages"]:
            t.add_row(s["stage"], ", ".join(s["policies"]))
        con.print(t)


def stage_payload(result: Any) -> list[dict[str, Any]]:
    """Calls and cost of each stage of the run, for ``--json``."""
    return [s.model_dump() for s in result.stage_costs]


def revision_rows(result: Any) -> list[dict[str, Any]]:
    """One row per answer of a revision round: who revised or held, why, and what flipped (``--json``)."""
    v = result.verdict
    flips = v.flips if v is not None else []
    rows = []
    for a in sorted([*result.revised_answers, *result.answers], key=lambda a: (a.round, a.member_label)):
        if a.round == 1:
            continue
        mine = [f for f in flips if f.answer_id == a.answer_id]
        rows.append({"round": a.round, "member_label": a.member_label, "model": a.model, "decision": a.revision,
                     "reason": a.revision_reason, "answer_id": a.answer_id, "revised_from": a.revised_from,
                     "label": a.label, "flips": [f.model_dump(include={"kind", "subject", "before", "after"}) for f in mine]})
    return rows


def print_stages(con: Any, result: Any) -> None:
    """Reviews (with the Borda ranking), escalations and the cost of each stage, as tables."""
    from rich.table import Table

    v = result.verdict
    if result.reviews:
        rt = Table("reviewer", "model", "shown (shuffled)", "ranking", "accurate", "inaccurate", "unverifiable",
                   "status", title="peer reviews")
        for r in result.reviews:
            n = {k: sum(1 for j in r.judgements if j.verdict == k) for k in ("accurate", "inaccurate", "unverifiable")}
            rt.add_row(r.reviewer_label, r.reviewer_model, ",".join(r.shown), " > ".join(r.ranking),
                       str(n["accurate"]), str(n["inaccurate"]), str(n["unverifiable"]),
                       r.status + (f" ({r.error_kind})" if r.error_kind else ""))
        con.print(rt)
        if v is not None and v.borda:
            con.print("Borda (normalized): " + ", ".join(f"{m} {s:.2f}" for m, s in
                                                          sorted(v.borda.items(), key=lambda x: -x[1])))
    rows = revision_rows(result)
    if rows or (v is not None and v.revision_stop):
        rt = Table("round", "member", "model", "decision", "label", "flips", "reason",
                   title=f"revision rounds: {v.revision_stop if v is not None else ''}")
        for r in rows:
            flips = "; ".join(f"{f['kind']} {f['before']} → {f['after']}" + (f": {f['subject']}" if f["kind"] == "claim" else "")
                              for f in r["flips"]) or "-"
            rt.add_row(str(r["round"]), r["member_label"], r["model"], r["decision"] or "", r["label"] or "", flips,
                       r["reason"] or "")
        con.print(rt)
    if result.escalations:
        et = Table("item", "target", "why escalated", "tier", "decisions", "status", "outcome", title="escalations")
        for e in result.escalations:
            et.add_row(e.item, e.cluster_label or "label", e.reason, e.tier,
                       ", ".join(f"{m}: {d}" for m, d in e.decisions.items()), e.status,
                       f"{e.outcome} ({e.posterior_before:.2f} → {e.posterior_after:.2f})")
        con.print(et)
    st = Table("stage", "calls", "cost USD", title=f"stages of recipe {result.recipe}")
    for s in result.stage_costs:
        st.add_row(s.stage, str(s.calls), f"{s.cost_usd:.6f}")
    con.print(st)
