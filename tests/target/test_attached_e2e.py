"""Attach mode end to end: the test starts its own tritonserver (the real executable, CPU), then
`soak run --url --pid` soaks it with traffic and reload: soak samples that process, never
starts or stops a server, and leaves it running as it found it; bad attach input is one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from soak.tritonserver import executable
from soak.tritonserver.client import RemoteServer
from soak.tritonserver.process import ServerProcess
from soak.workload import repos
from tests.conftest import write_model_with
from tests.e2e import SOAK_CLI, query
from tests.runner.test_supervisor import ROOT, write_profile
from tests.target.test_remote_e2e import client_regions, tritonservers

pytestmark = pytest.mark.e2e

COMMON, OWN = repos.COMMON_MODEL, repos.own_model_name(0)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A tritonserver soak did not start, over soak's generated add/sub repositories, with
    OWN loaded before soak attaches (it must be ready again after)."""
    tmp = tmp_path_factory.mktemp("attached")
    common, unique = repos.write_repositories(tmp / "repos", 1)
    proc = ServerProcess(executable.prepare(tmp / "exe"), [common, unique[0]], tmp / "ts.log")
    with proc:
        client = RemoteServer(proc.http_url)
        client.load_model(OWN)
        client.close()
        yield proc, [common, unique[0]], tmp
    assert proc.end is not None and proc.end.clean, proc.end.describe()


def attach_text(repositories: list[Path], extra: str, load: tuple[str, ...]) -> str:
    return (
        'target = "tritonserver"\npurpose = "machinery"\nservers = 1\nwarmup = 1\n'
        + extra
        + f"[models]\nrepositories = {json.dumps([str(r) for r in repositories])}\n"
        + f"load = {json.dumps(list(load))}\n"
    )


def soak_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SOAK_CLI, "run", *args, "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def ready_models(proc: ServerProcess) -> set[str]:
    client = RemoteServer(proc.http_url)
    try:
        return {m["name"] for m in client.model_index(ready_only=True)}
    finally:
        client.close()


@pytest.fixture(scope="module")
def runs(server):
    """Traffic over HTTP with system shared memory (OWN among its models), then reload over
    gRPC, both attached; what was running before and after."""
    proc, repositories, tmp = server
    servers_before = tritonservers()
    stubs_before = _stubs_of(proc.pid)
    traffic = write_profile(
        tmp,
        attach_text(
            repositories,
            'scenario = "traffic"\niterations = 6\ninferences_per_model = 10\n'
            'shared_memory = "system"\n',
            (COMMON, OWN),
        ),
        "traffic",
    )
    reload = write_profile(
        tmp,
        attach_text(
            repositories,
            'scenario = "reload"\nprotocol = "grpc"\niterations = 3\ninferences_per_model = 4\n'
            f'[tritonserver]\nurl = "grpc://{proc.grpc_url}"\npid = {proc.pid}\n',
            (COMMON,),
        ),
        "reload",
    )
    db = tmp / "r.db"
    done = [
        soak_run(
            str(traffic),
            "--db",
            str(db),
            "--url",
            f"http://{proc.http_url}",
            "--pid",
            str(proc.pid),
        ),
        soak_run(str(reload), "--db", str(db)),
    ]
    workers = [w for (w,) in query(db, "SELECT worker_pid FROM runs")]
    left = (tritonservers() - servers_before, _client_regions_of(workers))
    return db, done, left, stubs_before, _stubs_of(proc.pid)


def _client_regions_of(workers: list[int]) -> set[str]:
    """The client regions of these workers (their pid is in the name) still in /dev/shm."""
    return {r for r in client_regions() for w in workers if r.startswith(f"soak_client_shm_{w}_")}


def _stubs_of(pid: int) -> set[int]:
    return {c.pid for c in psutil.Process(pid).children(recursive=True)}


def test_traffic_and_reload_pass_against_the_attached_server(runs, server):
    db, done, *_ = runs
    for proc in done:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = query(db, "SELECT scenario, status, iterations_done, triton_library FROM runs")
    assert [r[:3] for r in rows] == [("traffic", "passed", 6), ("reload", "passed", 3)]
    pid = server[0].pid
    assert all(f"tritonserver {pid} at " in r[3] and "(attached)" in r[3] for r in rows)
    assert query(db, "SELECT count(*) FROM events WHERE kind = 'failure'") == [(0,)]
    loads = query(db, "SELECT SUM(model_loads) FROM iterations WHERE run_id = 2")
    assert loads == [(3,)]  # only COMMON, once per reload iteration: no generated model


def test_samples_come_from_the_attached_process(runs, server):
    db = runs[0]
    pid = server[0].pid
    pids = query(db, "SELECT DISTINCT run_id, server, pid FROM server_samples ORDER BY run_id")
    assert pids == [(1, 0, pid), (2, 0, pid)]
    counted = query(db, "SELECT run_id, count(*) FROM server_samples GROUP BY run_id")
    assert counted == [(1, 6), (2, 3)]
    rows = query(
        db,
        "SELECT s.rss_bytes, p.rss_bytes, s.client_rss_bytes FROM samples s JOIN server_samples "
        "p ON p.run_id = s.run_id AND p.iteration = s.iteration WHERE s.kind = 'quiet'",
    )
    for summed, own, client in rows:  # one server: the sum is its own row; the client apart
        assert summed == own and own > 20 * 2**20 and client != own


def test_the_server_still_runs_as_it_was_and_nothing_of_soak_is_left(runs, server):
    _, _, left, stubs_before, stubs_after = runs
    proc = server[0]
    assert proc.running
    assert left == (set(), set())  # no tritonserver started, no client region left
    assert ready_models(proc) == {OWN}  # ready before soak attached, ready again; COMMON not
    assert len(stubs_after) == len(stubs_before) == 1  # OWN's stub (the server's own)


def test_show_states_the_slopes_of_the_attached_server(runs, server):
    db = runs[0]
    out = subprocess.run(
        [*SOAK_CLI, "show", "1", "--db", str(db), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    (entry,) = json.loads(out.stdout)["servers"]
    assert entry["pids"] == [server[0].pid] and entry["iterations"] == 5
    assert set(entry["slopes"]) >= {"rss_bytes", "fds", "threads", "stubs_alive"}
    assert entry["slopes"]["stubs_alive"] == 0


@pytest.mark.parametrize(
    "case, expected",
    [
        ("remote-host", ["--url http://10.1.2.3:{port}", "not loopback"]),
        ("dead-pid", ["--pid", "no such process is running"]),
        ("not-the-listener", ["--pid", "is not the process listening on"]),
        ("servers-scenario", ["scenario = 'servers' starts and stops servers", "--url"]),
        ("no-pid", ["--url", "needs --pid"]),
        ("attribute", ["--attribute", "an attached server", "cannot be traced"]),
    ],
)
def test_bad_attach_input_is_one_line(server, tmp_path, case, expected):
    proc, repositories, _ = server
    port = proc.ports.http
    url, pid, scenario = f"http://{proc.http_url}", str(proc.pid), "traffic"
    if case == "remote-host":
        url = f"http://10.1.2.3:{port}"
    elif case == "dead-pid":
        gone = subprocess.Popen(["true"])
        gone.wait()
        pid = str(gone.pid)
    elif case == "not-the-listener":
        pid = str(os.getpid())
    elif case == "servers-scenario":
        scenario = "servers"
    profile = write_profile(
        tmp_path, attach_text(repositories, f'scenario = "{scenario}"\niterations = 2\n', (COMMON,))
    )
    flags = ["--url", url] + ([] if case == "no-pid" else ["--pid", pid])
    flags += ["--attribute"] if case == "attribute" else []
    db = tmp_path / "r.db"
    done = soak_run(str(profile), "--db", str(db), *flags)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("soak: error: "), done.stderr
    for text in expected:
        assert text.format(port=port) in lines[0], lines[0]
    assert not db.exists()
    assert proc.running


def test_an_attached_server_that_dies_is_a_crashed_run(tmp_path):
    """soak does not own it, so it cannot restart it: the run ends `crashed`, naming it and
    the stub that outlives it. The model's execute holds the GIL in a C call once a file
    appears, and the server is killed then: the stub's health thread then waits for the GIL
    to destroy the stub, as in Triton 2.51's deadlock on its way out (README). The stub holds
    the connections it inherited, soak's among them (soak loaded its model), which never
    answer. Before, the worker's client close waited on one for its network timeout and the
    run ended in 'supervisor error' (a clean-clone CI run)."""
    from tests.e2e import reaped, wait_for_iterations
    from tests.runner.test_supervisor import start_soak

    common, _ = repos.write_repositories(tmp_path / "repos", 1)
    hold = tmp_path / "hold"  # from when it exists, execute sleeps in libc holding the GIL
    write_model_with(
        common, COMMON, f"if __import__('os').path.exists({str(hold)!r}): "
        "__import__('ctypes').PyDLL(None).sleep(3600)",
    )  # fmt: skip
    proc = ServerProcess(executable.prepare(tmp_path / "exe"), [common], tmp_path / "ts.log")
    with proc:
        profile = write_profile(
            tmp_path,
            attach_text(
                [common],
                'scenario = "traffic"\niterations = 1000\ninferences_per_model = 4\n'
                'shared_memory = "system"\n'
                f'[tritonserver]\nurl = "http://{proc.http_url}"\npid = {proc.pid}\n',
                (COMMON,),
            ),
        )
        db = tmp_path / "r.db"
        soak = start_soak(str(profile), "--db", str(db), log=tmp_path / "out")
        with reaped(soak):
            wait_for_iterations(db, 2, soak)
            hold.touch()
            stub = wait_for_held(proc.pid)
            os.kill(proc.pid, signal.SIGKILL)
            soak.wait(timeout=120)
        end = proc.stop()  # kills the stub it remembers
    assert end.crashed and end.signal == "SIGKILL"
    assert not psutil.pid_exists(stub) or psutil.Process(stub).status() == psutil.STATUS_ZOMBIE
    status, reason = query(db, "SELECT status, reason FROM runs")[0]
    assert status == "crashed" and f"attached tritonserver {proc.pid}" in reason, reason
    assert f"1 of its stub process(es) still ran 2 s after it (pid {stub})" in reason, reason
    kinds = {k for (k,) in query(db, "SELECT kind FROM events")}
    assert not kinds & {"slow_exit", "leftover_shm"}, kinds  # nothing sent to the dead server
    workers = [w for (w,) in query(db, "SELECT worker_pid FROM runs")]
    assert _client_regions_of(workers) == set()


def wait_for_held(server: int, timeout_s: float = 30.0) -> int:
    """The server's stub whose main thread sleeps in the held execute (traffic reloads its
    model, so the stub changes)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for stub in _stubs_of(server):
            try:
                if "nanosleep" in Path(f"/proc/{stub}/wchan").read_text():
                    return stub
            except OSError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"no stub of tritonserver {server} entered the held execute")


def test_a_server_without_explicit_model_control_is_one_reason(tmp_path):
    """Triton refuses every load of a server in model control mode none ('... if polling is
    enabled'); the run fails before its first iteration saying which flag it needs."""
    common, _ = repos.write_repositories(tmp_path / "repos", 1)
    exe = executable.prepare(tmp_path / "exe")
    args = ("--model-control-mode=none",)  # the last flag wins: tritonserver's own parser
    with ServerProcess(exe, [common], tmp_path / "ts.log", args=args) as proc:
        profile = write_profile(
            tmp_path,
            attach_text(
                [common],
                'scenario = "traffic"\niterations = 2\n'
                f'[tritonserver]\nurl = "http://{proc.http_url}"\npid = {proc.pid}\n',
                (COMMON,),
            ),
        )
        done = soak_run(str(profile), "--db", str(tmp_path / "r.db"))
        assert proc.running and ready_models(proc) == {COMMON}  # left as it was
    assert done.returncode != 0
    status, reason = query(tmp_path / "r.db", "SELECT status, reason FROM runs")[0]
    assert status == "failed" and "--model-control-mode=explicit" in reason, reason
