"""The driver of a Ray matrix: joining (and refusing) a cluster, progress, Ctrl-C; on a local
two-node cluster (ray.cluster_utils) it runs real cells.

Run alone with `pytest -m ray`. The cluster is started once per module: its start-up (~8 s on
the 2-core CI VM) is the largest cost here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from soak import profile as profiles
from soak.errors import ExitCode
from soak.runner import session
from soak.runner.ray.driver import CellsProgress, CellState, RayMatrix
from soak.runner.ray.node import MATRIX_ENV, NodeTag
from soak.store import Store
from tests.conftest import shm_regions, stub_processes
from tests.e2e import query, soak

ROOT = Path(__file__).resolve().parents[3]
MiB = 2**20
SHORT = "iterations = {n}\nwarmup = 1\nservers = 1\ninferences_per_model = 2\n"


def _profile(tmp_path: Path, text: str, name: str = "grid") -> profiles.Profile:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return profiles.load(str(path))


# -- without a cluster ------------------------------------------------------------------------
def test_ctrl_c_reaches_the_matrix_through_the_sessions_stopper(tmp_path):
    matrix = RayMatrix(_profile(tmp_path, SHORT.format(n=2)), Store(tmp_path / "r.db"))
    stopper = session.Stopper()
    stopper.stop()  # pressed before the matrix started: it hears of it when attached
    stopper._attach(matrix)
    assert matrix.cancels == 1
    stopper.stop()  # the second press force-cancels
    assert matrix.cancels == 2


def test_progress_line_says_pending_running_where_and_done():
    cells = (
        CellState("servers=1"),
        CellState("servers=2", "running", NodeTag("hostA", "abcdef0123456789")),
        CellState("servers=4", "done"),
    )
    assert CellsProgress(cells).line() == (
        "cells: 1 pending, 1 running (servers=2 on hostA/abcdef01), 1 done"
    )


def test_ray_missing_is_refused_with_the_install_line(tmp_path, monkeypatch):
    from soak.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets without Ray
    db = tmp_path / "r.db"
    result = CliRunner().invoke(main, ["run", "smoke", "--db", str(db), "--ray", "auto"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "soak: error: --ray needs Ray, which is not installed here; install it with: "
        "pip install 'soak[ray]'"
    ]
    assert not db.exists()


def test_a_ray_client_address_that_answers_nothing_is_refused_at_once(tmp_path):
    pytest.importorskip("ray")
    from soak.cli import main

    db = tmp_path / "r.db"
    started = time.monotonic()
    argv = ["run", "smoke", "--db", str(db), "--ray", "ray://127.0.0.1:1"]
    result = CliRunner().invoke(main, argv)
    took = time.monotonic() - started
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("soak: error: --ray ray://127.0.0.1:1: no Ray cluster answers there")
    assert took < 10, f"refused after {took:.1f} s"  # Ray's client alone retries for 30 s
    assert not db.exists()


# -- on a local two-node cluster --------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    os.environ["RAY_memory_monitor_refresh_ms"] = "0"
    started = time.monotonic()
    c = Cluster(
        initialize_head=True,
        connect=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "object_store_memory": 80 * MiB},
    )
    c.add_node(num_cpus=1, resources={"fake_gpu": 1, "slot": 1}, object_store_memory=80 * MiB)
    c.wait_for_nodes()
    print(f"local two-node cluster up in {time.monotonic() - started:.1f} s")
    yield c
    ray.shutdown()  # before Cluster.shutdown, which otherwise refuses to remove the head
    c.shutdown()


def _nothing_left(before_stubs: set[int], before_regions: set[str]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stubs, regions = stub_processes() - before_stubs, shm_regions() - before_regions
        if not stubs and not regions:
            return
        time.sleep(0.2)
    raise AssertionError(f"left behind: stubs {stubs}, regions {regions}")


def _runs(db: Path) -> list[dict]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY id")]
    finally:
        conn.close()


@pytest.mark.ray
@pytest.mark.e2e
def test_matrix_runs_on_both_nodes_into_one_database_as_a_local_run_would(cluster, tmp_path):
    text = (
        SHORT.format(n=3)
        + '[matrix]\ndatatype = ["int32", "fp32"]\ninferences_per_model = [1, 2]\n'
    )
    path = tmp_path / "grid.toml"
    path.write_text(text)
    db = tmp_path / "ray.db"
    started = time.monotonic()
    proc = soak(
        "run", str(path), "--db", str(db), "--no-progress", "--ray", cluster.address, timeout=240
    )
    ray_wall = time.monotonic() - started
    runs = _runs(db)
    assert len(runs) == 4, proc.stdout + proc.stderr
    assert len({r["ray_node_id"] for r in runs}) == 2  # both nodes took cells
    assert all(r["host"] and r["matrix"] == "grid" for r in runs)
    assert sorted(json.loads(r["cell"])["inferences_per_model"] for r in runs) == [1, 1, 2, 2]
    for r in runs:
        assert query(db, "SELECT count(*) FROM iterations WHERE run_id = ?", r["id"]) == [(3,)]
        assert query(
            db, "SELECT count(*) FROM samples WHERE run_id = ? AND kind = 'quiet'", r["id"]
        ) == [(3,)]
        assert query(db, "SELECT count(*) FROM findings WHERE run_id = ?", r["id"])[0][0] > 0
    for node in {r["ray_node_id"] for r in runs}:  # one CPU per node: one cell at a time
        spans = sorted((r["started_at"], r["ended_at"]) for r in runs if r["ray_node_id"] == node)
        assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:], strict=False)), (
            spans
        )
    assert "cells: 0 pending, 0 running, 4 done" in proc.stdout
    assert "running (" in proc.stdout  # where the running cells run was shown

    # The same matrix run locally: the same verdicts, cell by cell.
    local_db = tmp_path / "local.db"
    store = Store(local_db)
    started = time.monotonic()
    local = {}
    for analysis in session.run(profiles.load(str(path)), store):
        cell = query(local_db, "SELECT cell FROM runs WHERE id = ?", analysis.run_id)[0][0]
        local[cell] = analysis
    local_wall = time.monotonic() - started
    on_ray = {r["cell"]: (r["status"], r["verdict"], r["exit_code"]) for r in runs}
    assert on_ray == {k: (a.status, a.verdict, a.exit_code) for k, a in local.items()}
    assert proc.returncode == ExitCode.worst(a.exit_code for a in local.values())
    print(f"4 cells: Ray on two nodes {ray_wall:.1f} s, locally in one process {local_wall:.1f} s")


@pytest.mark.ray
@pytest.mark.e2e
def test_a_cell_needing_a_resource_lands_on_the_node_that_has_it(cluster, tmp_path):
    import ray

    prof = _profile(
        tmp_path,
        SHORT.format(n=2)
        + '[ray]\nresources = {fake_gpu = 1}\n[matrix]\ndatatype = ["int32", "fp32"]\n',
    )
    store = Store(tmp_path / "r.db")
    outcomes = RayMatrix(prof, store).run()
    assert [o.status for o in outcomes] == ["passed", "passed"]
    (fake_gpu_node,) = [n["NodeID"] for n in ray.nodes() if n["Resources"].get("fake_gpu")]
    assert {r["ray_node_id"] for r in _runs(tmp_path / "r.db")} == {fake_gpu_node}


@pytest.mark.ray
def test_a_cell_no_node_can_take_is_refused_before_any_run(cluster, tmp_path):
    path = tmp_path / "h100.toml"
    path.write_text(SHORT.format(n=2) + "[ray]\nresources = {gpu_h100 = 1}\n")
    db = tmp_path / "r.db"
    proc = soak("run", str(path), "--db", str(db), "--ray", cluster.address, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"soak: error: {path}: cell [h100] needs gpu_h100=1, which no live node of the cluster has"
    ]
    assert not db.exists()


@pytest.mark.ray
@pytest.mark.e2e
def test_a_node_that_dies_fails_its_cell_and_the_others_finish(cluster, tmp_path):
    doomed = cluster.add_node(num_cpus=1, resources={"slot": 1}, object_store_memory=80 * MiB)
    cluster.wait_for_nodes()
    doomed_id = doomed.node_id
    prof = _profile(
        tmp_path,
        SHORT.format(n=6)
        + '[ray]\nresources = {slot = 1}\n[matrix]\ndatatype = ["int32", "fp32"]\n',
    )
    before = stub_processes(), shm_regions()
    store = Store(tmp_path / "r.db")
    matrix = RayMatrix(prof, store)
    result: list = []
    runner = threading.Thread(target=lambda: result.extend(matrix.run()))
    runner.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        on_doomed = [s for s in matrix.states if s.node and s.node.ray_node_id == doomed_id]
        if on_doomed:
            break
        time.sleep(0.2)
    time.sleep(4)  # into its iterations
    cluster.remove_node(doomed)
    runner.join(timeout=180)
    assert not runner.is_alive()
    statuses = sorted(o.status for o in result)
    assert statuses == ["failed", "passed"], [o.reason for o in result]
    (failed,) = [o for o in result if o.status == "failed"]
    print(f"failed cell: {failed.reason}")
    assert "Ray cell on" in failed.reason and doomed_id[:8] in failed.reason
    (row,) = [r for r in _runs(tmp_path / "r.db") if r["status"] == "failed"]
    assert row["ray_node_id"] == doomed_id
    _nothing_left(*before)


@pytest.mark.ray
@pytest.mark.e2e
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_cancels_the_cells_and_leaves_nothing_behind(cluster, tmp_path, presses):
    prof = _profile(tmp_path, SHORT.format(n=40) + '[matrix]\ndatatype = ["int32", "fp32"]\n')
    before = stub_processes(), shm_regions()
    db = tmp_path / "r.db"
    matrix = RayMatrix(prof, Store(db))
    result: list = []
    runner = threading.Thread(target=lambda: result.extend(matrix.run()))
    runner.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not stub_processes() - before[0]:
        time.sleep(0.2)
    assert stub_processes() - before[0], "no cell started"
    for _ in range(presses):
        matrix.cancel()
    runner.join(timeout=120)
    assert not runner.is_alive()
    assert result and all(o.status == "interrupted" for o in result)
    if presses == 1:  # stopped after an iteration: its rows came home
        assert all(o.iterations_done >= 1 for o in result)
    _nothing_left(*before)
    assert not [p.pid for p in psutil.process_iter() if _marked(p, MATRIX_ENV)]


def _marked(proc, key: str) -> bool:
    try:
        return key in proc.environ()
    except Exception:  # noqa: BLE001 - vanished or not ours
        return False


@pytest.mark.ray
@pytest.mark.e2e
def test_tritonserver_cells_run_side_by_side_on_one_machine(cluster, tmp_path):
    """Two cells of target tritonserver, one per node of the local cluster (one machine):
    each starts its own server on loopback ports it picked, both pass, each server's own
    samples come home with the rows, and no server, stub or region is left."""
    from tests.target.test_remote_e2e import tritonservers

    before, servers_before = (stub_processes(), shm_regions()), tritonservers()
    path = tmp_path / "remote.toml"
    path.write_text(
        'target = "tritonserver"\nscenario = "traffic"\npurpose = "machinery"\n'
        + SHORT.format(n=3)
        + '[matrix]\nprotocol = ["http", "grpc"]\n'
    )
    db = tmp_path / "ray.db"
    proc = soak(
        "run", str(path), "--db", str(db), "--no-progress", "--ray", cluster.address, timeout=300
    )
    runs = _runs(db)
    assert [r["status"] for r in runs] == ["passed", "passed"], proc.stdout + proc.stderr
    assert len({r["ray_node_id"] for r in runs}) == 2  # side by side, one per node
    assert sorted(json.loads(r["config"])["run"]["protocol"] for r in runs) == ["grpc", "http"]
    pids = set()
    for r in runs:
        rows = query(db, "SELECT server, pid FROM server_samples WHERE run_id = ?", r["id"])
        assert len(rows) == 3 and {s for s, _ in rows} == {0}
        pids |= {p for _, p in rows}
    assert len(pids) == 2  # a server of its own per cell
    assert query(db, "SELECT count(*) FROM events WHERE kind = 'failure'") == [(0,)]
    _nothing_left(*before)
    assert tritonservers() - servers_before == set()
