"""Helpers shared by the test modules (fixtures live in conftest.py): the CLI harness, the batch scripts
and inputs, counting rows, a fresh PostgreSQL database, and a scripted server that keeps request bodies.

Test modules import these from here, never from one another.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from conftest import answer, panel_config, panel_script, ruling
from council.testing import ScriptedServer

ROOT = Path(__file__).resolve().parents[1]
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
DISPUTED = "DISPUTED"


# ------------------------------------------------------------------------------------------ the CLI harness

@dataclass
class Proc:
    """A finished ``python -m council ...`` process."""

    argv: list[str]
    code: int
    out: str
    err: str

    def error_line(self, code: int | None = None) -> str:
        """The one line on stderr, asserting that there is exactly one, it is an error, and no traceback
        (and that the exit code is ``code``, when given; else any failure)."""
        assert self.code != 0, f"exit 0 for {self.argv[3:5]}: {self.out[-500:]}"
        assert code is None or self.code == code, (self.code, self.out[-500:], self.err[-2000:])
        assert "Traceback" not in self.err + self.out, self.err[-2000:]
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, f"stderr has {len(lines)} lines:\n{self.err[-2000:]}"
        assert lines[0].startswith("error: "), lines[0]
        return lines[0]

    def result(self) -> tuple[int, str, str]:
        """(exit code, stdout, stderr), asserting that nothing crashed with a traceback."""
        assert "Traceback" not in self.err, self.err[-3000:]
        return self.code, self.out, self.err


def cli_env(db: Path, *, columns: int = 250, **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: no config and no key from the developer's shell, ``db`` as the
    default database, a fixed terminal width, no colour, no warm local panel."""
    env = dict(os.environ)
    # COUNCIL_WARM=0: never answered by a warm local panel the developer may have running (test_warm sets 1).
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", COLUMNS=str(columns), COUNCIL_DB=str(db), NO_COLOR="1",
               PYTHONIOENCODING="utf-8", COUNCIL_WARM="0")
    env.update(extra)
    for var in ("COUNCIL_CONFIG", "OPENAI_API_KEY", "FORCE_COLOR", "PYTHONWARNINGS"):
        env.pop(var, None)
    return env


def start(args: list[str], env: dict[str, str], module: str = "council") -> subprocess.Popen[str]:
    """Start ``python -m <module> <args>`` from the repository root."""
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env, text=True, encoding="utf-8",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> Proc:
    """Wait for ``proc`` (killed after ``timeout`` seconds) and return what it did."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return Proc([str(a) for a in proc.args], proc.returncode, out, err)  # type: ignore[union-attr]


def run_all(commands: dict[str, list[str]], env: dict[str, str], timeout: float = 180) -> dict[str, Proc]:
    """Start every command at once, then wait for all of them."""
    procs = {name: start(args, env) for name, args in commands.items()}
    return {name: finish(p, timeout) for name, p in procs.items()}


# ------------------------------------------------------------------------------------------ batches

def members_script(latency: float = 0.05, judge_faults: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    """Members agree (SUPPORTED) on every claim, except claims containing DISPUTED, where they split and the
    adjudicator is asked; by default it fails on those, so they end contested."""
    def member(label: str) -> dict[str, Any]:
        return {"latency": latency, **extra, "answers": [
            {"match": DISPUTED, "content": answer(f"It is {label.lower()}.", [(f"Disputed, says {label}.", 0.7)], label)},
            {"content": answer("It is true.", [("The claim is true.", 0.9)], "SUPPORTED")},
        ]}
    faults = judge_faults if judge_faults is not None else [{"kind": "500", "rate": 1.0, "match": DISPUTED}]
    return {"seed": 5, "models": {
        "m-a": member("SUPPORTED"), "m-b": member("REFUTED"), "m-c": member("REFUTED"), "m-spare": member("SUPPORTED"),
        "judge": {"latency": latency, **extra, "answers": [{"content": ruling("Supported.", ["C1"], label="SUPPORTED")}],
                  "faults": faults},
    }}


def batch_config(base_url: str, **policy: dict[str, Any]) -> dict[str, Any]:
    cfg = panel_config(base_url, **policy)
    cfg["embedding"] = "lexical"  # no wordllama load: the batch tests are about the batch, and fast
    return cfg


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def claims(n: int, prefix: str = "c") -> list[dict[str, str]]:
    return [{"id": f"{prefix}{i}", "claim": f"Bridge number {i} opened in {1900 + i}."} for i in range(n)]


# ------------------------------------------------------------------------------------------ rows

def db_rows(db: str | Path, sql: str, **params: Any) -> list[Any]:
    """Rows of ``sql`` in the database ``db`` (a URL, or a SQLite file path), read without opening a
    ``Store`` (no migration, no lock: other processes may be writing)."""
    from sqlalchemy import create_engine

    url = db if isinstance(db, str) else f"sqlite:///{db}"
    url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def sent_records(db: str | Path) -> int:
    """Call records of requests that were sent (``skipped`` ones never left the process)."""
    return db_rows(db, "SELECT COUNT(*) FROM calls WHERE status != 'skipped'")[0][0]


def assert_one_record_per_call(db: str | Path, server: Any) -> None:
    assert sent_records(db) == server.stats()["total_requests"]
    assert not db_rows(db, "SELECT call_id FROM calls WHERE status = 'pending'")


# ------------------------------------------------------------------------------------------ PostgreSQL

@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty database on the PostgreSQL server at 127.0.0.1:5432 (dropped afterwards), or a skip
    saying why there is none."""
    psycopg = pytest.importorskip("psycopg")
    name = f"council_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server at {PG_SERVER}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{PG_SERVER}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ------------------------------------------------------------------------------------------ servers

class CapturingServer(ScriptedServer):
    """The scripted server, also keeping every chat request body it received (to read the prompts)."""

    def reset(self) -> None:
        super().reset()
        self.bodies: list[dict[str, Any]] = []

    async def _complete(self, model: str, body: dict[str, Any], note: dict[str, Any]) -> Any:
        self.bodies.append(body)
        return await super()._complete(model, body, note)

    def prompts(self, model: str) -> list[tuple[str, str]]:
        """(system, user) of every request to ``model``."""
        return [(b["messages"][0]["content"], b["messages"][1]["content"]) for b in self.bodies if b["model"] == model]


# ------------------------------------------------------------------------------------------ recipes

M_C_CLAIM = "The Great Wall is visible to the naked eye from low Earth orbit."
A_ANSWER, B_ANSWER, C_ANSWER = "No, it is not visible.", "No.", "Yes."


def _resp(i: int, answer_text: str) -> str:
    return f'<response label="Response {i}">\nAnswer: {answer_text}'


def review_content(judgements: list[tuple[str, str]], ranking: list[str]) -> dict[str, Any]:
    return {"judgements": [{"claim": c, "verdict": v, "reason": "scripted"} for c, v in judgements],
            "ranking": ranking}


def reviewer_answers(member: str) -> list[dict[str, Any]]:
    """Scripted reviews of member ``member``'s model, chosen by where the others' answers landed in its
    shuffled prompt. A and B judge m-c's claim inaccurate and rank it last; C judges nothing it can verify."""
    if member == "A":  # sees B (1 claim) and C (1 claim)
        return [
            {"match": _resp(1, C_ANSWER), "content": review_content([("C1", "inaccurate"), ("C2", "accurate")],
                                                                    ["Response 2", "Response 1"])},
            {"match": _resp(2, C_ANSWER), "content": review_content([("C1", "accurate"), ("C2", "inaccurate")],
                                                                    ["Response 1", "Response 2"])},
        ]
    if member == "B":  # sees A (2 claims) and C (1 claim)
        return [
            {"match": _resp(1, C_ANSWER), "content": review_content(
                [("C1", "inaccurate"), ("C2", "accurate"), ("C3", "accurate")], ["Response 2", "Response 1"])},
            {"match": _resp(2, C_ANSWER), "content": review_content(
                [("C1", "accurate"), ("C2", "accurate"), ("C3", "inaccurate")], ["Response 1", "Response 2"])},
        ]
    # C sees A and B: ranks A first, can verify nothing
    return [
        {"match": _resp(1, A_ANSWER), "content": review_content(
            [("C1", "unverifiable"), ("C2", "unverifiable"), ("C3", "unverifiable")], ["Response 1", "Response 2"])},
        {"match": _resp(2, A_ANSWER), "content": review_content(
            [("C1", "unverifiable"), ("C2", "unverifiable"), ("C3", "unverifiable")], ["Response 2", "Response 1"])},
    ]


def review_script(**overrides: dict[str, Any]) -> dict[str, Any]:
    script = panel_script()
    for name, member in (("m-a", "A"), ("m-b", "B"), ("m-c", "C")):
        m = script["models"][name]
        m["answers"] = reviewer_answers(member) + m["answers"]
    script["models"].update(overrides)
    for m in script["models"].values():
        m.setdefault("prompt_tokens", 1000)
        m.setdefault("completion_tokens", 200)
    return script


def cascade_config(base_url: str, **policies: dict[str, Any]) -> dict[str, Any]:
    """Cheap members m-a, m-b; strong models strong-x, strong-y (priced high); the judge."""
    cfg = panel_config(base_url)
    cfg["models"]["strong-x"] = {"model": "openai/strong-x", "api_base": base_url, "quality": 95, "provider": "prov-x",
                                 "input_usd_per_mtok": 5.0, "output_usd_per_mtok": 10.0}
    cfg["policies"].update({
        "research_cheap": {"allowed_models": ["m-a", "m-b"], "timeout_s": 5.0},
        "fact_check_cheap": {"allowed_models": ["m-a", "m-b"], "timeout_s": 5.0},
        "escalation": {"allowed_models": ["strong-x"], "timeout_s": 5.0},
    })
    for name, table in policies.items():
        cfg["policies"].setdefault(name, {}).update(table)
    return cfg


# ------------------------------------------------------------------------------------------ revision rounds

def revision(decision: str, reason: str = "scripted", text: str | None = None,
             claims: list[tuple[str, float]] | None = None, label: str | None = None) -> dict[str, Any]:
    """A member's scripted reply in a revision round: ``hold``, or ``revise`` with a new answer."""
    out: dict[str, Any] = {"decision": decision, "reason": reason}
    if decision == "revise":
        out.update(answer=text, claims=[{"text": t, "confidence": c} for t, c in claims or []])
        if label:
            out["label"] = label
    return out


def revision_script(c_rounds: list[dict[str, Any]] | None = None, others: str = "hold") -> dict[str, Any]:
    """The Great Wall panel (A and B: not visible; C: visible; contested by the vote) with scripted revision
    rounds: A and B reply ``others`` in every round; C replies ``c_rounds[i]`` in round i + 2 (default: it
    revises to "not visible" in round 2)."""
    from conftest import panel_script

    script = panel_script()
    c_rounds = c_rounds if c_rounds is not None else [revision(
        "revise", "Two members say it cannot be seen.", "No, it is not visible.",
        [("The Great Wall is not visible to the naked eye from low Earth orbit.", 0.8)])]
    for name in ("m-a", "m-b"):
        script["models"][name]["answers"].insert(0, {"match": "Revision round", "content": revision(others)})
    for i, reply in reversed(list(enumerate(c_rounds))):
        script["models"]["m-c"]["answers"].insert(0, {"match": f"Revision round {i + 2}.", "content": reply})
    return script


# ------------------------------------------------------------------------------------------ network faults

class TcpProxy:
    """A loopback TCP proxy to ``upstream`` (host, port) that can be cut and restored, to take a server
    (PostgreSQL, say) away from a running process: ``cut()`` closes every proxied connection (both ends see
    it closed, as when the server or the network goes) and stops listening (new connections are refused);
    ``restore()`` listens again on the same port. ``port`` is where clients connect. Use it as a context
    manager (everything closed at the end)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        import threading

        self.upstream = upstream
        self.port = 0
        self.connections = 0
        """Connections accepted so far."""
        self._lock = threading.Lock()
        self._socks: set[Any] = set()
        self._listener: Any = None
        self.restore()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()

    def url(self, url: str) -> str:
        """``url`` (``scheme://user@host:port/db``) with this proxy's address in place of its host and port."""
        from sqlalchemy.engine import make_url

        return make_url(url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def restore(self) -> None:
        import socket
        import threading

        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        import socket

        listener, self._listener = self._listener, None
        with self._lock:
            socks, self._socks = self._socks, set()
        for s in ([listener] if listener is not None else []) + list(socks):
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes the threads blocked in accept() and recv()
            except OSError:
                pass
            s.close()

    def _accept(self, listener: Any) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    server.close()
                    return
                self._socks |= {client, server}
                self.connections += 1
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: Any, dst: Any) -> None:
        import socket

        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# ------------------------------------------------------------------------------------------ injection

def undefended_recipe(tmp_path: Path) -> str:
    """The shipped ``council`` recipe with ``injection_defences = false``, written under ``tmp_path``: the
    nonce fences alone, as before the prompt-injection defences (for tests of the fences themselves)."""
    text = (ROOT / "graphs" / "council.toml").read_text(encoding="utf-8")
    assert "shuffle_members = true" in text
    path = tmp_path / "council-undefended.toml"
    path.write_text(text.replace("shuffle_members = true", "shuffle_members = true\ninjection_defences = false"),
                    encoding="utf-8")
    return str(path)
