"""heaptrack attribution of a real tritonserver process: the site that grows with failed
requests is found and named; a clean run grows no site; the reader on a hand-written capture.

The server runs through ServerProcess with `heaptrack_capture` set, the hook the server
target uses; quiet points are held between bursts as the supervisor holds them.
"""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from soak.analysis.site_verdict import SiteRule, SiteSeries, judge_sites
from soak.sampling import heaptrack
from tests.tritonserver.conftest import assert_gone

MISSING = heaptrack.unavailable()
needs_heaptrack = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

BURSTS = 6
PER_BURST = 50
QUIET_S = 0.1


# -- the reader on a hand-written capture -------------------------------------------------------
CAPTURE = """\
v 10400 3
X prog --flag
I 1000 10
s 4 prog
s 6 malloc
s 8 leaky_fn
s 8 clean_fn
s 4 main
i 1000 1 2
i 1010 1 3
i 1020 1 4
i 1030 1 5
t 4 0
t 2 1
t 1 2
t 3 1
t 1 4
a 10 3
a 20 5
c a
+ 0
+ 1
- 1
c 14
+ 0
+ 1
- 1
c 1e
+ 0
+ 0
+ 1
c 28
- 1
c 32
"""


def test_live_bytes_per_site_are_read_at_the_stamp_nearest_each_quiet_window(tmp_path):
    capture = tmp_path / "cap.gz"
    with gzip.open(capture, "wt") as out:
        out.write(CAPTURE)
    start = 1000.0
    # windows around 20, 30 and 40 ms; one at 100 ms lies after the capture's last stamp
    windows = {
        it: (start + (ms - 4) / 1000, start + (ms + 4) / 1000)
        for it, ms in {0: 20, 1: 30, 2: 40, 3: 100}.items()
    }
    result = heaptrack.read_sites(capture, windows, depth=4, top=10, start_s=start)
    assert result.iterations == [0, 1, 2]
    by_top = {s.frames[0].function: k for k, s in enumerate(result.sites)}
    assert set(by_top) == {"leaky_fn", "clean_fn"}  # malloc trimmed from the key
    leaky, clean = by_top["leaky_fn"], by_top["clean_fn"]
    assert result.sites[leaky].key == "leaky_fn@prog <- main@prog"
    assert result.sites[leaky].frames[0].library == "prog"
    assert result.live_bytes[leaky].tolist() == [16, 32, 64]
    assert result.live_count[leaky].tolist() == [1, 2, 4]
    assert result.live_bytes[clean].tolist() == [0, 0, 32]
    assert result.total_bytes.tolist() == [16, 32, 96]
    assert leaky == 0  # the growing site first
    site_rows, samples = result.rows()
    assert len(samples) == 3 * 3 and site_rows[0]["thread"] == "native"


def test_the_captures_of_several_servers_are_summed_by_stack(tmp_path):
    start = 1000.0
    folder = tmp_path / heaptrack.CAPTURE_DIR
    folder.mkdir()
    for name in ("tritonserver-2.gz", "tritonserver-10.gz", "tritonserver-1.gz"):
        with gzip.open(folder / name, "wt") as out:
            out.write(CAPTURE)
        (folder / f"{name}.start").write_text(f"{start}\n")
        (folder / f"{name}.owner").write_text("1\n")
    found = heaptrack.captures_in(folder)
    assert [p.name for p in found] == [
        "tritonserver-1.gz",
        "tritonserver-2.gz",
        "tritonserver-10.gz",
    ]
    windows = {
        it: (start + (ms - 4) / 1000, start + (ms + 4) / 1000) for it, ms in {0: 20, 1: 30}.items()
    }
    one = heaptrack.read_sites(found[0], windows, depth=4, start_s=start)
    three = heaptrack.read_servers(found, windows, depth=4)
    assert three.iterations == [0, 1]
    assert [s.site_id for s in three.sites] == [1, 2]
    assert [s.key for s in three.sites] == [s.key for s in one.sites]
    assert three.live_bytes.tolist() == (3 * one.live_bytes).tolist()
    assert three.total_count.tolist() == (3 * one.total_count).tolist()
    # a process that ended before the first quiet point (a preflight) takes no part
    with gzip.open(folder / "tritonserver-0.gz", "wt") as out:
        out.write(CAPTURE)
    (folder / "tritonserver-0.gz.start").write_text(f"{start - 60}\n")
    (folder / "tritonserver-0.gz.owner").write_text("1\n")
    four = heaptrack.read_servers(heaptrack.captures_in(folder), windows, depth=4)
    assert four.iterations == [0, 1] and four.live_bytes.tolist() == three.live_bytes.tolist()


def test_missing_heaptrack_is_one_line_naming_the_debian_package(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    message = heaptrack.unavailable()
    assert message is not None and "\n" not in message
    assert "apt-get install heaptrack" in message and "heaptrack_print" in message


def test_capture_file_names_what_is_written(tmp_path):
    assert heaptrack.capture_file(tmp_path / "x.zst") == tmp_path / "x.zst"
    assert heaptrack.capture_file(tmp_path / "x.gz") == tmp_path / "x.gz"
    assert heaptrack.capture_file(tmp_path / "x.%p").name in ("x.%p.zst", "x.%p.gz")


# -- a real tritonserver under heaptrack --------------------------------------------------------
def traced_server(tmp_path: Path, behaviour: str, **kwargs):
    """A ServerProcess under heaptrack (its `heaptrack_capture`, the hook the server target
    uses), serving one model `m` with `behaviour`; not started."""
    from soak.tritonserver import executable
    from soak.tritonserver.process import TRACED_READY_S, ServerProcess
    from soak.workload import repos

    exe = executable.prepare(tmp_path / "work")
    repos.write_model(tmp_path / "repo", "m", behaviour=repos.Behaviour(behaviour))
    server = ServerProcess(
        exe, [tmp_path / "repo"], tmp_path / "log", heaptrack_capture=tmp_path / "heaptrack",
        **kwargs,
    )  # fmt: skip
    assert server.ready_timeout_s >= TRACED_READY_S
    return server


def traced_run(tmp_path: Path, behaviour: str) -> tuple[object, dict, object]:
    """Start tritonserver under heaptrack, load model `m`, send BURSTS x PER_BURST requests
    (each marked to fail) with a quiet point after each burst, SIGTERM; (capture, windows,
    end)."""
    import tritonclient.http as http

    from soak.workload import repos

    server = traced_server(tmp_path, behaviour)
    windows = {}
    with server:
        assert server.command(server.ports)[0] == "/bin/sh"
        client = http.InferenceServerClient(server.http_url)
        try:
            client.load_model("m")
            data = np.zeros((1, 16), dtype=np.int32)
            data[0, 0] = repos.FAIL_MARK
            inputs = [http.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
            for i in inputs:
                i.set_data_from_numpy(data)
            for burst in range(BURSTS):
                for _ in range(PER_BURST):
                    try:
                        client.infer("m", inputs)
                    except Exception:  # noqa: BLE001 - the failures are the point
                        pass
                began = time.time()
                time.sleep(QUIET_S)
                windows[burst] = (began, time.time())
        finally:
            client.close()
    end = server.end
    capture = heaptrack.wait_capture(tmp_path / "heaptrack")
    assert_gone(server.pid)
    return capture, windows, end


def _judged(result):
    series = [
        SiteSeries(s.site_id, s.summary(), s.thread, np.asarray(result.iterations), b, c)
        for s, b, c in zip(result.sites, result.live_bytes, result.live_count, strict=True)
    ]
    return judge_sites(series, SiteRule())


@needs_heaptrack
def test_the_failed_request_leak_is_one_growing_site_in_the_python_backend(tmp_path):
    capture, windows, end = traced_run(tmp_path, "execute_raises")
    assert end.clean, end.describe()
    result = heaptrack.read_sites(capture, windows, depth=8, top=20)
    assert result.iterations == list(range(BURSTS))
    growing = [f for f in _judged(result) if f.verdict == "leak"]
    assert len(growing) == 1, [(f.summary, f.reason) for f in growing]
    site = next(s for s in result.sites if s.site_id == growing[0].site_id)
    k = result.sites.index(site)
    functions = [f.function for f in site.frames]
    libraries = [f.library for f in site.frames]
    assert functions[0] == "TRITONSERVER_ErrorNew", site.stack_text()
    assert site.api_call == "TRITONSERVER_ErrorNew"
    assert "libtriton_python.so" in libraries, site.stack_text()
    assert any("ModelInstanceState::ProcessRequests" in f for f in functions), site.stack_text()
    assert "TRITONBACKEND_ModelInstanceExecute" in functions
    requests = (BURSTS - 1) * PER_BURST
    per_request = (result.live_bytes[k, -1] - result.live_bytes[k, 0]) / requests
    count_per_request = (result.live_count[k, -1] - result.live_count[k, 0]) / requests
    # measured 266 B and 2 allocations per failed request (an error and its 100-char message)
    assert 100 <= per_request <= 2000, per_request
    assert count_per_request == pytest.approx(2, abs=0.1)


@needs_heaptrack
def test_a_clean_model_grows_no_site_per_request(tmp_path):
    capture, windows, end = traced_run(tmp_path, "correct")
    assert end.clean, end.describe()
    result = heaptrack.read_sites(capture, windows, depth=8, top=50)
    assert result.iterations == list(range(BURSTS))
    requests = (BURSTS - 2) * PER_BURST
    # from the second quiet point on (the first burst warms pools up)
    growth = (result.live_bytes[:, -1] - result.live_bytes[:, 1]) / requests
    assert growth.max() < 8, result.sites[int(growth.argmax())].stack_text()
    assert (result.total_bytes[-1] - result.total_bytes[1]) / requests < 8


@needs_heaptrack
def test_a_killed_server_still_leaves_a_complete_readable_capture(tmp_path):
    import os
    import signal

    server = traced_server(tmp_path, "correct").start()
    try:
        os.kill(server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while server.running and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        end = server.stop()
    assert end.crashed and end.signal == "SIGKILL"
    capture = heaptrack.wait_capture(tmp_path / "heaptrack", timeout_s=60)
    assert list(tmp_path.glob("heaptrack*.fifo")) == []
    assert list(tmp_path.glob("heaptrack*.part")) == []
    start = heaptrack.started_at(capture)
    result = heaptrack.read_sites(capture, {0: (start, time.time())})
    assert result.iterations == [0] and result.total_count[0] > 0
    assert_gone(server.pid)


@needs_heaptrack
def test_a_start_retried_on_a_taken_port_keeps_the_capture_of_the_launch_that_ran(
    tmp_path, monkeypatch
):
    import socket

    from soak.tritonserver import process

    squatter = socket.socket()
    squatter.bind((process.LOOPBACK, 0))
    squatter.listen()
    real, calls = process.free_ports, []

    def first_one_taken(count: int = 3) -> list[int]:
        calls.append(count)
        ports = real(count)
        return [squatter.getsockname()[1], *ports[1:]] if len(calls) == 1 else ports

    monkeypatch.setattr(process, "free_ports", first_one_taken)
    try:
        with traced_server(tmp_path, "correct") as server:
            assert len(server.attempts) == 1
            port = server.ports.http
    finally:
        squatter.close()
    assert server.end.clean, server.end.describe()
    capture = heaptrack.wait_capture(tmp_path / "heaptrack")
    time.sleep(1.0)  # the first launch's pipeline has long ended: nothing replaces the capture
    text = b"".join(heaptrack._chunks(capture)).decode()
    command = next(line for line in text.splitlines() if line.startswith("X "))
    assert f"--http-port={port}" in command
    assert list(tmp_path.glob("heaptrack*.part")) == []
    assert list(tmp_path.glob("heaptrack*.fifo")) == []
    assert_gone(server.pid)
