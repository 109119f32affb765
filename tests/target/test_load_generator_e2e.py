"""Target tritonserver end to end through `soak run` on the real executable and perf_analyzer:
traffic at concurrency 4 over HTTP and gRPC with soak's generator and with perf_analyzer, every
scenario through perf_analyzer with system shared memory, a raising model through perf_analyzer;
every request counted by soak and by the server's /metrics alike, nothing left behind (servers,
stubs, regions, perf_analyzer)."""

from __future__ import annotations

import json
import time

import psutil
import pytest

from soak.scenario_notes import PERF_ANALYZER_NOTE
from tests.conftest import shm_regions, stub_processes
from tests.e2e import query
from tests.target.test_remote_e2e import BASE, client_regions, soak_run, tritonservers

pytestmark = pytest.mark.e2e

COUNT = 40  # inferences per model and iteration; 2 models per server
ITERATION_COUNTS = (
    "SELECT inferences, errors, metrics_successes, metrics_failures, metrics_failure_reasons, "
    "metrics_pending FROM iterations WHERE run_id = ? ORDER BY iteration"
)


def perf_analyzers() -> set[int]:
    return {p.pid for p in psutil.process_iter(["name"]) if p.info.get("name") == "perf_analyzer"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loadgen")
    before = (tritonservers(), stub_processes(), shm_regions(), client_regions(), perf_analyzers())
    procs = [
        soak_run(
            tmp,
            BASE + f'scenario = "traffic"\niterations = 4\ninferences_per_model = {COUNT}\n'
            "concurrency = 4\n"
            '[matrix]\nprotocol = ["http", "grpc"]\nload_generator = ["soak", "perf_analyzer"]\n',
            "traffic",
        ),
        soak_run(
            tmp,
            BASE + f"iterations = 2\ninferences_per_model = {COUNT}\n"
            'protocol = "grpc"\nshared_memory = "system"\nload_generator = "perf_analyzer"\n'
            '[matrix]\nscenario = ["servers", "reload", "traffic"]\n',
            "shm",
        ),
        soak_run(
            tmp,
            BASE + f'scenario = "traffic"\niterations = 3\ninferences_per_model = {COUNT}\n'
            # one in flight: with several, Triton 2.51 sometimes never finishes unloading a
            # model that raised (tests/tritonserver/conftest.py)
            'behaviour = "execute_raises"\nload_generator = "perf_analyzer"\n',
            "raising",
        ),
    ]
    time.sleep(1.0)
    after = (tritonservers(), stub_processes(), shm_regions(), client_regions(), perf_analyzers())
    left = [a - b for a, b in zip(after, before, strict=True)]
    return tmp / "r.db", procs, left


def _cells(db):
    rows = query(db, "SELECT id, config, status, iterations_done FROM runs ORDER BY id")
    return [(i, json.loads(c)["run"], s, n) for i, c, s, n in rows]


def _perf_analyzer_hung(db) -> str | None:
    """perf_analyzer 2.51 not finishing a burst (README, findings): a perf_analyzer cell hung
    in its infer phase while every soak-generator cell passed against the same kind of
    server; what the hang said, or None (anything else fails the test)."""
    cells = _cells(db)
    ours_passed = all(s == "passed" for _, r, s, _ in cells if r["load_generator"] == "soak")
    for run_id, run, status, _ in cells:
        if status == "hung" and run["load_generator"] == "perf_analyzer" and ours_passed:
            said = query(
                db, "SELECT message FROM events WHERE run_id = ? AND kind = 'hang'", run_id
            )
            if said and "phase infer" in said[0][0]:
                return f"run {run_id} ({run['protocol']}): {said[0][0]}"
    return None


def test_traffic_passes_with_either_generator_and_counts_every_request(runs):
    db, procs, _ = runs
    if procs[0].returncode != 0 and (hung := _perf_analyzer_hung(db)):
        pytest.xfail(
            f"perf_analyzer 2.51 did not finish a burst (seen about 1 in 3 full runs): {hung}"
        )
    for proc in procs[:2]:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cells = _cells(db)
    assert [
        (r["protocol"], r["load_generator"], r["shared_memory"]) for _, r, _, _ in cells[:5]
    ] == [
        ("http", "soak", "none"),
        ("http", "perf_analyzer", "none"),
        ("grpc", "soak", "none"),
        ("grpc", "perf_analyzer", "none"),
        ("grpc", "perf_analyzer", "system"),
    ]
    for run_id, _, status, done in cells[:5]:
        assert status == "passed"
        counts = query(
            db,
            "SELECT inferences, errors FROM iterations WHERE run_id = ? ORDER BY iteration",
            run_id,
        )
        assert counts == [(2 * COUNT, 0)] * done
    assert query(db, "SELECT count(*) FROM events WHERE kind = 'failure'") == [(0,)]
    assert PERF_ANALYZER_NOTE in procs[0].stdout and PERF_ANALYZER_NOTE in procs[1].stdout


def test_in_process_has_no_metrics_counters(tmp_path):
    proc = soak_run(tmp_path, "servers = 1\niterations = 2\nwarmup = 1\n", "inproc")
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    rows = query(
        tmp_path / "r.db",
        "SELECT inferences, metrics_successes, metrics_failures, metrics_pending FROM iterations",
    )
    assert len(rows) == 2 and all(r[0] > 0 and r[1:] == (None, None, None) for r in rows)


def test_a_raising_model_through_perf_analyzer_counts_its_failed_requests(runs):
    db, procs, _ = runs
    assert procs[2].returncode == 0, procs[2].stdout[-3000:] + procs[2].stderr[-3000:]
    run_id, run, status, done = _cells(db)[7]
    assert run["behaviour"] == "execute_raises" and status == "passed"
    counts = query(db, ITERATION_COUNTS, run_id)
    assert len(counts) == done == 3
    # one failed request per perf_analyzer thread that reported one: 1 per model at
    # concurrency 1; the server counted the same, all failed in the backend
    for inferences, errors, successes, failures, reasons, pending in counts:
        assert inferences == errors == 2
        assert (successes, failures, pending) == (0, errors, 0)
        assert json.loads(reasons) == {"BACKEND": errors}


def test_nothing_outlives_the_runs(runs):
    assert runs[2] == [set()] * 5
