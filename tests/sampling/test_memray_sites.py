"""Allocation sites (memray) on real Triton runs: the site that grows is the one that leaks.

The end-to-end cases run `soak run --attribute` (supervisor, worker, real in-process servers)
and read the `sites` / `findings` tables; the Triton-owned leak runs the tracker in this test
process around a test-only helper that never deletes a message Triton returns.
"""

from __future__ import annotations

import ctypes
import json
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from soak.sampling import memray_frames
from soak.sampling import memray_sites as sites
from soak.sampling.allocation_sites import Frame
from tests.e2e import query, soak

ROOT = Path(__file__).resolve().parents[2]
KiB = 1 << 10
RUN_TIMEOUT_S = 400


# -- pieces -------------------------------------------------------------------------------------
def test_allocator_and_memray_frames_are_trimmed_from_the_key():
    stack = [
        ("<unknown>", "<unknown>", 0),
        ("operator new(unsigned long)", "<unknown>", 0),
        ("_PyObject_Malloc", "Objects/obmalloc.c", 2003),
        ("TRITONSERVER_ServerMetadata", "<unknown>", 0),
        ("ffi_call", "<unknown>", 0),
        ("metadata", "/x/soak/triton/server.py", 362),
    ]
    frames, soak, phase = memray_frames.site_frames(stack)
    assert [f.function for f in frames] == ["TRITONSERVER_ServerMetadata", "ffi_call", "metadata"]
    assert frames[0].library == "libtritonserver"
    assert frames[1].library == "libffi"
    assert soak is not None and soak.file == "soak/triton/server.py"
    assert phase is None  # no Lifecycle.run frame


def test_phase_is_read_from_the_lifecycle_source():
    from soak.workload import lifecycle

    source = Path(lifecycle.__file__).read_text().splitlines()
    line = next(i for i, text in enumerate(source, 1) if 'self._phase("infer")' in text) + 2
    frames = [Frame("run", lifecycle.__file__, line, "python")]
    assert memray_frames.phase_of(frames) == "infer"


def test_a_quiet_window_takes_the_first_memory_record_inside_it():
    times_ms = np.array([1000, 1010, 1020, 1030, 1040, 1050])
    windows = {3: (1.005, 1.032), 4: (1.041, 1.0495), 7: (2.0, 2.1)}
    iterations, index = sites._quiet_snapshots(times_ms, windows)
    # iteration 4's window holds no record; iteration 7's lies after the capture
    assert iterations == [3]
    assert index.tolist() == [1]


def test_a_capture_without_quiet_points_reads_as_no_sites(tmp_path):
    """A run stopped before its first traced quiet point: nothing to read, nothing fails."""
    capture = tmp_path / sites.CAPTURE_FILE
    sites.stop_tracker(sites.start_tracker(capture))
    result = sites.read_sites(capture, {})
    assert result.iterations == [] and result.sites == []
    assert result.total_bytes.shape == (0,) and result.live_bytes.shape == (0, 0)


def test_attribute_is_refused_where_memray_cannot_run(monkeypatch, tmp_path):
    from soak.cli import main

    monkeypatch.setattr(sites, "unavailable", lambda: "memray runs on Linux and macOS only")
    db = tmp_path / "soak.db"
    result = CliRunner().invoke(main, ["run", "smoke", "--attribute", "--db", str(db)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "soak: error: --attribute: memray runs on Linux and macOS only"
    ]
    assert not db.exists()


# -- a leak inside Triton's own API, in this process ----------------------------------------------
def _metadata_message(server) -> ctypes.c_void_p:
    """A message TRITONSERVER_ServerMetadata returns: the caller owns it and must delete it."""
    from soak.triton.returns import check
    from soak.triton.returns import triton_lib as _lib

    message = ctypes.c_void_p()
    check(_lib().TRITONSERVER_ServerMetadata(server.handle, ctypes.byref(message)))
    return message


def leak_server_metadata(server, times: int) -> None:
    """Test-only: never delete the message (soak's Server.metadata does). It calls Triton
    itself, so that the stack's Python frame is this function."""
    from soak.triton.returns import check
    from soak.triton.returns import triton_lib as _lib

    for _ in range(times):
        message = ctypes.c_void_p()
        check(_lib().TRITONSERVER_ServerMetadata(server.handle, ctypes.byref(message)))


def trace_quiet_points(server, capture: Path, iterations: int, between) -> dict:
    """Trace `iterations` rounds of `between(server, iteration)`, each followed by a quiet
    point held MIN_QUIET_S as the supervisor holds one; returns the quiet windows."""
    windows = {}
    tracker = sites.start_tracker(capture)
    try:
        for iteration in range(iterations):
            between(server, iteration)
            began = time.time()
            time.sleep(sites.MIN_QUIET_S)
            windows[iteration] = (began, time.time())
    finally:
        sites.stop_tracker(tracker)
    return windows


def test_a_message_triton_returns_and_nobody_deletes_is_attributed_to_its_function(
    runtime, tmp_path
):
    from soak.triton.creation import ServerOptions
    from soak.triton.server import Server
    from soak.workload.repos import write_repositories

    def between(server, _iteration):
        leak_server_metadata(server, 8)
        server.metadata()  # the same call, deleted: must not grow

    common, _ = write_repositories(tmp_path / "models", 0)
    capture = tmp_path / sites.CAPTURE_FILE
    with Server(ServerOptions((common,), runtime.backends_dir)) as server:
        windows = trace_quiet_points(server, capture, 12, between)
    result = sites.read_sites(capture, windows, depth=8, top=20)
    assert result.iterations == list(range(12))
    from soak.analysis.site_verdict import SiteRule, SiteSeries, judge_sites

    judged = judge_sites(
        [
            SiteSeries(s.site_id, s.summary(), s.thread, result.iterations, b, c)
            for s, b, c in zip(result.sites, result.live_bytes, result.live_count, strict=True)
        ],
        SiteRule(),
    )
    growing = [f for f in judged if f.verdict == "leak"]
    assert growing, [f.reason for f in judged[:5]]
    by_id = {s.site_id: s for s in result.sites}
    top = by_id[growing[0].site_id]
    assert top.api_call == "TRITONSERVER_ServerMetadata", top.stack_text()
    assert "<- TRITONSERVER_ServerMetadata <- leak_server_metadata" in top.summary()
    # eight undeleted messages per iteration, one allocation or more each
    assert growing[0].count_slope >= 8
    assert top.thread == "python" and top.python_frame.function == "leak_server_metadata"


def test_an_allocation_held_at_one_quiet_point_is_in_the_total_but_in_no_site(runtime, tmp_path):
    """A temporary that straddles one quiet point is no trend: only records held at
    MIN_HELD_POINTS quiet points or more are keyed on sites; the total counts everything."""
    from soak.triton.creation import ServerOptions
    from soak.triton.returns import triton_lib as _lib
    from soak.triton.server import Server
    from soak.workload.repos import write_repositories

    messages = {}

    def between(server, iteration):
        if iteration == 1:
            messages["held"] = _metadata_message(server)  # held to the end: a site
        if iteration == 3:
            messages["once"] = _metadata_message(server)  # held at quiet point 3 only
        if iteration == 4:
            _lib().TRITONSERVER_MessageDelete(messages.pop("once"))

    common, _ = write_repositories(tmp_path / "models", 0)
    capture = tmp_path / sites.CAPTURE_FILE
    with Server(ServerOptions((common,), runtime.backends_dir)) as server:
        try:
            windows = trace_quiet_points(server, capture, 6, between)
        finally:
            for message in messages.values():
                _lib().TRITONSERVER_MessageDelete(message)
    result = sites.read_sites(capture, windows, depth=8, top=50)
    assert result.iterations == list(range(6))
    # The message and its JSON string: sites of their own, reached through the same call.
    rows = [k for k, s in enumerate(result.sites) if s.api_call == "TRITONSERVER_ServerMetadata"]
    assert rows
    series = result.live_bytes[rows].sum(axis=0)
    size = series[1]
    assert size > 0 and series[0] == 0
    assert list(series[1:]) == [size] * 5  # the one-point message is in no site's series
    assert result.total_bytes[3] - result.total_bytes[2] >= 0.9 * size
    assert result.total_bytes[4] - result.total_bytes[3] <= -0.9 * size


# -- end to end: soak run --attribute -------------------------------------------------------------
def run_attributed(tmp_path: Path, name: str, body: str) -> tuple[Path, int, str]:
    profile = tmp_path / f"{name}.toml"
    profile.write_text(
        f"""
description = "attribution proof: {name}"
{body}
[sampling]
objgraph_every = 0
"""
    )
    db = tmp_path / "soak.db"
    proc = soak(
        "run", str(profile), "--attribute", "--db", str(db), "--no-progress", timeout=RUN_TIMEOUT_S
    )
    output = proc.stdout + proc.stderr
    assert db.exists(), output
    ((run_id,),) = query(db, "SELECT max(id) FROM runs")
    events = query(
        db, "SELECT message FROM events WHERE run_id = ? AND kind = 'attribution'", run_id
    )
    assert events and "allocation site(s)" in events[0][0], (events, output[-3000:])
    return db, run_id, output


def site_findings(db: Path, run_id: int) -> list[dict]:
    rows = query(
        db,
        "SELECT f.metric, f.verdict, f.slope, f.reason, s.soak_call, s.python_frame, s.thread, "
        "s.stack_text FROM findings f JOIN sites s ON s.run_id = f.run_id "
        "AND f.metric = 'site:' || s.site_id WHERE f.run_id = ? AND f.kind = 'site' "
        "ORDER BY f.slope DESC",
        run_id,
    )
    keys = ("metric", "verdict", "slope", "reason", "soak_call", "python_frame", "thread", "stack")
    return [dict(zip(keys, r, strict=True)) for r in rows]


@pytest.mark.e2e
def test_native_injection_is_the_one_growing_site_at_its_injected_rate(tmp_path):
    servers, per_server = 2, 64 * KiB
    db, run_id, output = run_attributed(
        tmp_path,
        "native",
        f"servers = {servers}\niterations = 12\nwarmup = 2\ninferences_per_model = 5\n"
        f"[inject]\nnative_bytes_per_server = {per_server}\n",
    )
    found = site_findings(db, run_id)
    growing = [f for f in found if f["verdict"] == "leak"]
    assert len(growing) == 1, json.dumps(growing, indent=1)
    top = growing[0]
    assert top["soak_call"].startswith("leak_native (soak/workload/inject.py"), top
    assert top["slope"] == pytest.approx(servers * per_server, rel=0.05)
    assert "GROWING SITE" in output and "leak_native" in output


@pytest.mark.e2e
def test_python_injection_shows_the_injectors_python_frame(tmp_path):
    db, run_id, _ = run_attributed(
        tmp_path,
        "python",
        "servers = 1\niterations = 10\nwarmup = 2\ninferences_per_model = 5\n"
        "[inject]\npython_bytes_per_iteration = 65536\n",
    )
    growing = [f for f in site_findings(db, run_id) if f["verdict"] == "leak"]
    assert growing
    top = growing[0]
    assert top["thread"] == "python"
    assert top["soak_call"].startswith("leak_python (soak/workload/inject.py"), top
    assert "leak_python" in top["stack"]
    assert top["slope"] == pytest.approx(64 * KiB, rel=0.05)


@pytest.mark.e2e
def test_forty_clean_iterations_grow_no_site(tmp_path):
    """The cpu workload with one server instead of four (to save time), nothing injected."""
    db, run_id, output = run_attributed(
        tmp_path, "clean", "servers = 1\niterations = 42\nwarmup = 2\n"
    )
    found = site_findings(db, run_id)
    assert found, output[-2000:]
    growing = [f for f in found if f["verdict"] == "leak"]
    assert growing == [], json.dumps(growing, indent=1)
    ((points,),) = query(
        db, "SELECT count(*) FROM site_samples WHERE run_id = ? AND site_id = 0", run_id
    )
    assert points == 40
