"""What a user's terminal shows: the real ``council`` command in a subprocess against the scripted server.

No verdict exits 1 with one line per failed member; the summary lines agree with the stored records; at
80 and 120 columns identifiers and numbers are never cut; a terminal gets live progress; a refused
request creates no database; Ctrl-C of a batch with helper processes prints one line and nothing else.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import GREAT_WALL, answer, panel_config, panel_script, to_toml
from council.store.db import Store

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("Traceback", "Task was destroyed", "Unclosed client session", "was never awaited", "Unclosed connector")
LONG = {"m-a": "atlas-reasoner-large-2026-11", "m-b": "borealis-instruct-pro-v3", "m-c": "cirrus-open-weights-70b",
        "m-spare": "dune-spare-mini-0915", "judge": "judge-ultra-adjudicator-v2"}


def _env(tmp: Path, columns: int = 250) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("COUNCIL_CONFIG", "FORCE_COLOR", "PYTHONWARNINGS"):
        env.pop(var, None)
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", COLUMNS=str(columns), NO_COLOR="1",
               COUNCIL_DB=str(tmp / "default.db"), PYTHONPATH=str(ROOT))
    return env


def _council(args: list[str], tmp: Path, columns: int = 250, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "council", *args], cwd=tmp, env=_env(tmp, columns), text=True,
                          capture_output=True, timeout=timeout)
    for noise in NOISE:
        assert noise not in done.stderr + done.stdout, done.stderr[-3000:]
    return done


def _rename(tables: dict[str, Any]) -> dict[str, Any]:
    """Config tables or a script with the standard panel's models under long names."""
    out = json.loads(json.dumps(tables))
    out["models"] = {LONG.get(k, k): v for k, v in out["models"].items()}
    for m in out["models"].values():
        if "model" in m:
            m["model"] = "openai/" + LONG.get(m["model"].removeprefix("openai/"), m["model"].removeprefix("openai/"))
    for p in out.get("policies", {}).values():
        if "allowed_models" in p:
            p["allowed_models"] = [LONG.get(x, x) for x in p["allowed_models"]]
    return out


# ------------------------------------------------------------------------------------------ no verdict

def test_ask_without_a_verdict_exits_1_with_one_line_per_failed_member(scripted, tmp_path: Path) -> None:
    always_500 = [{"kind": "500", "rate": 1.0}]
    script = panel_script()
    for name in ("m-a", "m-b", "m-c", "m-spare"):
        script["models"][name]["faults"] = always_500
    server = scripted(script)
    config = tmp_path / "council.toml"
    config.write_text(to_toml(panel_config(server.base_url)), encoding="utf-8")
    done = _council(["ask", GREAT_WALL, "--config", str(config), "--db", "council.db"], tmp_path)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    run_id = Store(str(tmp_path / "council.db")).list_runs()[0].run_id
    assert lines[0] == (f"error: no verdict (run {run_id}): quorum not met: 0 of 2 required members answered; "
                        "no member answered")
    assert len(lines) == 4
    for line, (label, model) in zip(lines[1:], [("A", "m-a"), ("B", "m-b"), ("C", "m-c")]):
        assert line.startswith(f"  member {label} ({model}): server_error: ")
    assert "NO VERDICT · 0/3 members answered" in done.stdout  # the run is still printed, honestly


def test_an_unsettled_vote_is_not_called_decided(scripted, tmp_path: Path) -> None:
    server = scripted(panel_script(judge={"answers": [{"content": {"answer": "x"}}], "faults": [{"kind": "500", "rate": 1.0}]}))
    config = tmp_path / "council.toml"
    config.write_text(to_toml(panel_config(server.base_url)), encoding="utf-8")
    done = _council(["ask", GREAT_WALL, "--config", str(config), "--db", "council.db"], tmp_path)
    assert done.returncode == 0, done.stderr
    v = Store(str(tmp_path / "council.db")).load_run(Store(str(tmp_path / "council.db")).list_runs()[0].run_id).verdict
    assert v is not None and v.decided_by == "vote" and not v.settled_by_adjudicator
    assert "NOT SETTLED by vote: the best-backed answer of an unsettled vote (the adjudicator could not rule)" in done.stdout
    assert "decided by vote" not in done.stdout
    assert (f"{v.clusters_total} claim clusters: {len(v.settled_by_vote)} settled by vote, 0 by the adjudicator, "
            f"{len(v.unresolved)} unresolved") in done.stdout


# ------------------------------------------------------------------------------------------ nothing written

@pytest.mark.parametrize("problem", ["unknown-model", "missing-key", "unknown-allowed-model"])
def test_a_config_error_creates_no_database(tmp_path: Path, problem: str) -> None:
    tables = panel_config("http://127.0.0.1:9/v1")
    if problem == "unknown-model":
        tables["models"]["m-b"] = {"model": "nosuchprovider/m-b", "quality": 70}
    elif problem == "missing-key":
        tables["models"]["m-b"]["api_key_env"] = "COUNCIL_TEST_KEY_THAT_IS_NOT_SET"
    else:
        tables["policies"]["research"]["allowed_models"].append("m-typo")
    config = tmp_path / "council.toml"
    config.write_text(to_toml(tables), encoding="utf-8")
    claims = tmp_path / "claims.jsonl"
    claims.write_text('{"claim": "Bridge 1 opened in 1901."}\n', encoding="utf-8")
    for args, code in ((["ask", GREAT_WALL], 1), (["check", str(claims)], 2)):
        done = _council([*args, "--config", str(config), "--db", "council.db"], tmp_path)
        assert done.returncode == code and done.stderr.startswith("error: "), done.stderr
        assert not (tmp_path / "council.db").exists() and not (tmp_path / "default.db").exists()


def test_a_db_in_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    done = _council(["runs", "--db", "no/such/dir/council.db"], tmp_path)
    assert done.returncode == 1
    assert done.stderr == (f"error: cannot open database {tmp_path}/no/such/dir/council.db: the directory "
                           f"{tmp_path}/no/such/dir does not exist (create it first)\n")
    assert not (tmp_path / "no").exists()


# ------------------------------------------------------------------------------------------ widths

@pytest.fixture(scope="module")
def long_names(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A run, a fact-check batch and stats on a panel whose model names are long."""
    from council.testing import ScriptedServer

    tmp = tmp_path_factory.mktemp("widths")
    script = _rename(panel_script())
    script["models"][LONG["m-c"]]["faults"] = [{"kind": "500", "rate": 1.0, "match": "Bridge 2"}]
    server = ScriptedServer(script).start()
    try:
        config = tmp / "council.toml"
        config.write_text(to_toml({**_rename(panel_config(server.base_url)), "embedding": "lexical"}), encoding="utf-8")
        claims = tmp / "claims.jsonl"
        claims.write_text("".join(json.dumps({"id": f"claim-with-a-rather-long-identifier-{i}",
                                              "claim": f"Bridge {i} opened in {1900 + i}, a claim long enough to "
                                                       "need wrapping in a narrow terminal window."}) + "\n"
                                  for i in range(1, 4)), encoding="utf-8")
        ask = _council(["ask", GREAT_WALL, "--config", str(config), "--db", "w.db"], tmp)
        assert ask.returncode == 0, ask.stderr
        batch = _council(["check", str(claims), "--config", str(config), "--db", "w.db", "--out", "out.jsonl"], tmp)
        assert batch.returncode in (0, 1), batch.stderr
        yield tmp, config
    finally:
        server.stop()


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("command", ["show", "runs", "stats", "models", "policies", "check"])
def test_identifiers_and_numbers_are_never_cut(long_names: Any, width: int, command: str) -> None:
    tmp, config = long_names
    store = Store(str(tmp / "w.db"))
    runs = store.list_runs(50)
    args = {"show": ["show", "last", "--db", "w.db"], "runs": ["runs", "--db", "w.db"],
            "stats": ["stats", "--db", "w.db"], "models": ["models", "--config", str(config)],
            "policies": ["policies"],
            "check": ["check", "claims.jsonl", "--config", str(config), "--db", "w.db"]}[command]
    done = _council(args, tmp, columns=width)
    assert done.returncode in (0, 1), done.stderr
    out = done.stdout
    for line in out.splitlines():
        assert len(line) <= width, f"{len(line)} columns: {line!r}"
    flat = " ".join(out.split())  # an identifier may not be split over two lines, so look for it whole
    ids: list[str] = []
    if command in ("show", "stats", "models"):
        ids += [m for m in LONG.values() if command != "show" or m != LONG["m-spare"]]
    if command == "show":
        run = store.load_run(runs[0].run_id)
        ids += [run.run_id] + [f"{c.cost_usd:.6f}" for c in run.calls] + [c.status for c in run.calls]
    if command == "runs":
        ids += [r.run_id for r in runs] + [f"{r.total_cost_usd:.6f}" for r in runs]
    if command == "policies":
        ids += ["reliability_min_feedback", "max_output_usd_per_mtok", "next_qualified", "when_contested"]
    if command == "check":
        results = [json.loads(x) for x in (tmp / "out.jsonl").read_text(encoding="utf-8").splitlines()]
        ids += [r["id"] for r in results if r["status"] in ("failed", "invalid", "skipped_budget") or r["contested"]]
        assert re.search(rf"total\W+{len(results)}\b", out), out  # the summary counts every row
    for ident in ids:
        assert ident in flat, f"{ident!r} is cut or missing at {width} columns:\n{out}"


# ------------------------------------------------------------------------------------------ live progress

def test_a_terminal_shows_live_progress_and_a_pipe_does_not(scripted, tmp_path: Path) -> None:
    server = scripted(panel_script())
    config = tmp_path / "council.toml"
    config.write_text(to_toml(panel_config(server.base_url)), encoding="utf-8")
    argv = [sys.executable, "-m", "council", "ask", GREAT_WALL, "--config", str(config), "--db", "council.db"]
    master, slave = pty.openpty()
    env = _env(tmp_path, 120)
    env.pop("NO_COLOR")
    p = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif p.poll() is not None:
            break
    out, _ = p.communicate(timeout=60)
    os.close(master)
    shown = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", seen).decode("utf-8", "replace")
    assert p.returncode == 0
    assert "preparing the council" in shown or "council at work" in shown
    assert "council at work" in shown and "answering" in shown  # members shown while their calls are pending
    assert "m-a" in shown and "adjudicator" in shown
    assert "verdict" in out  # the result itself goes to stdout
    piped = _council(["ask", GREAT_WALL, "--config", str(config), "--db", "council.db"], tmp_path)
    assert piped.returncode == 0 and piped.stderr == ""


# ------------------------------------------------------------------------------------------ Ctrl-C

def test_ctrl_c_of_a_batch_with_helper_processes_prints_one_line(scripted, tmp_path: Path) -> None:
    slow = {"latency": 2.0, "answers": [{"content": answer("True.", [("The claim is true.", 0.9)], "SUPPORTED")}]}
    server = scripted({"models": {k: dict(slow) for k in ("m-a", "m-b", "m-c", "m-spare", "judge")}})
    config = tmp_path / "council.toml"
    config.write_text(to_toml({**panel_config(server.base_url), "embedding": "lexical"}), encoding="utf-8")
    claims = tmp_path / "claims.jsonl"
    claims.write_text("".join(json.dumps({"claim": f"Bridge {i} opened in {1900 + i}."}) + "\n" for i in range(40)),
                      encoding="utf-8")
    p = subprocess.Popen([sys.executable, "-m", "council", "check", str(claims), "--config", str(config), "--db",
                          "b.db", "-p", "2", "-j", "4"], cwd=tmp_path, env=_env(tmp_path), text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # interrupt once councils are mid-flight
        time.sleep(0.5)
        try:
            with sqlite3.connect(tmp_path / "b.db") as conn:
                if conn.execute("SELECT COUNT(*) FROM calls WHERE status = 'ok'").fetchone()[0] >= 2:
                    break
        except sqlite3.Error:
            pass
    os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground process group
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert err == "error: interrupted (rerun the same command to resume the batch)\n"
