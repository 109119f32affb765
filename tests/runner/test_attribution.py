"""`soak run --attribute` on target tritonserver: every server process runs under heaptrack,
its capture is read at the quiet points into the `sites` tables and judged like memray's.

One run, two cells over HTTP: the raising-execute model (its failed requests leak in the
python backend) and the correct model as the control. The refusals are one line each.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from soak.sampling import heaptrack
from tests.conftest import shm_regions, stub_processes
from tests.e2e import query, soak
from tests.target.test_remote_e2e import tritonservers

MISSING = heaptrack.unavailable()
ITERATIONS, WARMUP, PER_MODEL = 8, 2, 100  # 2 models: 200 requests per iteration
#: A quarter of them raise, and the final unload and exit are bounded: Triton 2.51 can leave a
#: model whose execute raised UNLOADING for good (tests/target/test_remote_proofs.py).
STUCK = "(UNLOADING) still running"

PROFILE = f"""
description = "heaptrack attribution of a tritonserver process"
target = "tritonserver"
protocol = "http"
scenario = "traffic"
servers = 1
iterations = {ITERATIONS}
warmup = {WARMUP}
inferences_per_model = {PER_MODEL}
error_fraction = 0.25
[matrix]
behaviour = ["execute_raises", "correct"]
[sampling]
objgraph_every = 0
[timeouts]
unload = 10
[tritonserver]
args = ["--exit-timeout-secs=3"]
"""


@pytest.fixture(scope="module")
def attributed(tmp_path_factory):
    if MISSING is not None:
        pytest.skip(MISSING)
    tmp = tmp_path_factory.mktemp("attributed")
    (tmp / "p.toml").write_text(PROFILE)
    before = (tritonservers(), stub_processes(), shm_regions())
    db = tmp / "r.db"
    proc = soak("run", str(tmp / "p.toml"), "--attribute", "--db", str(db), "--no-progress")
    time.sleep(1.0)
    after = (tritonservers(), stub_processes(), shm_regions())
    left = [a - b for a, b in zip(after, before, strict=True)]
    runs = dict(query(db, "SELECT json_extract(config, '$.run.behaviour'), id FROM runs"))
    return db, runs, proc.stdout + proc.stderr, left


def site_findings(db: Path, run_id: int) -> list[dict]:
    rows = query(
        db,
        "SELECT f.verdict, f.slope, s.frames, s.stack_text FROM findings f JOIN sites s "
        "ON s.run_id = f.run_id AND f.metric = 'site:' || s.site_id "
        "WHERE f.run_id = ? AND f.kind = 'site' ORDER BY f.slope DESC",
        run_id,
    )
    return [
        {
            "verdict": v,
            "slope": slope,
            "functions": [f["function"] for f in json.loads(fr)],
            "libraries": [f["library"] for f in json.loads(fr)],
            "stack": text,
        }
        for v, slope, fr, text in rows
    ]


@pytest.mark.e2e
def test_the_failed_request_leak_is_the_one_growing_site_named_in_the_python_backend(
    attributed,
):
    db, runs, output, _ = attributed
    run_id = runs["execute_raises"]
    events = query(
        db, "SELECT message FROM events WHERE run_id = ? AND kind = 'attribution'", run_id
    )
    assert events and "heaptrack capture of 1 tritonserver" in events[0][0], output[-3000:]
    points = query(db, "SELECT count(*) FROM site_samples WHERE run_id = ? AND site_id = 0", run_id)
    assert points == [(ITERATIONS - WARMUP,)]
    growing = [f for f in site_findings(db, run_id) if f["verdict"] == "leak"]
    assert len(growing) == 1, json.dumps(growing, indent=1)[:3000]
    site = growing[0]
    assert site["functions"][0] == "TRITONSERVER_ErrorNew", site["stack"]
    assert any("ModelInstanceState::ProcessRequests" in f for f in site["functions"][1:3])
    assert "libtriton_python.so" in site["libraries"]
    # ~270 B (an error and its 100-character message) per failed request
    ((errors,),) = query(
        db, "SELECT avg(errors) FROM iterations WHERE run_id = ? AND iteration >= ?", run_id, WARMUP
    )
    per_request = site["slope"] / errors
    assert 150 <= per_request <= 1000, per_request
    assert "GROWING SITE" in output and "TRITONSERVER_ErrorNew" in output


@pytest.mark.e2e
def test_a_clean_run_grows_no_site_beyond_the_threshold(attributed):
    db, runs, output, _ = attributed
    found = site_findings(db, runs["correct"])
    assert found, output[-3000:]
    assert [f for f in found if f["verdict"] == "leak"] == []


@pytest.mark.e2e
def test_both_runs_passed_their_checks_and_left_nothing(attributed):
    db, runs, output, left = attributed
    failures = query(db, "SELECT run_id, phase, message FROM events WHERE kind = 'failure'")
    raising = runs["execute_raises"]
    other = [f for f in failures if f[:2] != (raising, "unload") or STUCK not in f[2]]
    assert other == [], output[-3000:]
    assert left == [set(), set(), set()]


def test_attribute_is_refused_naming_the_package_where_heaptrack_is_missing(monkeypatch, tmp_path):
    from soak.cli import main

    monkeypatch.setattr(heaptrack, "_parts", lambda: None)
    (tmp_path / "p.toml").write_text('target = "tritonserver"\nscenario = "traffic"\n')
    db = tmp_path / "soak.db"
    result = CliRunner().invoke(
        main, ["run", str(tmp_path / "p.toml"), "--attribute", "--db", str(db)]
    )
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("soak: error: --attribute: heaptrack is not installed")
    assert "apt-get install heaptrack" in line
    assert not db.exists()
