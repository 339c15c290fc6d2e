"""``council serve``'s guards over real HTTP: token on every route, Host and Origin checks, no secrets or
paths in any page or response, escaping, security headers."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from conftest import GREAT_WALL, answer, panel_config, panel_script  # noqa: E402
from serve_support import live  # noqa: E402,F401

from council.errors import ConfigError  # noqa: E402

TOKEN = "t0ken-for-the-serve-tests-0123456789"
SECRET = "sk-test-SECRET-value-never-shown-42"
INJECTED = "<script>window.__pwned = 1</script><img src=x onerror=alert(1)>"


def test_non_loopback_bind_requires_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from council.serve import ServeSettings

    monkeypatch.delenv("COUNCIL_SERVE_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="requires a token"):
        ServeSettings(host="0.0.0.0").check()
    with pytest.raises(ConfigError, match="at least 16"):
        ServeSettings(host="0.0.0.0", token="short").check()
    monkeypatch.setenv("COUNCIL_SERVE_TOKEN", TOKEN)
    assert ServeSettings(host="0.0.0.0").check().token == TOKEN
    assert ServeSettings(host="::1").check().token == TOKEN  # given in the env, it applies on loopback too


ROUTES = ["/", "/ask", "/batches", "/models", "/api", "/api/runs", "/api/batches", "/api/models/stats",
          "/v1/models", "/openapi.json", "/static/app.css", "/assets/graph/graph.js"]


def test_a_token_is_required_on_every_route(live: Any) -> None:
    srv = live(token=TOKEN)
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        for path in ROUTES:
            r = c.get(path)
            assert r.status_code == 401, path
            assert "token" in r.text
        post = c.post("/api/runs", json={"question": GREAT_WALL})
        wrong = c.get("/api/runs", headers={"Authorization": "Bearer " + TOKEN[:-1] + "x"})
        page = c.get("/", headers={"accept": "text/html"})
        for path in ROUTES:
            assert c.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200, path
        bad_login = c.post("/login", data={"token": "nope"})
        login = c.post("/login", data={"token": TOKEN}, follow_redirects=False)
        cookie = login.cookies.get("council_token")
    with httpx.Client(base_url=srv.url, timeout=60, cookies={"council_token": TOKEN}) as c:
        with_cookie = c.get("/api/runs")
    assert post.status_code == 401 and wrong.status_code == 401 and not srv.scripted.requests
    assert "<form" in page.text and "password" in page.text  # a browser is offered the sign-in form
    assert bad_login.status_code == 401
    assert login.status_code == 303 and cookie == TOKEN
    assert "httponly" in login.headers["set-cookie"].lower() and "samesite=strict" in login.headers["set-cookie"].lower()
    assert with_cookie.status_code == 200


def test_host_and_origin_checks(live: Any) -> None:
    srv = live()
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        rebound = c.get("/api/runs", headers={"Host": "evil.example:8321"})
        cross = c.post("/api/runs", json={"question": GREAT_WALL}, headers={"Origin": "https://evil.example"})
        same = c.get("/api/runs", headers={"Origin": srv.url})
        localhost = c.get("/api/runs", headers={"Host": f"localhost:{srv.port}"})
        no_cors = c.options("/api/runs", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert rebound.status_code == 421
    assert cross.status_code == 403 and "cross-origin" in cross.json()["error"]["message"]
    assert same.status_code == 200 and localhost.status_code == 200
    assert "access-control-allow-origin" not in no_cors.headers
    assert not srv.scripted.requests


def test_cors_when_configured(live: Any) -> None:
    srv = live(cors_origins=["https://app.example"])
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        pre = c.options("/api/runs", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
        other = c.options("/api/runs", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert pre.headers.get("access-control-allow-origin") == "https://app.example"
    assert other.headers.get("access-control-allow-origin") is None


def _crawl(c: httpx.Client, run_id: str) -> list[httpx.Response]:
    paths = ROUTES + [f"/runs/{run_id}", f"/runs/{run_id}/graph", f"/api/runs/{run_id}", f"/api/runs/{run_id}/calls",
                      f"/api/runs/{run_id}/claims", f"/api/runs/{run_id}/costs", f"/api/runs/{run_id}/clusters",
                      "/api/recipes"] + [f"/api/runs/{run_id}/graph?format={f}" for f in ("node-link", "graphml", "prov-json", "html")]
    return [c.get(p) for p in paths]


def test_no_secret_env_var_or_internal_path_in_any_response_and_text_is_escaped(
        live: Any, scripted: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("COUNCIL_SERVE_TEST_KEY", SECRET)
    script = panel_script(**{"m-a": {"latency": 0.05, "answers": [{"content": answer("No, it is not visible.", [
        (f"The wall is not visible. {INJECTED}", 0.9)])}]}})
    srv0 = scripted(script)
    tables = panel_config(srv0.base_url)
    for entry in tables["models"].values():
        entry["api_key_env"] = "COUNCIL_SERVE_TEST_KEY"
    srv = live(script=script, tables=tables)
    with httpx.Client(base_url=srv.url, timeout=120) as c:
        chat = c.post("/v1/chat/completions", json={"model": "council/research", "messages": [
            {"role": "user", "content": GREAT_WALL + " <b>bold</b>"}]})
        run_id = chat.json()["council"]["run_id"]
        responses = [chat] + _crawl(c, run_id) + [c.get("/api/runs/nope"), c.post("/api/runs", json={"question": ""})]
    for r in responses:
        assert r.status_code in (200, 404, 422), (r.request.url, r.status_code)
        for needle in (SECRET, "COUNCIL_SERVE_TEST_KEY", str(tmp_path), "/home/", "api_key"):
            assert needle not in r.text, (r.request.url, needle)
    run_page = next(r for r in responses if r.request.url.path == f"/runs/{run_id}")
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in run_page.text
    assert "<script>window.__pwned" not in run_page.text and "<img src=x" not in run_page.text
    assert "&lt;b&gt;bold&lt;/b&gt;" in run_page.text
    graph_page = next(r for r in responses if r.request.url.path == f"/runs/{run_id}/graph")
    assert "<script>window" not in graph_page.text and "\\u003cscript\\u003ewindow" in graph_page.text
    csp = run_page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert run_page.headers["x-content-type-options"] == "nosniff"
    # every script a page loads is a file of the package: no CDN, no inline code
    for r in responses:
        if r.headers.get("content-type", "").startswith("text/html") and r.request.url.path != f"/api/runs/{run_id}/graph":
            assert not re.search(r"<script(?![^>]*(src=\"/|type=\"application/json\"))", r.text), r.request.url
            assert "http://" not in r.text.replace(srv.url, "") and "https://" not in r.text, r.request.url
