"""``council serve`` benchmark: page render time for a big run, 50 concurrent councils through the
OpenAI-compatible endpoint, and the service's latency overhead over ``Council.aask``.

Setup: the scripted OpenAI-compatible server (loopback) plays three members and an adjudicator; the
service runs as a real ``council serve`` subprocess on a free loopback port, on a SQLite file in a
temporary directory (embedding ``lexical``, so clustering 500 claims costs little).

1. **500 claims**: each member states 167 distinct numbered claims (one question), so the run has 501
   claims and about 1,100 graph nodes. Measured: server time to answer ``GET /runs/ID`` and
   ``GET /runs/ID/graph`` (median of ``--repeat``), their sizes, and, where Chromium and playwright are
   installed, the time headless Chromium takes to load the graph page until the viewer has drawn every node.
2. **50 concurrent councils**: ``--concurrent`` chat completions at once with the official ``openai``
   async client (members at 100 ms). Checked: every request answered 200, one run per request, and the
   store's call records equal the requests the scripted server received (none lost, none double-billed).
3. **Overhead**: ``--sequential`` questions one at a time through ``POST /v1/chat/completions`` and the
   same number through ``Council.aask`` in this process, same panel and server; the difference of the
   medians is what the HTTP service adds.

    python benchmarks/bench_serve.py [--repeat 5] [--concurrent 50] [--sequential 10]
"""

from __future__ import annotations

import os

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Is the Great Wall of China visible from low Earth orbit with the naked eye?"
BIG = "List everything you know about statement numbers."


def _answer(text: str, claims: list[tuple[str, float]]) -> dict[str, Any]:
    return {"answer": text, "claims": [{"text": t, "confidence": c} for t, c in claims]}


def script(latency: float) -> dict[str, Any]:
    def many(member: int) -> dict[str, Any]:
        return _answer(f"Member {member} lists statements.", [
            (f"Statement number {member * 1000 + i} holds for member {member}.", 0.8) for i in range(167)])

    models: dict[str, Any] = {}
    for k, name in enumerate(("m-a", "m-b", "m-c")):
        yes = name != "m-c"
        models[name] = {"latency": latency, "answers": [
            {"match": "statement numbers", "content": many(k + 1)},
            {"content": _answer("No." if yes else "Yes.", [(
                "The Great Wall is not visible to the naked eye from low Earth orbit." if yes else
                "The Great Wall is visible to the naked eye from low Earth orbit.", 0.8)])}]}
    models["judge"] = {"latency": latency, "answers": [{"content": {
        "answer": "No: it is not visible.", "confidence": 0.8, "supported": ["C1"], "contradicted": [],
        "rationale": "scripted"}}]}
    return {"seed": 1, "models": models}


def config(base_url: str, db: str) -> dict[str, Any]:
    def entry(name: str, quality: float, provider: str) -> dict[str, Any]:
        return {"model": f"openai/{name}", "api_base": base_url, "quality": quality, "provider": provider,
                "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}

    return {"database": db, "embedding": "lexical",
            "models": {"m-a": entry("m-a", 80, "pa"), "m-b": entry("m-b", 70, "pb"), "m-c": entry("m-c", 60, "pc"),
                       "judge": entry("judge", 90, "pj")},
            "policies": {"research": {"allowed_models": ["m-a", "m-b", "m-c"], "timeout_s": 60.0,
                                      "max_output_tokens": 8000},
                         "adjudication": {"allowed_models": ["judge"], "timeout_s": 60.0}}}


def _toml(tables: dict[str, Any]) -> str:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import to_toml

    return str(to_toml(tables))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(config_path: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = _free_port()
    env = {**os.environ, "COUNCIL_DB": str(tmp / "unused.db"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "council", "serve", "--port", str(port), "--config", str(config_path)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/v1/models", timeout=5).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("council serve did not start")


def _chat(base: str, question: str) -> dict[str, Any]:
    import httpx

    r = httpx.post(base + "/v1/chat/completions", timeout=300, json={"model": "council/research", "messages": [
        {"role": "user", "content": question}]})
    r.raise_for_status()
    return dict(r.json())


def bench_render(base: str, repeat: int) -> list[tuple[str, str, str]]:
    import httpx

    info = _chat(base, BIG)["council"]
    run_id = info["run_id"]
    rows = []
    detail = httpx.get(f"{base}/api/runs/{run_id}", timeout=120).json()
    for path, what in ((f"/runs/{run_id}", "run page"), (f"/runs/{run_id}/graph", "graph page")):
        times, size = [], 0
        for _ in range(repeat):
            t = time.perf_counter()
            r = httpx.get(base + path, timeout=300)
            times.append(time.perf_counter() - t)
            size = len(r.content)
        rows.append((what, f"{statistics.median(times) * 1000:.0f} ms", f"{size / 1e6:.2f} MB"))
    rows.append(("claims in the run", str(len(detail["claims"])), ""))
    browser = browser_draw(base, run_id, repeat)
    if browser:
        rows.append(browser)
    return rows


def browser_draw(base: str, run_id: str, repeat: int) -> tuple[str, str, str] | None:
    import shutil

    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError:
        return None
    if chromium is None:
        return None
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = b.new_page()
        times = []
        count = 0
        for _ in range(repeat):
            t = time.perf_counter()
            page.goto(f"{base}/runs/{run_id}/graph")
            page.wait_for_selector(".council-graph[data-ready]", timeout=300_000)
            times.append(time.perf_counter() - t)
            count = page.locator("g.cg-node").count()
        b.close()
    return ("graph page in Chromium, load to drawn", f"{statistics.median(times) * 1000:.0f} ms", f"{count} nodes drawn")


async def bench_concurrent(base: str, n: int, db: str, scripted: Any) -> list[tuple[str, str, str]]:
    import openai

    from council.store.db import Store

    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=600)
    before_requests = len(scripted.requests)
    store = Store(db)
    before_runs = {r.run_id for r in store.list_runs(100000)}

    async def one(i: int) -> Any:
        return await client.chat.completions.create(model="council/research", messages=[
            {"role": "user", "content": f"{QUESTION} (request {i})"}])

    t = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    wall = time.perf_counter() - t
    ok = [r for r in results if not isinstance(r, BaseException)]
    run_ids = {r.model_extra["council"]["run_id"] for r in ok}
    new_runs = [r.run_id for r in store.list_runs(100000) if r.run_id not in before_runs]
    records = sum(len(store.load_run(rid).calls) for rid in new_runs)
    requests = len(scripted.requests) - before_requests
    usage_ok = all(r.usage.total_tokens == sum(c.prompt_tokens + c.completion_tokens
                                               for c in store.load_run(r.model_extra["council"]["run_id"]).calls) for r in ok)
    await client.close()
    return [("requests sent / answered 200", f"{n} / {len(ok)}", "all complete" if len(ok) == n else "LOST SOME"),
            ("runs stored / distinct run ids", f"{len(new_runs)} / {len(run_ids)}", ""),
            ("call records / model requests served", f"{records} / {requests}",
             "equal" if records == requests else "MISMATCH"),
            ("usage equals the records' tokens", "yes" if usage_ok else "NO", ""),
            ("wall time", f"{wall:.2f} s", f"{n / wall:.1f} councils/s")]


async def bench_overhead(base: str, tables: dict[str, Any], n: int) -> list[tuple[str, str, str]]:
    from council import Council

    council = Council(tables)
    await council.aask(QUESTION)  # warm: imports, graph compiled, HTTP clients open
    await asyncio.to_thread(_chat, base, QUESTION)
    direct, http = [], []
    for i in range(n):
        t = time.perf_counter()
        await council.aask(f"{QUESTION} (direct {i})")
        direct.append(time.perf_counter() - t)
        t = time.perf_counter()
        await asyncio.to_thread(_chat, base, f"{QUESTION} (http {i})")
        http.append(time.perf_counter() - t)
    d, h = statistics.median(direct), statistics.median(http)
    return [("Council.aask in process (median)", f"{d * 1000:.0f} ms", ""),
            ("POST /v1/chat/completions (median)", f"{h * 1000:.0f} ms", ""),
            ("overhead of the service", f"{(h - d) * 1000:+.0f} ms", f"ratio {h / d:.2f}")]


def _table(title: str, rows: list[tuple[str, str, str]]) -> None:
    print(f"\n### {title}\n\n| measure | value | note |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--concurrent", type=int, default=50)
    ap.add_argument("--sequential", type=int, default=10)
    ap.add_argument("--latency", type=float, default=0.1, help="scripted members' latency, seconds")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from council.testing import ScriptedServer

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    scripted = ScriptedServer(script(args.latency)).start()
    db = f"sqlite:///{tmp / 'council.db'}"
    tables = config(scripted.base_url, db)
    path = tmp / "council.toml"
    path.write_text(_toml(tables), encoding="utf-8")
    proc, base = start_service(path, tmp)
    try:
        with os.popen("cat /proc/loadavg") as f:
            print(f"load average at start: {f.read().split()[0]}")
        _table(f"render: a run with 500 claims (median of {args.repeat})", bench_render(base, args.repeat))
        _table(f"{args.concurrent} concurrent councils through /v1/chat/completions",
               asyncio.run(bench_concurrent(base, args.concurrent, db, scripted)))
        _table(f"overhead over Council.aask ({args.sequential} sequential questions each)",
               asyncio.run(bench_overhead(base, tables, args.sequential)))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        scripted.stop()


if __name__ == "__main__":
    main()
