"""The warm local panel (``council local start``): which commands go to it, what the worker does with one,
and, end to end on the real tiny panel, ``council ask`` answered by a running worker."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from council import warm
from support import cli_env, finish, start


@pytest.mark.parametrize(("argv", "environ", "expected"), [
    (["ask", "Q?"], {}, True),
    (["check-one", "A claim.", "--json"], {"COUNCIL_DB": "x.db"}, True),
    (["check", "claims.jsonl"], {}, False),  # a batch runs in its own processes
    (["runs"], {}, False),
    ([], {}, False),
    (["ask", "Q?", "--config", "c.toml"], {}, False),
    (["ask", "Q?", "-c", "c.toml"], {}, False),
    (["ask", "Q?", "--config=c.toml"], {}, False),
    (["ask", "--help"], {}, False),
    (["ask", "Q?"], {"COUNCIL_CONFIG": "c.toml"}, False),
    (["ask", "Q?"], {"COUNCIL_WARM": "0"}, False),
])
def test_only_local_panel_asks_and_checks_are_forwarded(argv: list[str], environ: dict[str, str],
                                                        expected: bool) -> None:
    assert warm.wants_worker(argv, environ) is expected


def test_the_socket_path_is_configurable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COUNCIL_WARM_SOCKET", str(tmp_path / "w.sock"))
    assert warm.socket_path() == tmp_path / "w.sock"
    monkeypatch.delenv("COUNCIL_WARM_SOCKET")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert warm.socket_path() == tmp_path / "cache" / "council" / "warm.sock"


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A worker serving the ``qwen`` panel in a thread, whose "CLI" prints what it was given."""
    path = tmp_path / "w.sock"
    seen: list[dict[str, Any]] = []

    def fake_cli(argv: list[str]) -> int:
        import sys

        seen.append({"argv": argv, "cwd": os.getcwd(), "db": os.environ.get("COUNCIL_DB"),
                     "columns": os.environ.get("COLUMNS")})
        print(f"ran {' '.join(argv)}")
        print("a note", file=sys.stderr)
        return 3 if "fail" in argv else 0

    monkeypatch.setenv("COUNCIL_DB", "worker-own.db")
    monkeypatch.setenv("COLUMNS", "77")
    t = threading.Thread(target=warm.serve, args=(fake_cli, "qwen", 30.0, path), daemon=True)
    t.start()
    for _ in range(200):  # listening (the socket file appears at bind, just before listen)
        try:
            warm.request({"op": "ping"}, path=path, timeout=5)
            break
        except OSError:
            time.sleep(0.05)
    yield path, seen, t
    if path.exists():
        warm.request({"op": "stop"}, path=path, timeout=5)
    t.join(10)


def test_the_worker_runs_a_command_as_the_caller_would_and_restores_its_own_state(worker: Any, tmp_path: Path) -> None:
    path, seen, _ = worker
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # only this user can connect
    here = os.getcwd()
    reply = warm.request({"op": "run", "argv": ["ask", "Q?"], "cwd": str(tmp_path), "columns": 120,
                          "env": {"COUNCIL_DB": "caller.db", "OPENAI_API_KEY": "sk-never"}}, path=path, timeout=10)
    assert (reply["stdout"], reply["stderr"], reply["code"], reply["pid"]) == ("ran ask Q?\n", "a note\n", 0, os.getpid())
    # The caller's directory, database and width; nothing but COUNCIL_* variables is taken from the caller.
    assert seen == [{"argv": ["ask", "Q?"], "cwd": str(tmp_path), "db": "caller.db", "columns": "120"}]
    assert "OPENAI_API_KEY" not in os.environ or os.environ["OPENAI_API_KEY"] != "sk-never"
    # The worker's own state is back as it was.
    assert os.getcwd() == here and os.environ["COUNCIL_DB"] == "worker-own.db" and os.environ["COLUMNS"] == "77"
    failed = warm.request({"op": "run", "argv": ["check-one", "fail"], "cwd": here, "env": {}}, path=path, timeout=10)
    assert failed["code"] == 3
    st = warm.request({"op": "ping"}, path=path, timeout=5)
    assert st["served"] == 2 and st["panel"] == "qwen"


def test_the_worker_declines_what_it_does_not_serve(worker: Any) -> None:
    path, seen, _ = worker
    for req in ({"op": "run", "argv": ["ask", "Q?"], "env": {"COUNCIL_LOCAL_PANEL": "tiny"}},
                {"op": "run", "argv": ["ask", "Q?"], "env": {"COUNCIL_CONFIG": "c.toml"}},
                {"op": "run", "argv": ["feedback", "last", "REFUTED"], "env": {}},
                {"op": "shell"}):
        assert warm.request(req, path=path, timeout=5).get("declined"), req
    assert seen == []


def test_forward_falls_back_when_no_worker_listens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COUNCIL_CONFIG", raising=False)
    monkeypatch.setenv("COUNCIL_WARM", "1")
    monkeypatch.setenv("COUNCIL_WARM_SOCKET", str(tmp_path / "none.sock"))
    assert warm.forward(["ask", "Q?"]) is None
    (tmp_path / "none.sock").write_text("")  # a stale path, nobody listening
    assert warm.forward(["ask", "Q?"]) is None


def test_a_stop_request_ends_the_worker_and_removes_its_socket(worker: Any) -> None:
    path, _, t = worker
    assert warm.request({"op": "stop"}, path=path, timeout=5)["stopping"] is True
    t.join(15)
    assert not t.is_alive() and not path.exists()


def test_an_idle_worker_stops_by_itself(tmp_path: Path) -> None:
    path = tmp_path / "idle.sock"
    t = threading.Thread(target=warm.serve, args=(lambda argv: 0, "qwen", 0.5, path), daemon=True)
    t.start()
    t.join(15)
    assert not t.is_alive() and not path.exists()


# --- end to end: the real tiny panel ------------------------------------------------------------------------

def test_council_ask_is_answered_by_a_running_warm_panel(tmp_path: Path) -> None:
    from council.config import local

    if not local.local_available():
        pytest.skip("the local extra is not installed: pip install -e '.[local]'")
    db = tmp_path / "council.db"
    env = cli_env(db, COUNCIL_LOCAL_PANEL="tiny", COUNCIL_WARM_SOCKET=str(tmp_path / "warm.sock"), COUNCIL_WARM="1")
    started = finish(start(["local", "start", "--idle-minutes", "5"], env), timeout=300)
    code, out, err = started.result()
    assert code == 0 and "warm local panel 'tiny' ready: worker pid" in out, (out, err)
    pid = int(out.split("worker pid ")[1].split(",")[0])
    try:
        asked = finish(start(["ask", "What is the capital of France?", "--json"], env), timeout=300)
        code, out, err = asked.result()
        assert code == 0, err
        assert f"note: answered by the warm local panel (worker pid {pid}" in err
        assert "note: no config given, so this is the local 'tiny' panel" in err  # the same notice as ever
        import json

        payload = json.loads(out)
        # The run is in the caller's database, with its calls, as if it had run in the caller's process.
        from council.store.db import Store

        stored = Store(f"sqlite:///{db}").load_run(payload["run_id"])
        assert stored.question == "What is the capital of France?" and len(stored.calls) >= 2
        assert {c.cost_source for c in stored.calls} == {"local"}
        status = finish(start(["local", "status"], env), timeout=60)
        assert status.code == 0 and f"worker pid {pid}" in status.out and "answered 1 command(s)" in status.out
        # Not forwarded with COUNCIL_WARM=0: the same command runs in its own process (no note).
        own = finish(start(["runs", "--json"], dict(env, COUNCIL_WARM="0")), timeout=60)
        assert own.code == 0 and payload["run_id"] in own.out
    finally:
        stopped = finish(start(["local", "stop"], env), timeout=60)
    assert stopped.code == 0 and f"stopped the warm local panel (worker pid {pid})" in stopped.out
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"worker {pid} still running after stop")
    assert not (tmp_path / "warm.sock").exists()
    after = finish(start(["local", "status"], env), timeout=60)
    assert after.code == 1 and "no warm local panel is running" in after.out
