"""The web pages in a real headless Chromium (Debian's ``chromium`` package, driven by playwright).

Skipped, with the reason, where playwright or the browser is missing (``.ci/run`` installs the browser
where apt is available). The browser is kept to loopback: background networking is off and every host
name but 127.0.0.1 resolves to nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

from conftest import GREAT_WALL, answer, panel_script  # noqa: E402
from serve_support import live  # noqa: E402,F401

from council.provenance.graph import build_graph  # noqa: E402
from council.store.db import Store  # noqa: E402

CHROMIUM = os.environ.get("COUNCIL_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-pings", "--disable-domain-reliability", "--disable-default-apps",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
INJECTED = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        except Exception as exc:  # the browser is there but cannot start here
            pytest.skip(f"Chromium at {CHROMIUM} does not start: {str(exc).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context()
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    dialogs: list[str] = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pg.dialogs = dialogs  # type: ignore[attr-defined]
    yield pg
    ctx.close()


def _ask(srv: Any, question: str = GREAT_WALL) -> str:
    with httpx.Client(timeout=120) as c:
        r = c.post(srv.url + "/v1/chat/completions", json={"model": "council/research", "messages": [
            {"role": "user", "content": question}]})
    return str(r.json()["council"]["run_id"])


def _store(srv: Any) -> Store:
    import tomllib

    return Store(tomllib.loads(srv.config_path.read_text())["database"])


def test_runs_page_lists_the_runs(live: Any, page: Any) -> None:
    srv = live()
    ids = [_ask(srv), _ask(srv)]
    page.goto(srv.url + "/")
    rows = page.locator("tr.run-row")
    assert rows.count() == 2
    assert [rows.nth(i).get_attribute("data-run") for i in range(2)] == ids[::-1]
    assert GREAT_WALL[:40] in rows.first.inner_text()
    page.select_option("select[name=contested]", "no")
    page.click("form.filters button")
    assert page.locator("tr.run-row").count() == 0  # both runs went to the adjudicator


def test_run_page_verdict_and_graph_with_claim_billing_record(live: Any, page: Any) -> None:
    srv = live()
    run_id = _ask(srv)
    run = _store(srv).load_run(run_id)
    g = build_graph(run)
    page.goto(f"{srv.url}/runs/{run_id}")
    assert page.inner_text("#verdict .answer") == run.verdict.answer
    assert page.inner_text("#verdict .confidence") == f"{run.verdict.confidence:.2f}"
    assert page.locator(".answer-card").count() == 3
    assert page.locator("#calls tbody tr").count() == len(run.calls)
    assert page.inner_text("#total-cost") == f"{run.total_cost_usd:.6f}"
    page.click("text=provenance graph")
    page.wait_for_selector(".council-graph[data-ready]")
    assert page.locator("g.cg-node").count() == g.number_of_nodes()
    assert page.locator("line.cg-edge").count() == g.number_of_edges()
    claim_id = run.verdict.support[0]
    claim = next(c for a in run.answers for c in a.claims if c.claim_id == claim_id)
    call = next(c for c in run.calls for a in run.answers if a.answer_id == claim.answer_id and c.call_id == a.call_id)
    page.locator(f'g.cg-node[data-id="claim:{claim_id}"] circle').click()
    details = page.inner_text(".cg-details")
    assert "billing record" in details and call.call_id in details
    assert f"{call.cost_usd:.6f}" in details and call.model in details and "research@" in details
    assert page.locator("g.cg-node.cg-hi").count() >= 5  # claim, answer, call, model, policy highlighted
    before = page.get_attribute("g.cg-view", "transform")
    box = page.locator("svg.cg-svg").bounding_box()
    page.mouse.move(box["x"] + 20, box["y"] + box["height"] - 10)
    page.mouse.wheel(0, -300)
    zoomed = page.get_attribute("g.cg-view", "transform")
    page.mouse.down()
    page.mouse.move(box["x"] + 120, box["y"] + box["height"] - 60)
    page.mouse.up()
    assert before != zoomed != page.get_attribute("g.cg-view", "transform")


def test_a_question_asked_from_the_form_streams_to_a_verdict(live: Any, page: Any) -> None:
    slow = panel_script(**{"m-b": {"latency": 0.5, "answers": [{"content": answer("No.", [
        ("It cannot be seen with the naked eye from low Earth orbit.", 0.85)])}]}})
    srv = live(slow)
    page.goto(srv.url + "/ask")
    page.fill("textarea[name=question]", GREAT_WALL)
    page.click("#ask-form button")
    page.wait_for_selector("#events li")  # events arrive while the council works
    page.wait_for_selector("#result:not([hidden])")
    runs = _store(srv).list_runs(5)
    assert len(runs) == 1
    run = _store(srv).load_run(runs[0].run_id)
    assert page.inner_text("#result-answer") == run.verdict.answer
    events = page.locator("#events li").all_inner_texts()
    assert events[0].startswith("ask started") and sum("answered" in e for e in events) == 3
    assert any(e.startswith("verdict:") for e in events)
    page.click("#result-link")
    assert page.url.endswith(f"/runs/{run.run_id}")


def test_an_injected_script_in_a_claim_is_inert(live: Any, page: Any) -> None:
    script = panel_script(**{"m-a": {"latency": 0.05, "answers": [{"content": answer("No, it is not visible.", [
        (f"The wall is not visible. {INJECTED}", 0.9)])}]}})
    srv = live(script)
    run_id = _ask(srv)
    for path in (f"/runs/{run_id}", f"/runs/{run_id}/graph", "/"):
        page.goto(srv.url + path)
        page.wait_for_load_state("load")
        assert page.evaluate("window.__pwned") is None, path
    page.goto(f"{srv.url}/runs/{run_id}")
    assert INJECTED in page.locator(".claim-text").all_inner_texts()[0] or any(
        INJECTED in t for t in page.locator(".claim-text").all_inner_texts())
    page.goto(f"{srv.url}/runs/{run_id}/graph")
    page.wait_for_selector(".council-graph[data-ready]")
    claim = next(c for a in _store(srv).load_run(run_id).answers for c in a.claims if "__pwned" in c.text)
    page.locator(f'g.cg-node[data-id="claim:{claim.claim_id}"] circle').click()
    assert INJECTED in page.inner_text(".cg-details")
    assert page.evaluate("window.__pwned") is None and not page.dialogs


def test_the_offline_html_file_works_without_a_server(live: Any, page: Any, tmp_path: Any) -> None:
    srv = live()
    run_id = _ask(srv)
    with httpx.Client(timeout=60) as c:
        html = c.get(f"{srv.url}/api/runs/{run_id}/graph", params={"format": "html"}).text
    path = tmp_path / "graph.html"
    path.write_text(html, encoding="utf-8")
    srv.stop()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_selector(".council-graph[data-ready]")
    assert page.locator("g.cg-node").count() == build_graph(_store(srv).load_run(run_id)).number_of_nodes()
    assert requests == [path.as_uri()]  # nothing fetched: script, style and data are inline


def test_batch_page_shows_live_progress(live: Any, page: Any) -> None:
    import threading
    import time

    from council.batch.runner import check_many

    slow = {name: {"latency": 0.4, "answers": [{"content": answer("SUPPORTED.", [("It holds.", 0.8)],
                                                                  label="SUPPORTED")}]} for name in ("m-a", "m-b", "m-c")}
    srv = live(panel_script(**slow))
    claims = [f"Claim number {i} holds." for i in range(6)]
    db = _store(srv).url
    worker = threading.Thread(target=check_many, args=(claims,), kwargs={
        "config": str(srv.config_path), "db": db, "concurrency": 1}, daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while not (batches := httpx.get(srv.url + "/api/batches", timeout=30).json()):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    page.goto(f"{srv.url}/batches/{batches[0]['batch_id']}")
    first = int(page.inner_text("#batch-done"))
    assert first < 6 and page.inner_text("#batch-total") == "6"
    sync_api.expect(page.locator("#batch-done")).to_have_text("6", timeout=120_000)  # no reload: the page polls
    worker.join(timeout=120)
    assert page.evaluate("document.getElementById('batch-progress').value") == 6
    assert "full 6" in page.inner_text("#batch-counts")


def test_a_running_run_page_follows_the_run_to_its_verdict(live: Any, page: Any) -> None:
    slow = panel_script(**{"m-c": {"latency": 1.5, "answers": [{"content": answer("Yes.", [
        ("The Great Wall is visible to the naked eye from low Earth orbit.", 0.6)])}]}})
    srv = live(slow)
    with httpx.Client(timeout=120) as c:
        run_id = c.post(srv.url + "/api/runs", json={"question": GREAT_WALL}).json()["run_id"]
    page.goto(f"{srv.url}/runs/{run_id}")
    assert page.locator("#live").count() == 1  # still running when the page was served
    page.wait_for_selector("#live .events li")
    page.wait_for_selector("#verdict .answer")  # the page reloads itself when the run is done
    assert page.inner_text("#verdict .answer") == _store(srv).load_run(run_id).verdict.answer
