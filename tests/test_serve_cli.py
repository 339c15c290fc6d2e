"""``council serve`` and ``council graph --format html`` as a user runs them: real subprocesses."""

from __future__ import annotations

import json
import re
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from conftest import GREAT_WALL, panel_config, panel_script  # noqa: E402

from council import Council  # noqa: E402
from council.provenance.graph import build_graph  # noqa: E402
from council.store.db import Store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", COUNCIL_DB=str(tmp / "default.db"))
    env.pop("COUNCIL_CONFIG", None)
    env.pop("COUNCIL_SERVE_TOKEN", None)
    return env


def _council(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "council", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_graph_html_is_one_self_contained_file(scripted: Any, write_config: Any, db_url: str, tmp_path: Path) -> None:
    srv = scripted(panel_script())
    tables = {**panel_config(srv.base_url), "database": db_url}
    run = Council(tables).ask(GREAT_WALL)
    out = tmp_path / "run.html"
    p = _council("graph", run.run_id[:10], "--format", "html", "-o", str(out), "--config", str(write_config(tables)),
                 env=_env(tmp_path))
    assert p.returncode == 0, p.stderr
    g = build_graph(Store(db_url).load_run(run.run_id))
    assert f"an interactive page of {g.number_of_nodes()} nodes and {g.number_of_edges()} edges" in p.stderr
    html = out.read_text(encoding="utf-8")
    data = json.loads(html.split('class="cg-data">', 1)[1].split("</script>", 1)[0])
    assert len(data["nodes"]) == g.number_of_nodes() and len(data["edges"]) == g.number_of_edges()
    assert "<script src" not in html and "<link" not in html and not re.search(r"(src|href)=\"?https?:", html)  # nothing to fetch
    bad = _council("graph", run.run_id, "--format", "dot", "--config", str(write_config(tables)), env=_env(tmp_path))
    assert bad.returncode == 1 and "use node-link, graphml, prov-json or html" in bad.stderr


def test_serve_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    p = _council("serve", "--host", "0.0.0.0", "--port", str(_free_port()), env=_env(tmp_path), timeout=60)
    assert p.returncode == 1
    assert "error: binding to 0.0.0.0 (not loopback) requires a token: pass --token or set COUNCIL_SERVE_TOKEN" in p.stderr


def test_council_serve_runs_a_council_for_an_http_client(scripted: Any, write_config: Any, db_url: str,
                                                         tmp_path: Path) -> None:
    srv = scripted(panel_script())
    config = write_config(panel_config(srv.base_url))
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "council", "serve", "--port", str(port), "--config", str(config),
                             "--db", db_url], cwd=ROOT, env=_env(tmp_path), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/v1/models", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "council serve did not start"
            time.sleep(0.2)
        r = httpx.post(base + "/v1/chat/completions", timeout=120, json={
            "model": "council/research", "messages": [{"role": "user", "content": GREAT_WALL}]})
        assert r.status_code == 200, r.text
        run_id = r.headers["x-council-run-id"]
        assert r.json()["choices"][0]["message"]["content"] == Store(db_url).load_run(run_id).verdict.answer
        assert httpx.get(f"{base}/runs/{run_id}", timeout=30).status_code == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"council serving on http://127.0.0.1:{port}/" in err
