"""Shared fixtures: no network beyond loopback, a scripted OpenAI-compatible server, config files.

Every model call in the suite goes over real HTTP on 127.0.0.1 through the real litellm path.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["COUNCIL_WARM"] = "0"  # no test is answered by a warm local panel a developer has running (test_warm sets 1)

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _loopback(host: Any) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _guard_address(address: Any) -> None:
    if isinstance(address, tuple) and not _loopback(address[0]):
        raise ConnectionRefusedError(f"tests may not reach {address[0]!r}: only loopback is allowed")


def _connect(self: socket.socket, address: Any) -> Any:
    _guard_address(address)
    return _real_connect(self, address)


def _connect_ex(self: socket.socket, address: Any) -> Any:
    _guard_address(address)
    return _real_connect_ex(self, address)


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    h = host.decode() if isinstance(host, bytes) else host
    if not _loopback(h):
        raise socket.gaierror(f"tests may not resolve {h!r}: only loopback is allowed")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def loopback_only() -> Iterator[None]:
    """Forbid any connection or name lookup outside loopback for the whole session."""
    socket.socket.connect = _connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _getaddrinfo  # type: ignore[assignment]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _real_getaddrinfo  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's own config or database."""
    monkeypatch.delenv("COUNCIL_CONFIG", raising=False)
    monkeypatch.setenv("COUNCIL_DB", str(tmp_path / "default-council.db"))


def answer(text: str, claims: list[tuple[str, float]], label: str | None = None) -> dict[str, Any]:
    """A member's scripted structured answer."""
    out: dict[str, Any] = {"answer": text, "claims": [{"text": t, "confidence": c} for t, c in claims]}
    if label:
        out["label"] = label
    return out


def ruling(text: str, supported: list[str], contradicted: list[str] | None = None, confidence: float = 0.8,
           label: str | None = None) -> dict[str, Any]:
    """The adjudicator's scripted structured ruling (claims cited by prompt labels C1, C2, ...)."""
    out: dict[str, Any] = {"answer": text, "confidence": confidence, "supported": supported,
                           "contradicted": contradicted or [], "rationale": "scripted"}
    if label:
        out["label"] = label
    return out


GREAT_WALL = "Is the Great Wall of China visible from low Earth orbit with the naked eye?"


def panel_script(**overrides: dict[str, Any]) -> dict[str, Any]:
    """A standard script: members m-a, m-b, m-c (latencies 0.05 s) and the adjudicator ``judge``.

    ``overrides`` replace whole model scripts, e.g. ``panel_script(**{"m-b": {...}})``.
    """
    models: dict[str, Any] = {
        "m-a": {"latency": 0.05, "answers": [{"content": answer("No, it is not visible.", [
            ("The Great Wall is not visible to the naked eye from low Earth orbit.", 0.9),
            ("The wall is only about 6 m wide.", 0.8)])}]},
        "m-b": {"latency": 0.05, "answers": [{"content": answer("No.", [
            ("It cannot be seen with the naked eye from low Earth orbit.", 0.85)])}]},
        "m-c": {"latency": 0.05, "answers": [{"content": answer("Yes.", [
            ("The Great Wall is visible to the naked eye from low Earth orbit.", 0.6)])}]},
        "m-spare": {"latency": 0.05, "answers": [{"content": answer("No.", [
            ("Astronauts report the wall is not visible unaided.", 0.8)])}]},
        "judge": {"latency": 0.05, "answers": [{"content": ruling(
            "No: the Great Wall is not visible to the naked eye from low Earth orbit.", ["C1"])}]},
    }
    models.update(overrides)
    return {"seed": 3, "models": models}


def panel_config(base_url: str, **policy_overrides: dict[str, Any]) -> dict[str, Any]:
    """Config tables for the standard script: three members of distinct providers, a spare, a judge."""
    def entry(name: str, quality: float, price_in: float, price_out: float, provider: str) -> dict[str, Any]:
        return {"model": f"openai/{name}", "api_base": base_url, "quality": quality, "provider": provider,
                "input_usd_per_mtok": price_in, "output_usd_per_mtok": price_out}

    policies: dict[str, Any] = {
        "research": {"allowed_models": ["m-a", "m-b", "m-c", "m-spare"], "timeout_s": 5.0},
        "fact_check": {"allowed_models": ["m-a", "m-b", "m-c", "m-spare"], "timeout_s": 5.0},
        "adjudication": {"allowed_models": ["judge"], "timeout_s": 5.0},
    }
    for name, table in policy_overrides.items():
        policies.setdefault(name, {}).update(table)
    return {
        "models": {
            "m-a": entry("m-a", 80, 1.0, 2.0, "prov-a"),
            "m-b": entry("m-b", 70, 0.5, 1.0, "prov-b"),
            "m-c": entry("m-c", 60, 0.1, 0.2, "prov-c"),
            "m-spare": entry("m-spare", 50, 0.2, 0.4, "prov-d"),
            "judge": entry("judge", 90, 3.0, 6.0, "prov-j"),
        },
        "policies": policies,
    }


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def to_toml(tables: dict[str, Any]) -> str:
    """Write config tables (top-level scalars, then [section.name] tables) as TOML."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in tables.items() if not isinstance(v, dict)]
    for section, entries in tables.items():
        if isinstance(entries, dict):
            for name, table in entries.items():
                lines.append(f"\n[{section}.{json.dumps(name)}]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _server_factory() -> Iterator[Callable[..., Any]]:
    from council.testing import ScriptedServer

    servers: list[Any] = []

    def start(script: dict[str, Any], server_class: type | None = None) -> Any:
        srv = (server_class or ScriptedServer)(script).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def scripted() -> Iterator[Callable[..., Any]]:
    """Start scripted servers from script dicts (``server_class``: a ScriptedServer subclass); all are
    stopped at teardown."""
    yield from _server_factory()


@pytest.fixture(scope="module")
def scripted_module() -> Iterator[Callable[..., Any]]:
    """``scripted`` for module-scoped fixtures: the servers live until the module's tests are done."""
    yield from _server_factory()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (dropped afterwards), or a skip saying why there is none."""
    from support import fresh_pg_database

    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    """Write config tables to a TOML file in tmp_path and return its path."""
    counter = iter(range(1000))

    def write(tables: dict[str, Any]) -> Path:
        path = tmp_path / f"council-{next(counter)}.toml"
        path.write_text(to_toml(tables), encoding="utf-8")
        return path

    return write


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'council.db'}"
