"""``council check --engine ray`` on a real multi-node Ray cluster on this machine (``ray.cluster_utils.
Cluster``: a head and worker nodes, each its own raylet and worker processes, all on loopback; one cluster
for the module) against the real PostgreSQL server, one database per test.

What is checked: the same results as a local run of the same batch; an actor killed and a node removed
mid-batch, and every claim still checked exactly once with one call record per request the scripted server
received; two invocations drawing on one database ceiling together spend no more than it; the driver
killed and the same command rerun finishes the batch; workers whose Python lacks the project, and
PostgreSQL cut off mid-batch (through a loopback proxy), each give a one-line error and exit status 2, and
the same command rerun once they are fixed finishes the batch; SQLite across nodes and an unreachable
cluster are refused with a clear error."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import to_toml
from council.batch import check_many
from council.errors import ConfigError
from council.store.db import Store
from support import (DISPUTED, TcpProxy, batch_config, claims, cli_env, db_rows, finish, members_script, start,
                     write_jsonl)

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A head node and one worker node, one CPU each, on loopback only, for the whole module."""
    saved = {k: os.environ.get(k) for k in ("RAY_USAGE_STATS_ENABLED", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # Ray resolves 127.0.0.1 to the machine's outward address unless told this is a one-machine cluster:
    # then every node, the GCS and the drivers (the CLI processes too: they inherit it) stay on loopback.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    try:
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _results(report: Any) -> list[tuple[Any, ...]]:
    return [(r.id, r.status, r.label, r.contested, round(r.cost_usd, 12)) for r in report.results]


def _calls_match_requests(db: str, server: Any) -> None:
    assert db_rows(db, "SELECT COUNT(*) FROM calls WHERE status != 'skipped'")[0][0] == server.stats()["total_requests"]
    assert db_rows(db, "SELECT COUNT(*) FROM calls WHERE status = 'pending'")[0][0] == 0


def _each_claim_once(db: str, n: int) -> None:
    assert db_rows(db, "SELECT status, COUNT(*) FROM batch_items GROUP BY status") == [("full", n)]
    assert db_rows(db, "SELECT COUNT(*), COUNT(DISTINCT run_id) FROM runs")[0] == (n, n)
    assert db_rows(db, "SELECT COUNT(*) FROM verdicts")[0][0] == n
    assert not db_rows(db, "SELECT run_id, member_label FROM answers GROUP BY run_id, member_label HAVING COUNT(*) > 1")


def test_same_results_as_a_local_run(cluster: Any, scripted, tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    # The disputed claim first: how the vote weighs members is learned from the claims already stored, so
    # only a claim checked before any other is decided alike whatever the order the engines finish in.
    rows = [{"id": "d", "claim": f"{DISPUTED} claim."}] + claims(12) + ["{bad"]
    path = write_jsonl(tmp_path / "claims.jsonl", rows)
    local_srv, ray_srv = scripted(members_script()), scripted(members_script())
    local = check_many(path, config=batch_config(local_srv.base_url), db=f"sqlite:///{tmp_path / 'local.db'}",
                       concurrency=4, budget_usd=1.0)
    seen: list[tuple[int, int]] = []
    remote = check_many(path, config=batch_config(ray_srv.base_url), db=pg_url, concurrency=4, budget_usd=1.0,
                        engine="ray", workers=2, ray_address=cluster.address, out=tmp_path / "out.jsonl",
                        on_progress=lambda p: seen.append((p.done, p.total)))
    assert remote.counts == local.counts == {"full": 12, "degraded": 1, "invalid": 1}
    assert remote.contested == local.contested == 1
    assert _results(remote) == _results(local)
    assert remote.total_cost_usd == pytest.approx(local.total_cost_usd) and remote.spent_usd == pytest.approx(remote.total_cost_usd)
    assert remote.checked == 13 and seen[-1] == (14, 14)
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["id"] for x in lines] == [r.id for r in remote.results]
    _calls_match_requests(pg_url, ray_srv)
    # The batch's budget lives in the database: its ledger holds nothing and has spent what the calls cost.
    (limit, spent, held), = db_rows(pg_url, "SELECT limit_usd, spent_usd, held_usd FROM budget_ledgers")
    assert limit == 1.0 and held == pytest.approx(0.0, abs=1e-12) and spent == pytest.approx(remote.total_cost_usd)
    # Both actors worked, and a rerun finds nothing to do.
    assert len({o for (o,) in db_rows(pg_url, "SELECT DISTINCT finished_by FROM batch_items WHERE finished_by IS NOT NULL")}) == 2
    again = check_many(path, config=batch_config(ray_srv.base_url), db=pg_url, engine="ray", ray_address=cluster.address)
    assert again.checked == 0 and _results(again) == _results(remote)


def test_sqlite_across_nodes_and_an_unreachable_cluster_are_refused(cluster: Any, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "claims.jsonl", claims(2))
    with pytest.raises(ConfigError, match="SQLite is one machine's file.*--db postgresql://"):
        check_many(path, config=batch_config("http://127.0.0.1:9"), db=f"sqlite:///{tmp_path / 'x.db'}",
                   engine="ray", ray_address=cluster.address)
    with pytest.raises(ConfigError, match="cannot connect to the Ray cluster at 127.0.0.1:9"):
        check_many(path, config=batch_config("http://127.0.0.1:9"), db=f"sqlite:///{tmp_path / 'x.db'}",
                   engine="ray", ray_address="127.0.0.1:9")
    code, out, err = _finish(_start(["check", str(path), "--engine", "ray", "-p", "2", "--db", str(tmp_path / "y.db")],
                                    tmp_path))
    assert code == 2 and "--processes is for the local engine" in err


def _actor_pids(db: str) -> set[int]:
    owners = db_rows(db, "SELECT DISTINCT lease_owner FROM batch_items WHERE status = 'running'")
    return {int(o.split(":")[1]) for (o,) in owners if o}


def _parent(pid: int) -> int | None:
    """The parent of process ``pid``, or None once it is gone (a killed actor's leases outlive it)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def _kill_when_quiet(db: str, server: Any, min_done: int, deadline: float) -> None:
    """Wait until ``min_done`` claims are finished and every written-ahead call is at the server (so the
    kill leaves no record of a request that was never sent)."""
    Store(db).engine.dispose()  # the schema, as the driver makes it (both migrate under one lock)
    while True:
        assert time.monotonic() < deadline, "the batch never reached the point to kill it"
        done = db_rows(db, "SELECT COUNT(*) FROM batch_items WHERE status = 'full'")[0][0]
        pending = db_rows(db, "SELECT COUNT(*) FROM calls WHERE status = 'pending'")[0][0]
        if done >= min_done and pending and pending == server.stats()["in_flight"]:
            return
        time.sleep(0.01)


def test_an_actor_and_a_node_killed_mid_batch_every_claim_exactly_once(cluster: Any, scripted, tmp_path: Path,
                                                                       pg_url: str) -> None:  # noqa: F811
    victim_node = cluster.add_node(num_cpus=1)  # a third node, so that one can be lost
    cluster.wait_for_nodes()
    server = scripted(members_script(latency=0.4))
    n = 40
    path = write_jsonl(tmp_path / "claims.jsonl", claims(n))
    box: dict[str, Any] = {}

    def drive() -> None:
        try:
            box["report"] = check_many(path, config=batch_config(server.base_url), db=pg_url, concurrency=4,
                                       engine="ray", workers=2, ray_address=cluster.address, lease_s=20.0)
        except BaseException as exc:  # reported by the test thread
            box["error"] = exc

    driver = threading.Thread(target=drive)
    driver.start()
    deadline = time.monotonic() + 300
    try:
        _kill_when_quiet(pg_url, server, 4, deadline)
        pids = sorted(_actor_pids(pg_url))
        os.kill(pids[0], signal.SIGKILL)  # an actor dies; Ray restarts it, and its claims are taken over
        _kill_when_quiet(pg_url, server, 14, deadline)
        raylets = {n_.all_processes["raylet"][0].process.pid: n_ for n_ in cluster.worker_nodes}
        hosting: list[Any] = []
        while not hosting and time.monotonic() < deadline:  # the restarted actor may not have said its pid yet
            hosting = [raylets[pp] for p in _actor_pids(pg_url) if (pp := _parent(p)) in raylets]
            if not hosting:
                time.sleep(0.2)
        assert hosting, "no actor runs on a worker node"
        victim_node = hosting[0]
        _kill_when_quiet(pg_url, server, 14, deadline)  # again: finding the node took a while
        cluster.remove_node(victim_node, allow_graceful=False)  # a whole node is lost
    finally:
        driver.join(timeout=400)
    assert "error" not in box, box.get("error")
    report = box["report"]
    assert report.counts == {"full": n} and report.checked == n
    _each_claim_once(pg_url, n)
    _calls_match_requests(pg_url, server)
    assert db_rows(pg_url, "SELECT COUNT(*) FROM calls WHERE status = 'interrupted'")[0][0] > 0
    assert db_rows(pg_url, "SELECT COUNT(*) FROM batch_items WHERE leases > 1")[0][0] > 0  # claims were taken over
    if len(cluster.worker_nodes) < 1:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()


def test_two_invocations_share_one_database_ceiling(cluster: Any, scripted, tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    server = scripted(members_script(latency=0.05))
    cfg = tmp_path / "council.toml"
    cfg.write_text(to_toml(batch_config(server.base_url)), encoding="utf-8")
    code, out, err = _finish(_start(["budget", "set", "team", "--usd", "0.012", "--per", "day", "--db", pg_url], tmp_path))
    assert code == 0, err
    files = [write_jsonl(tmp_path / f"{x}.jsonl", claims(20, prefix=x)) for x in ("a", "b")]
    procs = [_start(["check", str(f), "-c", str(cfg), "--db", pg_url, "--engine", "ray", "--ray-address", cluster.address,
                     "--workers", "1", "-j", "4", "-q", "--json"], tmp_path) for f in files]
    reports = []
    for p in procs:
        code, out, err = _finish(p, timeout=400)
        assert code == 1, err  # some claims were skipped for budget
        reports.append(json.loads(out))
    spent = db_rows(pg_url, "SELECT COALESCE(SUM(cost_usd), 0) FROM calls")[0][0]
    assert 0.006 < spent <= 0.012  # together, never past the ceiling (and most of it used)
    # Which invocation gets the money depends on which one reaches the cluster first (Ray start-up takes
    # seconds): together they checked claims, and each stopped at the shared ceiling with claims left over.
    assert sum(r["counts"].get("full", 0) for r in reports) > 0, reports
    assert all(r["counts"].get("skipped_budget", 0) > 0 for r in reports), reports
    assert sum(r["spent_usd"] for r in reports) == pytest.approx(spent)
    (limit, used, held), = db_rows(pg_url, "SELECT limit_usd, spent_usd, held_usd FROM budget_ledgers "
                                           "WHERE ledger_id LIKE 'ceiling:team:%'")
    assert limit == 0.012 and held == pytest.approx(0.0, abs=1e-12) and used == pytest.approx(spent)
    code, out, err = _finish(_start(["budget", "show", "--db", pg_url], tmp_path))
    assert code == 0 and re.search(r"team .*0\.012000", out), out


def _finished_once(tmp_path: Path, pg_url: str, server: Any, n: int) -> None:
    """The rerun finished the batch: every claim in out.jsonl, full, stored once; one record per request."""
    results = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["id"] for r in results) == sorted(c["id"] for c in claims(n)) and {r["status"] for r in results} == {"full"}
    _each_claim_once(pg_url, n)
    _calls_match_requests(pg_url, server)


def _batch_args(tmp_path: Path, server: Any, db: str, cluster: Any, n: int) -> list[str]:
    """``council check`` of ``n`` claims on the module's cluster with two workers, writing out.jsonl."""
    cfg = tmp_path / "council.toml"
    cfg.write_text(to_toml(batch_config(server.base_url)), encoding="utf-8")
    path = write_jsonl(tmp_path / "claims.jsonl", claims(n))
    return ["check", str(path), "-c", str(cfg), "--db", db, "--engine", "ray", "--ray-address", cluster.address,
            "--workers", "2", "-j", "4", "-q", "--out", str(tmp_path / "out.jsonl")]


def test_driver_killed_then_the_same_command_resumes(cluster: Any, scripted, tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    server = scripted(members_script(latency=0.3))
    n = 24
    args = _batch_args(tmp_path, server, pg_url, cluster, n)
    proc = _start(args, tmp_path)
    try:
        _kill_when_quiet(pg_url, server, 4, time.monotonic() + 300)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert not (tmp_path / "out.jsonl").exists()
    assert db_rows(pg_url, "SELECT COUNT(*) FROM batch_items WHERE status = 'full'")[0][0] < n
    code, out, err = _finish(_start(args, tmp_path), timeout=400)
    assert code == 0, err
    _finished_once(tmp_path, pg_url, server, n)



def _without_council(tmp: Path) -> dict[str, Any]:
    """A runtime_env whose workers run a Python that has Ray and every dependency but not the project, as
    on a node whose image lacks it: a venv whose only path is the shared site-packages, added by a .pth
    line (so the project's own editable-install .pth there is not run)."""
    venv = tmp / "no-council"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    (tmp / "empty").mkdir()
    # The test's nodes were started from this process, whose PYTHONPATH has the project: a real node's
    # workers would not inherit that, so the job sets it to an empty folder.
    return {"py_executable": str(venv / "bin" / "python"), "env_vars": {"PYTHONPATH": str(tmp / "empty")}}


def test_a_worker_without_the_project_is_a_clear_error_and_a_rerun_finishes(cluster: Any, scripted, tmp_path: Path,
                                                                           pg_url: str) -> None:  # noqa: F811
    server = scripted(members_script())
    n = 6
    args = _batch_args(tmp_path, server, pg_url, cluster, n)
    # The job's runtime_env, as `ray job submit --runtime-env-json ...` hands it to the driver; the driver
    # runs outside the source tree (Ray puts the driver's folder on its workers' path).
    job = json.dumps({"runtime_env": _without_council(tmp_path)})
    env = cli_env(tmp_path / "default.db", columns=200, RAY_JOB_CONFIG_JSON_ENV_VAR=job)
    bad = finish(subprocess.Popen([sys.executable, "-m", "council", *args], cwd=tmp_path, env=env, text=True,
                                  encoding="utf-8", stdout=subprocess.PIPE, stderr=subprocess.PIPE), 300)
    line = bad.error_line(2)
    assert re.search(r"a Ray worker on node 127\.0\.0\.1 cannot import council \(No module named 'council[.\w]*'\): "
                     r"install the project, the driver's version, .*pip install \"council\[ray\]==\d", line), line
    assert "runtime_env" in line and "rerun the same command" in line
    # Nothing lost, nothing spent: the claims wait in the database, no request left.
    assert db_rows(pg_url, "SELECT status, COUNT(*) FROM batch_items GROUP BY status") == [("pending", n)]
    assert db_rows(pg_url, "SELECT COUNT(*) FROM calls")[0][0] == 0 and server.stats()["total_requests"] == 0
    assert not (tmp_path / "out.jsonl").exists()
    code, out, err = _finish(_start(args, tmp_path), timeout=300)  # the same command, workers that have it
    assert code == 0, err
    assert len((tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()) == n
    _each_claim_once(pg_url, n)
    _calls_match_requests(pg_url, server)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_postgresql_unreachable_mid_batch_then_the_same_command_finishes(cluster: Any, scripted, tmp_path: Path,
                                                                         pg_url: str) -> None:  # noqa: F811
    server = scripted(members_script(latency=0.3))
    n = 24
    with TcpProxy(("127.0.0.1", 5432)) as proxy:  # the batch reaches PostgreSQL only through it
        args = _batch_args(tmp_path, server, proxy.url(pg_url), cluster, n)
        proc = _start(args, tmp_path)
        try:
            _kill_when_quiet(pg_url, server, 4, time.monotonic() + 300)
            actors = _actor_pids(pg_url)
            proxy.cut()  # every connection of the driver and the actors drops; new ones are refused
            bad = finish(proc, 120)
        finally:
            if proc.poll() is None:
                proc.kill()
        line = bad.error_line(2)
        assert re.search(rf"cannot \w+( \w+)? postgresql(\+psycopg)?://postgres@127\.0\.0\.1:{proxy.port}/\w+: OperationalError: .*"
                         r"the batch stopped; nothing is lost: rerun the same command once the database answers", line), line
        assert not (tmp_path / "out.jsonl").exists()
        finished = db_rows(pg_url, "SELECT COUNT(*) FROM batch_items WHERE status = 'full'")[0][0]
        assert 4 <= finished < n
        assert not db_rows(pg_url, "SELECT status FROM batch_items WHERE status NOT IN ('full', 'pending', 'running')")
        deadline = time.monotonic() + 60  # the driver stopped its actors on the way out
        while any(_alive(p) for p in actors):
            assert time.monotonic() < deadline, "the actors outlived the driver"
            time.sleep(0.05)
        proxy.restore()
        code, out, err = _finish(_start(args, tmp_path), timeout=400)
    assert code == 0, err
    _finished_once(tmp_path, pg_url, server, n)


def _start(args: list[str], tmp: Path) -> Any:
    return start(args, cli_env(tmp / "default.db", columns=200))


def _finish(proc: Any, timeout: float = 120) -> tuple[int, str, str]:
    return finish(proc, timeout).result()
