"""Supervised runs end to end on the real Triton core: storage, crashes, hangs, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from soak.triton.backends import STUB_EXECUTABLE
from tests.conftest import shm_regions, stub_processes
from tests.e2e import SOAK_CLI, query, reaped, soak, wait_for_iterations

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def write_profile(tmp_path: Path, text: str, name: str = "p") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def start_soak(*args: str, env: dict | None = None, log: Path) -> subprocess.Popen:
    with log.open("w") as sink:
        return subprocess.Popen(
            [*SOAK_CLI, "run", *args, "--no-progress"],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )


def test_smoke_run_fills_every_table(tmp_path):
    profile = write_profile(
        tmp_path,
        """
servers = 2
iterations = 3
warmup = 1
inferences_per_model = 5
[sampling]
sample_interval_ms = 100
objgraph_every = 1
""",
    )
    db = tmp_path / "r.db"
    proc = soak("run", str(profile), "--db", str(db), "--no-progress")
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr  # passed or inconclusive
    ((run_id, status, triton, done, verdict),) = query(
        db, "SELECT id, status, triton_version, iterations_done, verdict FROM runs"
    )
    assert status in ("passed", "inconclusive") and verdict in ("pass", "inconclusive")
    assert triton == "2.51.0" and done == 3
    its = query(
        db,
        "SELECT iteration, server_lifecycles, model_loads, inferences, failures, "
        "load_max_s FROM iterations ORDER BY iteration",
    )
    assert [r[:5] for r in its] == [(i, 2, 4, 20, 0) for i in range(3)]
    assert all(r[5] > 0 for r in its)
    quiet = query(
        db,
        "SELECT iteration, rss_bytes, fds, threads, stubs_alive, shm_regions, "
        "tracemalloc_bytes, gc_objects, mallinfo_inuse_bytes, gpu_process_bytes "
        "FROM samples WHERE kind = 'quiet' ORDER BY iteration",
    )
    assert [q[0] for q in quiet] == [0, 1, 2]
    for _, rss, fds, threads, stubs, regions, traced, objects, inuse, _gpu in quiet:
        assert rss > 50 * 2**20 and fds > 3 and threads >= 1
        assert stubs == 0 and regions == 0  # quiet point: every model unloaded
        assert traced > 0 and objects > 1000 and inuse > 0
    interval = query(
        db,
        "SELECT sum(samples), count(DISTINCT phase), max(stubs_alive_max), "
        "min(rss_median_bytes <= rss_max_bytes) FROM phase_samples",
    )[0]
    assert interval[0] > 0 and interval[1] >= 1 and interval[2] >= 1 and interval[3] == 1
    # An iteration's interval samples are one row per phase, never one per sample.
    per_phase = query(db, "SELECT count(*) FROM phase_samples GROUP BY iteration, phase")
    assert {n for (n,) in per_phase} == {1}
    assert query(db, "SELECT count(*) FROM samples WHERE kind = 'interval'")[0][0] == 0
    assert query(db, "SELECT count(*) FROM heap_types")[0][0] > 0
    assert query(db, "SELECT count(*) FROM findings WHERE run_id = ?", run_id)[0][0] >= 10
    kinds = {k for (k,) in query(db, "SELECT DISTINCT kind FROM events")}
    assert kinds <= {"triton_warning", "triton_error"}, kinds
    assert query(db, "PRAGMA journal_mode")[0][0] == "wal"


def stubs_of(pid: int, at_least: int = 2, timeout: float = 30) -> list[psutil.Process]:
    """Wait until the worker has `at_least` live stubs (models loaded) and return them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Real model stubs name their shm region; the backend's start-up probe does not.
        stubs = []
        for c in psutil.Process(pid).children(recursive=True):
            try:
                if c.name() == STUB_EXECUTABLE and any("shm_region" in arg for arg in c.cmdline()):
                    stubs.append(c)
            except psutil.NoSuchProcess:
                pass
        if len(stubs) >= at_least:
            return stubs
        time.sleep(0.02)
    raise AssertionError("the worker never had live stubs")


def test_sigkill_of_worker_mid_iteration_keeps_a_readable_database(tmp_path):
    stubs_before, regions_before = stub_processes(), shm_regions()
    db = tmp_path / "r.db"
    profile = write_profile(
        tmp_path, "servers = 2\niterations = 60\n[sampling]\nsample_interval_ms = 50\n"
    )
    proc = start_soak(str(profile), "--db", str(db), log=tmp_path / "log")
    with reaped(proc):
        wait_for_iterations(db, 2, proc)
        ((worker,),) = query(db, "SELECT worker_pid FROM runs")
        stubs_of(worker)  # inside an iteration: servers and stubs are alive
        time.sleep(0.2)  # a few interval samples of the iteration that is about to crash
        os.kill(worker, signal.SIGKILL)
        assert proc.wait(timeout=120) == 2
    ((status, reason, done),) = query(db, "SELECT status, reason, iterations_done FROM runs")
    assert status == "crashed" and "SIGKILL" in reason
    assert done >= 2
    assert query(db, "SELECT count(*) FROM iterations")[0][0] == done
    assert query(db, "SELECT count(*) FROM samples WHERE kind='quiet'")[0][0] == done
    assert query(db, "SELECT count(*) FROM findings")[0][0] > 0  # analysed what it had
    assert dict(query(db, "SELECT kind, count(*) FROM events GROUP BY kind")).get("signal") == 1
    # The interval samples of the crashed iteration are kept: what led up to the crash.
    crashed = query(
        db,
        "SELECT sum(samples), max(stubs_alive_max) FROM phase_samples WHERE iteration = ?",
        done,
    )[0]
    assert crashed[0] >= 1 and crashed[1] >= 1
    assert query(db, "SELECT count(*) FROM phase_samples WHERE iteration IS NULL")[0][0] == 0
    assert shm_regions() - regions_before == set()
    assert stub_processes() - stubs_before == set()


def test_leftovers_of_a_killed_worker_are_recorded_and_removed(tmp_path):
    """Worker and stubs killed together (as an OOM kill would) leave regions; a stopped stub
    cannot notice its dead parent and stays: both are findings, then removed."""
    stubs_before, regions_before = stub_processes(), shm_regions()
    db = tmp_path / "r.db"
    proc = start_soak("smoke", "--iterations", "60", "--db", str(db), log=tmp_path / "log")
    frozen = None
    with reaped(proc):
        wait_for_iterations(db, 1, proc)
        ((worker,),) = query(db, "SELECT worker_pid FROM runs")
        stubs = stubs_of(worker, at_least=2)
        frozen = stubs[0]
        frozen.suspend()
        time.sleep(0.3)  # let the supervisor's 100 ms observer see the stubs
        for victim in [psutil.Process(worker), *stubs[1:]]:
            victim.kill()
        assert proc.wait(timeout=120) == 2
    kinds = dict(query(db, "SELECT kind, count(*) FROM events GROUP BY kind"))
    assert kinds.get("leftover_stub", 0) >= 1
    assert kinds.get("leftover_shm", 0) >= 1
    assert kinds.get("cleanup") == 1
    assert not frozen.is_running() or frozen.status() == psutil.STATUS_ZOMBIE
    assert shm_regions() - regions_before == set()
    assert stub_processes() - stubs_before == set()


def test_broken_stub_environment_hangs_load_and_watchdog_ends_it(tmp_path):
    stub = tmp_path / "broken_stub"
    stub.write_text("#!/bin/sh\nexit 1\n")
    stub.chmod(0o755)
    profile = write_profile(
        tmp_path,
        """
servers = 1
iterations = 5
[timeouts]
load = 4
""",
    )
    db = tmp_path / "r.db"
    started = time.monotonic()
    proc = soak(
        "run",
        str(profile),
        "--db",
        str(db),
        "--no-progress",
        timeout=120,
        env={**os.environ, "SOAK_STUB": str(stub)},
    )
    assert proc.returncode == 2
    assert time.monotonic() - started < 60
    ((status, reason),) = query(db, "SELECT status, reason FROM runs")
    assert status == "hung" and "load" in reason
    dumps = query(db, "SELECT message FROM events WHERE kind = 'stack_dump'")
    assert len(dumps) == 1
    assert "load_model" in dumps[0][0] and "Thread" in dumps[0][0]


def test_ctrl_c_stops_after_the_iteration_and_keeps_data(tmp_path):
    db = tmp_path / "r.db"
    proc = start_soak("smoke", "--iterations", "60", "--db", str(db), log=tmp_path / "log")
    with reaped(proc):
        wait_for_iterations(db, 1, proc)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    assert code in (1, 3)  # interrupted: a leak would still be a leak, else inconclusive
    ((status, done),) = query(db, "SELECT status, iterations_done FROM runs")
    assert status == "interrupted"
    assert 1 <= done < 60
    assert query(db, "SELECT count(*) FROM samples WHERE kind='quiet'")[0][0] == done
    assert "stopping after this iteration" in (tmp_path / "log").read_text()


def test_the_supervisor_samples_the_server_processes_its_worker_names(tmp_path):
    from dataclasses import replace

    from soak import profile as profiles
    from soak.runner import protocol as proto
    from soak.runner.supervisor import Supervisor
    from soak.runner.views import RunOutcome, run_columns
    from soak.runner.watch import Watch
    from soak.sampling.process import ProcessTreeSampler
    from soak.store import Store
    from soak.triton.facts import LogReader

    prof = profiles.load("smoke")
    store = Store(tmp_path / "r.db")
    run_id = store.create_run(run_columns(prof))
    supervisor = Supervisor(prof, store)
    worker = subprocess.Popen(["sleep", "30"])
    server = subprocess.Popen(["sleep", "30"])
    try:
        watch = Watch(
            run_id, tmp_path, worker, None, ProcessTreeSampler(worker.pid),
            LogReader(tmp_path / "triton.log"), RunOutcome(run_id, "running", "", 0, 0),
            time.time(), time.monotonic() + 60,
        )  # fmt: skip
        hello = proto.Hello(worker.pid, "/lib.so", "wheel", "1.34", "3.11.7")
        first = watch.sampler
        supervisor._on_hello(watch, hello)  # names no server process: the worker itself
        assert watch.sampler is first and watch.sampler.pid == worker.pid
        supervisor._on_hello(watch, replace(hello, server_pids=[server.pid]))
        assert watch.sampler.pid == server.pid and watch.proc is worker
    finally:
        supervisor.gpu.close()
        store.close()
        for proc in (worker, server):
            proc.kill()
            proc.wait()


def _supervising(tmp_path: Path, worker: subprocess.Popen, channel):
    """A Supervisor of a smoke run and the Watch it would keep of `worker` on `channel`, for
    driving its handlers one message at a time: (supervisor, store, watch)."""
    from soak import profile as profiles
    from soak.runner.servers import ServerSampling
    from soak.runner.supervisor import Supervisor
    from soak.runner.views import RunOutcome, run_columns
    from soak.runner.watch import Watch
    from soak.sampling.process import ProcessTreeSampler
    from soak.store import Store
    from soak.triton.facts import LogReader

    prof = profiles.load("smoke")
    store = Store(tmp_path / "r.db")
    run_id = store.create_run(run_columns(prof))
    sampler = ProcessTreeSampler(worker.pid)
    watch = Watch(
        run_id, tmp_path, worker, channel, sampler, LogReader(tmp_path / "triton.log"),
        RunOutcome(run_id, "running", "", 0, 0), time.time(), time.monotonic() + 60,
        got_hello=True, servers=ServerSampling(sampler),
    )  # fmt: skip
    return Supervisor(prof, store), store, watch


def test_a_worker_gone_after_its_quiet_point_is_read_to_its_last_message(tmp_path):
    """The worker reports a quiet point, then a tritonserver it drives crashes: it sends
    Failed and exits before the supervisor's Continue. The Continue meets a closed pipe, and
    the run ends as the worker said (crashed), not as a supervisor error (seen under load in
    test_remote_e2e's SIGSEGV test: 'failed: supervisor error: [Errno 32] Broken pipe')."""
    from soak.runner import protocol as proto

    worker = subprocess.Popen(["sleep", "30"])
    to_worker_r, to_worker_w = os.pipe()
    from_worker_r, from_worker_w = os.pipe()
    os.close(to_worker_r)  # the worker has exited: nobody reads the supervisor's messages
    channel = proto.Channel(from_worker_r, to_worker_w)
    supervisor, store, watch = _supervising(tmp_path, worker, channel)
    try:
        quiet = proto.Quiet(0, 0.1, 0, 0, 0, {}, {}, [], None)
        os.write(from_worker_w, proto.Failed("tritonserver 1 crashed (killed by SIGSEGV)").encode())
        os.close(from_worker_w)
        assert supervisor._on_quiet(watch, quiet) is False  # not ended: read what came next
        assert watch.outcome.iterations_done == 1
        worker.kill()
        worker.wait()
        while not supervisor._step(watch):
            pass
        assert (watch.outcome.status, watch.outcome.reason) == (
            "crashed",
            "tritonserver 1 crashed (killed by SIGSEGV)",
        )
    finally:
        supervisor.gpu.close()
        store.close()
        channel.close()
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_a_worker_slow_to_exit_after_its_failure_keeps_its_reason(tmp_path, monkeypatch):
    """The worker reports Failed, then does not exit (seen in a clean-clone CI run: an
    attached tritonserver was SIGKILLed and the worker's client close waited on a connection
    the server's surviving stub held). The run ends as the worker said, the slow exit is an
    event, and the teardown kills it; before, the wait's timeout became 'supervisor error'."""
    from soak.runner import protocol as proto
    from soak.runner import supervisor as sup

    monkeypatch.setattr(sup, "_EXIT_AFTER_REPORT_S", 0.5)
    worker = subprocess.Popen(["sleep", "60"])
    to_worker_r, to_worker_w = os.pipe()
    from_worker_r, from_worker_w = os.pipe()
    channel = proto.Channel(from_worker_r, to_worker_w)
    supervisor, store, watch = _supervising(tmp_path, worker, channel)
    try:
        failed = proto.Failed("attached tritonserver 7 ended while soak ran")
        os.write(from_worker_w, failed.encode())
        while not supervisor._step(watch):
            pass
        supervisor._teardown(watch)
        assert (watch.outcome.status, watch.outcome.reason) == (
            "crashed",
            "attached tritonserver 7 ended while soak ran",
        )
        assert worker.poll() is not None  # killed by the teardown
        kinds = [k for (k,) in query(tmp_path / "r.db", "SELECT kind FROM events")]
        assert "slow_exit" in kinds, kinds
    finally:
        supervisor.gpu.close()
        store.close()
        channel.close()
        os.close(from_worker_w)
        os.close(to_worker_r)
        if worker.poll() is None:
            worker.kill()
            worker.wait()
