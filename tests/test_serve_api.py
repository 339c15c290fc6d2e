"""``council serve``'s JSON API over real HTTP: uvicorn on a free loopback port, the scripted panel behind it."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from conftest import GREAT_WALL, answer, panel_config, panel_script  # noqa: E402
from serve_support import LiveServer, live  # noqa: E402,F401

from council.store.db import Store  # noqa: E402


def _events(client: httpx.Client, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    kind = None
    with client.stream("GET", f"/api/runs/{run_id}/events") as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        for line in s.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind:
                out.append((kind, json.loads(line.split(":", 1)[1])))
    return out


def _client(srv: LiveServer, **kw: Any) -> httpx.Client:
    return httpx.Client(base_url=srv.url, timeout=120, **kw)


def test_a_council_started_over_http_streams_its_events_and_is_stored(live: Any) -> None:
    srv = live()
    with _client(srv) as c:
        r = c.post("/api/runs", json={"question": GREAT_WALL, "sources": [
            {"title": "wall.txt", "text": "Astronauts say the wall cannot be seen with the naked eye from orbit."}]})
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]
        assert r.json()["events_url"] == f"/api/runs/{run_id}/events"
        events = _events(c, run_id)
        kinds = [k for k, _ in events]
        assert kinds[0] == "run_started" and kinds[-2:] == ["verdict", "done"]
        assert kinds.count("member_answered") == 3
        assert "adjudication" in kinds and "clusters" in kinds  # m-c dissents: the judge rules
        assert kinds.index("adjudication") > max(i for i, k in enumerate(kinds) if k == "member_answered")
        verdict_event = dict(events)["verdict"]
        detail = c.get(f"/api/runs/{run_id}").json()
    store = Store(_db(srv))
    stored = store.load_run(run_id)
    assert detail["verdict"]["answer"] == stored.verdict.answer == verdict_event["verdict"]["answer"]
    assert detail["total_cost_usd"] == pytest.approx(sum(x.cost_usd for x in stored.calls))
    assert len(detail["calls"]) == len(stored.calls) == len(srv.scripted.requests) == 4
    assert detail["passages"][0]["text"].startswith("Astronauts say")
    assert {e["member"] for k, e in events if k == "member_answered"} == {"A", "B", "C"}


def _db(srv: LiveServer) -> str:
    import tomllib

    return tomllib.loads(srv.config_path.read_text())["database"]


def test_claims_clusters_calls_and_costs_agree_with_the_store(live: Any) -> None:
    srv = live()
    with _client(srv) as c:
        run_id = c.post("/v1/chat/completions", json={"model": "council/research", "messages": [
            {"role": "user", "content": GREAT_WALL}]}).json()["council"]["run_id"]
        claims = c.get(f"/api/runs/{run_id}/claims").json()
        clusters = c.get(f"/api/runs/{run_id}/clusters").json()
        calls = c.get(f"/api/runs/{run_id}/calls").json()
        costs = c.get(f"/api/runs/{run_id}/costs").json()
    stored = Store(_db(srv)).load_run(run_id)
    assert sorted(x["claim_id"] for x in claims) == sorted(cl.claim_id for a in stored.answers for cl in a.claims)
    assert len(claims) == 4
    assert {k["cluster_id"] for k in clusters} == {k.cluster_id for k in stored.clusters}
    assert [x["call_id"] for x in calls] == [x.call_id for x in stored.calls]
    assert costs["total_cost_usd"] == pytest.approx(stored.total_cost_usd)
    assert costs["prompt_tokens"] == sum(x.prompt_tokens for x in stored.calls)
    by_member = {x["key"]: x for x in costs["by_member"]}
    assert set(by_member) == {"A", "B", "C", "adjudicator"}
    assert sum(x["cost_usd"] for x in costs["by_model"]) == pytest.approx(stored.total_cost_usd)
    assert by_member["adjudicator"]["cost_usd"] == pytest.approx(sum(x.cost_usd for x in stored.calls if x.node == "adjudicate"))


def test_graph_exports_in_every_format(live: Any) -> None:
    import networkx as nx

    from council.provenance.graph import build_graph

    srv = live()
    with _client(srv) as c:
        run_id = c.post("/v1/chat/completions", json={"model": "council/research", "messages": [
            {"role": "user", "content": GREAT_WALL}]}).json()["council"]["run_id"]
        g = build_graph(Store(_db(srv)).load_run(run_id))
        node_link = c.get(f"/api/runs/{run_id}/graph", params={"format": "node-link"})
        graphml = c.get(f"/api/runs/{run_id}/graph", params={"format": "graphml"})
        prov = c.get(f"/api/runs/{run_id}/graph", params={"format": "prov-json"})
        page = c.get(f"/api/runs/{run_id}/graph", params={"format": "html"})
        bad = c.get(f"/api/runs/{run_id}/graph", params={"format": "dot"})
    assert len(node_link.json()["nodes"]) == g.number_of_nodes()
    assert nx.parse_graphml(graphml.text).number_of_nodes() == g.number_of_nodes()
    from prov.model import ProvDocument

    assert len(list(ProvDocument.deserialize(content=prov.text, format="json").get_records())) > 10
    assert page.headers["content-type"].startswith("text/html")
    data = page.text.split('class="cg-data">', 1)[1].split("</script>", 1)[0]
    assert len(json.loads(data)["nodes"]) == g.number_of_nodes()
    assert bad.status_code == 422 and "format" in bad.json()["error"]["message"]


def test_runs_list_filters(live: Any) -> None:
    script = panel_script(**{"m-c": {"latency": 0.05, "answers": [{"match": "Great Wall", "content": answer("Yes.", [
        ("The Great Wall is visible to the naked eye from low Earth orbit.", 0.6)])}, {"content": answer(
        "Water boils at 100 C at sea level.", [("Water boils at 100 degrees Celsius at sea level.", 0.9)])}]},
        "m-a": {"latency": 0.05, "answers": [{"match": "Great Wall", "content": answer("No.", [
            ("The Great Wall is not visible to the naked eye from low Earth orbit.", 0.9)])}, {"content": answer(
            "100 C.", [("Water boils at 100 degrees Celsius at sea level.", 0.9)])}]},
        "m-b": {"latency": 0.05, "answers": [{"match": "Great Wall", "content": answer("No.", [
            ("It cannot be seen with the naked eye from low Earth orbit.", 0.85)])}, {"content": answer(
            "100 C.", [("Water boils at 100 degrees Celsius at sea level.", 0.8)])}]}})
    srv = live(script)
    with _client(srv) as c:
        ask = lambda q: c.post("/v1/chat/completions", json={"model": "council/research", "messages": [  # noqa: E731
            {"role": "user", "content": q}]}).json()["council"]
        wall, water = ask(GREAT_WALL), ask("At what temperature does water boil at sea level?")
        all_runs = c.get("/api/runs").json()
        contested = c.get("/api/runs", params={"contested": "true"}).json()
        calm = c.get("/api/runs", params={"contested": "false"}).json()
        cheap = c.get("/api/runs", params={"max_cost": water["cost_usd"]}).json()
        by_text = c.get("/api/runs", params={"q": "Great Wall"}).json()
        checks = c.get("/api/runs", params={"task": "check"}).json()
        future = c.get("/api/runs", params={"since": "2999-01-01T00:00:00"}).json()
        done = c.get("/api/runs", params={"status": "done"}).json()
    assert all_runs["total"] == 2 and [r["run_id"] for r in all_runs["runs"]] == [water["run_id"], wall["run_id"]]
    assert [r["run_id"] for r in contested["runs"]] == [wall["run_id"]]
    assert [r["run_id"] for r in calm["runs"]] == [water["run_id"]]
    assert water["cost_usd"] < wall["cost_usd"] and [r["run_id"] for r in cheap["runs"]] == [water["run_id"]]
    assert [r["run_id"] for r in by_text["runs"]] == [wall["run_id"]]
    assert checks["total"] == 0 and future["total"] == 0 and done["total"] == 2


def test_bad_requests_get_clear_errors(live: Any) -> None:
    srv = live(max_question_chars=100, max_body_bytes=5000)
    with _client(srv) as c:
        empty = c.post("/api/runs", json={"question": ""})
        blank = c.post("/api/runs", json={"question": "   "})
        long = c.post("/api/runs", json={"question": "x" * 101})
        huge = c.post("/api/runs", json={"question": "why?", "sources": [{"text": "y" * 6000}]})
        recipe = c.post("/api/runs", json={"question": "why?", "recipe": "nope"})
        missing = c.get("/api/runs/0123456789abcdef")
        missing_events = _events(c, "0123456789abcdef")
        chunked = c.post("/api/runs", content=(b"x" * 1000 for _ in range(10)), headers={"content-type": "application/json"})
        no_route = c.get("/api/nothing-here")
        not_json = c.post("/api/runs", content="question=why", headers={"content-type": "application/x-www-form-urlencoded"})
        page404 = c.get("/runs/0123456789abcdef", headers={"accept": "text/html"})
    assert empty.status_code == 422 and "question" in empty.json()["error"]["message"]
    assert blank.status_code == 400 and blank.json()["error"]["message"] == "the question is empty"
    assert long.status_code == 400 and "limit is 100" in long.json()["error"]["message"]
    assert huge.status_code == 413 and "5000 bytes" in huge.json()["error"]["message"]
    assert recipe.status_code == 400 and "unknown recipe 'nope'" in recipe.json()["error"]["message"]
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "no such run"
    assert [(k, e["message"]) for k, e in missing_events] == [("error", "no such run")]
    assert chunked.status_code == 413 and "5000 bytes" in chunked.json()["error"]["message"]  # streamed, no length
    assert no_route.status_code == 404 and no_route.json()["error"]["code"] == 404
    assert not_json.status_code == 422
    assert page404.status_code == 404 and "no such run" in page404.text
    assert not srv.scripted.requests  # nothing reached a model


def test_a_request_no_model_qualifies_for_is_refused_with_the_reason(live: Any, scripted: Any) -> None:
    srv0 = scripted(panel_script())
    tables = panel_config(srv0.base_url, research={"allowed_models": ["m-a", "m-b", "m-c", "m-spare"],
                                                   "max_output_usd_per_mtok": 0.01})
    srv = live(tables=tables)
    with _client(srv) as c:
        r = c.post("/api/runs", json={"question": GREAT_WALL})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "no_qualified_model"
    assert "research" in r.json()["error"]["message"]


def test_http_runs_are_budgeted_like_the_cli(live: Any, scripted: Any) -> None:
    """The config's per-run budget holds over HTTP exactly as for ``Council.ask``: same calls skipped."""
    from council import Council

    srv0 = scripted(panel_script())
    tables = {**panel_config(srv0.base_url), "budget_usd": 0.002}
    srv = live(tables=tables)
    with _client(srv) as c:
        info = c.post("/v1/chat/completions", json={"model": "council/research", "messages": [
            {"role": "user", "content": GREAT_WALL}]}).json()
    http_run = Store(_db(srv)).load_run(info["council"]["run_id"])
    direct = Council({**tables, "database": _db(srv)}).ask(GREAT_WALL)
    assert http_run.total_cost_usd <= 0.002 and direct.total_cost_usd <= 0.002
    shape = lambda calls: sorted((x.member_label, x.model, x.status, x.error_kind) for x in calls)  # noqa: E731
    assert shape(http_run.calls) == shape(direct.calls)
    assert any(x.status == "skipped" and x.error_kind == "budget" for x in http_run.calls)


def test_batches_and_model_stats(live: Any, tmp_path: Any) -> None:
    from council.batch.runner import check_many

    srv = live()
    check_many(["The Great Wall is visible from orbit.", "Water boils at 100 C."], config=str(srv.config_path),
               db=_db(srv), concurrency=2)
    with _client(srv) as c:
        batches = c.get("/api/batches").json()
        one = c.get(f"/api/batches/{batches[0]['batch_id']}").json()
        stats = c.get("/api/models/stats").json()
        page = c.get(f"/batches/{batches[0]['batch_id']}")
        none = c.get("/api/batches/nope")
    assert len(batches) == 1 and batches[0]["total"] == 2 and batches[0]["done"] == 2
    assert [i["claim"] for i in one["items"]] == ["The Great Wall is visible from orbit.", "Water boils at 100 C."]
    assert one["spent_usd"] == pytest.approx(sum(i["cost_usd"] for i in one["items"]))
    assert str(tmp_path) not in json.dumps(batches)  # the input file's name only, no directory
    stored = Store(_db(srv))
    calls = [x for r in stored.list_runs(10) for x in stored.load_run(r.run_id).calls]
    assert sum(m["calls"] for m in stats["models"]) == len(calls)
    assert page.status_code == 200 and "Water boils at 100 C." in page.text
    assert none.status_code == 404
