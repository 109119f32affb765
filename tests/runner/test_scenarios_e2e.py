"""The scenarios and model behaviours through `soak run`, end to end on the real core (CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.conftest import stub_processes
from tests.e2e import query, reaped, soak, wait_for_iterations
from tests.runner.test_supervisor import ROOT, start_soak, write_profile

pytestmark = pytest.mark.e2e


def soak_run(tmp_path, text: str, env: dict | None = None) -> subprocess.CompletedProcess:
    profile = write_profile(tmp_path, text)
    return soak(
        "run", str(profile), "--db", str(tmp_path / "r.db"), "--no-progress", timeout=600, env=env
    )


def counts(db, run_id: int) -> list[tuple]:
    return query(
        db,
        "SELECT server_lifecycles, model_loads, failed_loads, inferences, errors, failures "
        "FROM iterations WHERE run_id = ? ORDER BY iteration",
        run_id,
    )


def test_every_scenario_and_behaviour_counts_its_expected_outcomes(tmp_path):
    stubs = stub_processes()
    for text in (
        '[matrix]\nscenario = ["servers", "reload", "traffic"]\n'
        'behaviour = ["correct", "error_response"]\n',
        '[matrix]\nscenario = ["servers", "reload"]\nbehaviour = ["init_raises"]\n',
    ):
        proc = soak_run(
            tmp_path,
            "servers = 1\niterations = 3\nwarmup = 1\ninferences_per_model = 4\n"
            "error_fraction = 0.5\n" + text,
        )
        assert proc.returncode in (0, 3), proc.stdout + proc.stderr
        assert "scenario " in proc.stdout and "warm-up" in proc.stdout
    runs = query(tmp_path / "r.db", "SELECT id, scenario, behaviour, status FROM runs ORDER BY id")
    assert [(s, b) for _, s, b, _ in runs] == [
        ("servers", "correct"),
        ("servers", "error_response"),
        ("reload", "correct"),
        ("reload", "error_response"),
        ("traffic", "correct"),
        ("traffic", "error_response"),
        ("servers", "init_raises"),
        ("reload", "init_raises"),
    ]
    assert {status for *_, status in runs} <= {"passed", "inconclusive"}
    db = tmp_path / "r.db"
    by_cell = {(s, b): counts(db, run_id) for run_id, s, b, _ in runs}
    for (scenario, behaviour), rows in by_cell.items():
        assert [r[5] for r in rows] == [0, 0, 0], (scenario, behaviour)  # no failure
        if behaviour == "init_raises":
            assert [r[1:4] for r in rows] == [(0, 2, 0)] * 3, scenario
            continue
        assert [r[3] for r in rows] == [8, 8, 8], (scenario, behaviour)
        errors = [r[4] for r in rows]
        assert (sum(errors) > 0) == (behaviour == "error_response"), (scenario, errors)
        assert all(e < 8 for e in errors)  # half of the requests, not all
    assert [r[:2] for r in by_cell["servers", "correct"]] == [(1, 2)] * 3
    assert [r[:2] for r in by_cell["reload", "correct"]] == [(0, 2)] * 3
    assert [r[:2] for r in by_cell["traffic", "correct"]] == [(0, 2), (0, 0), (0, 0)]
    deadline = time.monotonic() + 10
    while stub_processes() - stubs and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not stub_processes() - stubs


def test_an_unexpected_success_fails_the_run_naming_instance_model_and_phase(tmp_path):
    proc = soak_run(
        tmp_path,
        'scenario = "traffic"\nbehaviour = "error_response"\nservers = 1\niterations = 2\n'
        "warmup = 1\ninferences_per_model = 2\n",
        # the common model is rewritten as a correct one before its (only) load
        env={**os.environ, "SOAK_FAULT": "server_new:correct:0"},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    events = query(
        tmp_path / "r.db", "SELECT instance, phase, message FROM events WHERE kind = 'failure'"
    )
    message = "simple1: succeeded, but behaviour error_response must fail this request"
    assert (0, "infer", message) in events


def test_ctrl_c_in_traffic_deletes_the_long_lived_servers(tmp_path):
    stubs = stub_processes()
    profile = write_profile(
        tmp_path, 'scenario = "traffic"\nservers = 2\niterations = 500\nwarmup = 1\n'
    )
    db = tmp_path / "r.db"
    proc = start_soak(str(profile), "--db", str(db), log=tmp_path / "log")
    with reaped(proc):
        wait_for_iterations(db, 3, proc)
        assert len(stub_processes() - stubs) == 4  # both servers' models stay loaded
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
    assert code in (1, 3), (tmp_path / "log").read_text()
    assert query(db, "SELECT status FROM runs") == [("interrupted",)]
    kinds = {k for (k,) in query(db, "SELECT DISTINCT kind FROM events")}
    assert not kinds & {"failure", "leftover_stub", "leftover_shm", "hang"}, kinds
    assert not stub_processes() - stubs


def test_user_models_run_in_the_long_lived_scenarios(tmp_path):
    """examples/profile.toml's models through `soak run` in traffic and reload: each burst
    sends every model its requests, all counted, and the long-lived servers go at the end."""
    examples = ROOT / "examples"
    text = (examples / "profile.toml").read_text()
    text = text.replace('repositories = ["models"]', f'repositories = ["{examples / "models"}"]')
    text = text.replace('input_data = "data/', f'input_data = "{examples / "data"}/')
    text = text.replace("servers = 2\niterations = 6\n", "servers = 1\niterations = 3\n")
    text = text.replace("warmup = 2\n", "warmup = 1\n")
    stubs = stub_processes()
    proc = soak_run(tmp_path, text + '\n[matrix]\nscenario = ["traffic", "reload"]\n')
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    runs = query(tmp_path / "r.db", "SELECT id, scenario, status FROM runs ORDER BY id")
    assert [(s, st in ("passed", "inconclusive")) for _, s, st in runs] == [
        ("traffic", True),
        ("reload", True),
    ]
    per_burst = (2 + 3) * 4  # (generated + user models) x inferences_per_model, one server
    assert counts(tmp_path / "r.db", runs[0][0]) == [
        (0, 5, 0, per_burst, 0, 0),
        (0, 0, 0, per_burst, 0, 0),
        (0, 0, 0, per_burst, 0, 0),
    ]
    assert counts(tmp_path / "r.db", runs[1][0]) == [(0, 5, 0, per_burst, 0, 0)] * 3
    deadline = time.monotonic() + 10
    while stub_processes() - stubs and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not stub_processes() - stubs
