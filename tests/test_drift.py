"""Quality drift in ``council stats``: a model that starts failing, and one that stops agreeing with the
verdicts, are flagged with their evidence (counts and Fisher's p); steady models are not."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import answer, panel_config, ruling, to_toml
from council import Council

ROOT = Path(__file__).resolve().parents[1]
N = 10


def _script() -> dict[str, Any]:
    yes = answer("Supported.", [("The claim holds.", 0.8)], label="SUPPORTED")
    no = answer("Refuted.", [("The claim does not hold.", 0.8)], label="REFUTED")
    return {"seed": 1, "models": {
        "m-a": {"answers": [{"content": yes}]},
        "m-b": {"answers": [{"match": "Recent claim", "content": no}, {"content": yes}]},
        "m-c": {"answers": [{"content": yes}], "faults": [{"kind": "500", "rate": 1.0, "match": "Recent claim"}]},
        "judge": {"answers": [{"content": ruling("Supported.", ["C1"], label="SUPPORTED")}]},
    }}


async def _run(council: Council, prefix: str) -> None:
    await asyncio.gather(*(council.acheck(f"{prefix} claim number {i}.") for i in range(N)))


@pytest.mark.timeout(900)
def test_stats_flags_a_failing_and_a_disagreeing_model(scripted: Any, tmp_path: Path, db_url: str) -> None:
    srv = scripted(_script())
    tables = panel_config(srv.base_url, fact_check={"allowed_models": ["m-a", "m-b", "m-c"], "fallback": "none", "timeout_s": 60.0},
                          adjudication={"timeout_s": 60.0})
    tables["embedding"] = "lexical"
    cfg = tmp_path / "council.toml"
    cfg.write_text(to_toml(tables), encoding="utf-8")
    council = Council(cfg, db=db_url)
    asyncio.run(_run(council, "History"))
    time.sleep(0.05)
    middle = datetime.now(UTC)
    time.sleep(0.05)
    asyncio.run(_run(council, "Recent"))
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "COLUMNS": "200", "NO_COLOR": "1"}
    args = [sys.executable, "-m", "council", "stats", "--db", db_url, "--recent", middle.strftime("%Y-%m-%dT%H:%M:%S.%f")]
    out = subprocess.run([*args, "--json"], cwd=ROOT, env=env, text=True, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    drift = json.loads(out.stdout)["drift"]
    flags = {(c["model"], c["metric"]): c for c in drift["checks"] if c["drifted"]}
    assert set(flags) == {("m-c", "failure_rate"), ("m-b", "agreement")}, flags
    fail = flags[("m-c", "failure_rate")]
    assert (fail["recent_hits"], fail["recent_n"], fail["history_hits"], fail["history_n"]) == (N, N, 0, N)
    assert fail["direction"] == "worse" and fail["p_value"] < 1e-4
    agree = flags[("m-b", "agreement")]
    assert (agree["recent_hits"], agree["history_hits"], agree["history_n"]) == (0, N, N) and agree["direction"] == "worse"
    steady = [c for c in drift["checks"] if c["model"] == "m-a"]
    assert steady and not any(c["drifted"] for c in steady)
    text = subprocess.run(args, cwd=ROOT, env=env, text=True, capture_output=True, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "quality drift" in text.stdout and "WORSE" in text.stdout and f"({N}/{N})" in text.stdout
    from council.provenance.drift import detect_drift

    quiet = detect_drift(council.store, "30d")  # everything is recent: no history to differ from
    assert quiet.checks == [] and quiet.flags == []
