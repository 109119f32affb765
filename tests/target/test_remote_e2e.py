"""Target tritonserver end to end through `soak run` on the real executable (CPU): every
scenario over HTTP and gRPC, system shared memory, a server killed mid-run, a bad flag; and
nothing left behind (server processes, stubs, regions). Runs are shared between assertions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import shm_regions, stub_processes
from tests.e2e import query, reaped, wait_for_iterations
from tests.runner.test_supervisor import ROOT, start_soak, write_profile

pytestmark = pytest.mark.e2e

BASE = 'target = "tritonserver"\npurpose = "machinery"\nservers = 1\nwarmup = 1\n'


def tritonservers() -> set[int]:
    """tritonserver processes of this test session (they inherit its marker)."""
    from tests.conftest import _ours

    return {
        p.pid
        for p in psutil.process_iter(["name"])
        if p.info.get("name") == "tritonserver" and _ours(p)
    }


def client_regions() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("soak_client_shm_*")}


def soak_run(tmp: Path, text: str, name: str) -> subprocess.CompletedProcess:
    profile = write_profile(tmp, text, name)
    return subprocess.run(
        [sys.executable, "-m", "soak.cli", "run", str(profile), "--db", str(tmp / "r.db")]
        + ["--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two `soak run`s: servers and reload over both protocols (3 iterations), traffic over
    both protocols with and without system shared memory (6 iterations: slopes)."""
    tmp = tmp_path_factory.mktemp("remote")
    before = (tritonservers(), stub_processes(), shm_regions(), client_regions())
    started = time.monotonic()
    procs = [
        soak_run(
            tmp,
            BASE + "iterations = 3\ninferences_per_model = 4\n"
            '[matrix]\nscenario = ["servers", "reload"]\nprotocol = ["http", "grpc"]\n',
            "lives",
        ),
        soak_run(
            tmp,
            BASE + 'scenario = "traffic"\niterations = 6\ninferences_per_model = 10\n'
            '[matrix]\nprotocol = ["http", "grpc"]\nshared_memory = ["none", "system"]\n',
            "traffic",
        ),
    ]
    wall = time.monotonic() - started
    time.sleep(1.0)
    after = (tritonservers(), stub_processes(), shm_regions(), client_regions())
    left = [a - b for a, b in zip(after, before, strict=True)]
    return tmp / "r.db", procs, left, wall


def test_every_scenario_and_protocol_passes_its_checks(runs):
    db, procs, _, _ = runs
    for proc in procs:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = query(db, "SELECT scenario, config, status, iterations_done FROM runs ORDER BY id")
    cells = [
        (s, json.loads(c)["run"]["protocol"], json.loads(c)["run"]["shared_memory"])
        for s, c, _, _ in rows
    ]
    assert cells == [
        ("servers", "http", "none"),
        ("servers", "grpc", "none"),
        ("reload", "http", "none"),
        ("reload", "grpc", "none"),
        ("traffic", "http", "none"),
        ("traffic", "http", "system"),
        ("traffic", "grpc", "none"),
        ("traffic", "grpc", "system"),
    ]
    assert [(st, n) for _, _, st, n in rows] == [("passed", 3)] * 4 + [("passed", 6)] * 4
    failures = query(db, "SELECT count(*) FROM events WHERE kind = 'failure'")
    assert failures == [(0,)]


def test_servers_and_client_are_sampled_apart(runs):
    db = runs[0]
    for run_id, scenario in query(db, "SELECT id, scenario FROM runs"):
        rows = query(
            db,
            "SELECT rss_bytes, stubs_alive, client_rss_bytes, client_fds, client_threads "
            "FROM samples WHERE run_id = ? AND kind = 'quiet'",
            run_id,
        )
        for rss, stubs, client_rss, client_fds, client_threads in rows:
            assert client_rss > 20 * 2**20 and client_fds > 0 and client_threads > 0
            if scenario == "servers":  # no server lives at its quiet point
                assert rss == 0 and stubs == 0
            else:  # one tritonserver (tens of MB); traffic keeps a stub per model loaded
                assert rss > 20 * 2**20 and rss != client_rss
                assert stubs == (2 if scenario == "traffic" else 0)


def test_traffic_slopes_are_stored_per_inference_for_server_and_client(runs):
    db = runs[0]
    for (run_id,) in query(db, "SELECT id FROM runs WHERE scenario = 'traffic'"):
        found = dict(
            query(
                db,
                "SELECT metric, slopes_per_unit FROM findings WHERE run_id = ? "
                "AND metric IN ('rss_bytes', 'client_rss_bytes', 'client_fds')",
                run_id,
            )
        )
        assert set(found) == {"rss_bytes", "client_rss_bytes", "client_fds"}
        for metric in ("rss_bytes", "client_rss_bytes"):
            assert "inference" in json.loads(found[metric])


def test_each_server_process_is_stored_apart_and_leaves_nothing(runs):
    db = runs[0]
    for run_id, scenario, iterations, worker in query(
        db, "SELECT id, scenario, iterations_done, worker_pid FROM runs"
    ):
        rows = query(db, "SELECT server, pid FROM server_samples WHERE run_id = ?", run_id)
        if scenario == "servers":  # no server lives at its quiet point
            assert rows == []
        else:  # the one long-lived tritonserver, every quiet point, never the worker
            assert len(rows) == iterations and {s for s, _ in rows} == {0}
            assert len({p for _, p in rows}) == 1 and rows[0][1] != worker
    left = query(db, "SELECT kind, message FROM events WHERE kind LIKE 'leftover_%'")
    assert left == []  # after every iteration's servers: no stub, region or port left


def test_in_process_runs_have_no_client_columns_or_findings(tmp_path):
    from tests.e2e import query as q

    proc = soak_run(tmp_path, "servers = 1\niterations = 2\nwarmup = 1\n", "inproc")
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    db = tmp_path / "r.db"
    assert q(db, "SELECT count(*) FROM samples WHERE client_rss_bytes IS NOT NULL") == [(0,)]
    assert q(db, "SELECT count(*) FROM findings WHERE metric LIKE 'client_%'") == [(0,)]
    assert q(db, "SELECT count(*) FROM server_samples") == [(0,)]


def test_nothing_outlives_the_runs(runs):
    servers, stubs, regions, client = runs[2]
    assert not servers and not stubs and not regions and not client


def test_a_server_killed_by_sigsegv_is_a_crashed_run_with_nothing_left(tmp_path):
    before = (tritonservers(), stub_processes(), shm_regions())
    profile = write_profile(
        tmp_path,
        BASE + 'scenario = "traffic"\nprotocol = "grpc"\niterations = 1000\n'
        "inferences_per_model = 10\n",
    )
    db = tmp_path / "r.db"
    proc = start_soak(str(profile), "--db", str(db), log=tmp_path / "out")
    with reaped(proc):
        wait_for_iterations(db, 2, proc)
        (worker,) = query(db, "SELECT worker_pid FROM runs")[0]
        servers = [p for p in psutil.Process(worker).children() if p.name() == "tritonserver"]
        assert len(servers) == 1
        os.kill(servers[0].pid, signal.SIGSEGV)
        proc.wait(timeout=120)
    status, reason = query(db, "SELECT status, reason FROM runs")[0]
    assert status == "crashed" and "SIGSEGV" in reason and "log tail" in reason
    time.sleep(1.0)
    after = (tritonservers(), stub_processes(), shm_regions())
    assert [a - b for a, b in zip(after, before, strict=True)] == [set(), set(), set()]


def test_a_bad_args_flag_is_one_error_line(tmp_path):
    proc = soak_run(
        tmp_path, BASE + 'iterations = 2\n[tritonserver]\nargs = ["--no-such-flag=1"]\n', "bad"
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("soak: error: ")
    assert "--no-such-flag" in lines[0] and "bad.toml" in lines[0]


def test_a_hung_unload_is_a_hung_run_and_the_server_tree_is_ended(tmp_path):
    before = (tritonservers(), stub_processes(), shm_regions(), client_regions())
    profile = write_profile(
        tmp_path,
        BASE + 'scenario = "reload"\nshared_memory = "system"\niterations = 3\n'
        "inferences_per_model = 2\n[timeouts]\nunload = 2\n",
    )
    db = tmp_path / "r.db"
    proc = start_soak(
        str(profile), "--db", str(db), env={"SOAK_FAULT": "unload:hang:1"}, log=tmp_path / "o"
    )
    with reaped(proc):
        proc.wait(timeout=180)
    status, reason = query(db, "SELECT status, reason FROM runs")[0]
    assert status == "hung" and "unload" in reason, reason
    time.sleep(1.5)
    after = (tritonservers(), stub_processes(), shm_regions(), client_regions())
    assert [a - b for a, b in zip(after, before, strict=True)] == [set()] * 4


def test_a_decoupled_model_streams_over_grpc(tmp_path):
    examples = ROOT / "examples"
    proc = soak_run(
        tmp_path,
        BASE + 'scenario = "traffic"\nprotocol = "grpc"\nstreaming = true\niterations = 3\n'
        "inferences_per_model = 3\n"
        f'[models]\nrepositories = ["{examples / "models"}"]\nload = ["count_decoupled"]\n'
        f'[model.count_decoupled]\ninput_data = "{examples / "data" / "count_decoupled.json"}"\n',
        "stream",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    db = tmp_path / "r.db"
    assert query(db, "SELECT status FROM runs") == [("passed",)]
    assert query(db, "SELECT count(*) FROM events WHERE kind = 'failure'") == [(0,)]
    assert query(db, "SELECT min(inferences) FROM iterations")[0][0] > 0
