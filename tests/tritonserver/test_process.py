"""ServerProcess against the real tritonserver executable: ready, stopped, nothing left;
ports taken are retried; a bad flag is one error; a crash is told from a stop."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from soak.errors import ProfileError
from soak.triton.facts import REGION_PREFIX
from soak.tritonserver import process
from soak.tritonserver.process import ServerProcess

from .conftest import SHM, assert_gone


def _load(server: ServerProcess, model: str) -> None:
    url = f"http://{server.http_url}/v2/repository/models/{model}/load"
    urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST")).read()


def _regions_named_by_stubs(server: ServerProcess) -> set[str]:
    server.observe()
    return set(server._sampler.regions_attributed)


def test_ready_loaded_and_stopped_with_nothing_left(server_executable, repositories, tmp_path):
    server = ServerProcess(server_executable, repositories, tmp_path / "log")
    with server:
        assert server.running
        assert f"--http-address={process.LOOPBACK}" in server.command(server.ports)
        _load(server, "simple1")
        regions = _regions_named_by_stubs(server)
        # The instance's stub, and (auto-complete config is on by default) the stub that
        # completed the config at load, which has gone again.
        assert regions and all(n.startswith(REGION_PREFIX) for n in regions)
        assert any((SHM / n).exists() for n in regions)
    end = server.end
    assert end.clean and not end.crashed and end.returncode == 0, end.describe()
    assert end.leftovers.empty
    assert_gone(server.pid)
    assert not any((SHM / n).exists() for n in regions)
    assert "Started HTTPService at 127.0.0.1" in server.log_text()


def test_a_port_taken_before_the_bind_is_retried_with_new_ports(
    server_executable, repositories, tmp_path, monkeypatch
):
    squatter = socket.socket()
    squatter.bind((process.LOOPBACK, 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real = process.free_ports
    calls = []

    def first_one_taken(count: int = 3) -> list[int]:
        calls.append(count)
        ports = real(count)
        return [taken, *ports[1:]] if len(calls) == 1 else ports

    monkeypatch.setattr(process, "free_ports", first_one_taken)
    try:
        with ServerProcess(server_executable, repositories[:1], tmp_path / "log") as server:
            assert server.ports.http != taken
            assert len(server.attempts) == 1 and str(taken) in server.attempts[0]
            with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready") as reply:
                assert reply.status == 200
    finally:
        squatter.close()
    assert server.end.clean
    assert_gone(server.pid)


def test_a_bad_flag_is_one_error_naming_it(server_executable, repositories, tmp_path):
    server = ServerProcess(
        server_executable, repositories[:1], tmp_path / "log", args=["--no-such-flag=1"]
    )
    with pytest.raises(ProfileError) as caught:
        server.start()
    message = str(caught.value)
    assert "\n" not in message
    assert "--no-such-flag" in message and "[tritonserver] args" in message
    assert not server.running
    assert_gone(server.pid)


def test_a_server_killed_by_sigsegv_is_crashed_and_its_stub_and_region_removed(
    server_executable, repositories, tmp_path
):
    server = ServerProcess(server_executable, repositories, tmp_path / "log").start()
    try:
        _load(server, "simple1")
        regions = _regions_named_by_stubs(server)
        assert regions
        os.kill(server.pid, signal.SIGSEGV)
        deadline = time.monotonic() + 10
        while server.running and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        end = server.stop()
    assert end.crashed and end.signal == "SIGSEGV" and not end.stopped_by_soak
    assert end.describe() == "crashed (killed by SIGSEGV)"
    assert_gone(server.pid)
    assert not any((SHM / n).exists() for n in regions)


def test_a_server_that_ignores_sigterm_is_killed_with_its_stubs(
    server_executable, repositories, tmp_path
):
    server = ServerProcess(server_executable, repositories, tmp_path / "log").start()
    _load(server, "simple1")
    regions = _regions_named_by_stubs(server)
    os.kill(server.pid, signal.SIGSTOP)  # a hung server: SIGTERM stays pending
    end = server.stop(grace_s=0.5)
    assert end.killed and end.signal == "SIGKILL" and not end.crashed and not end.clean
    assert_gone(server.pid)
    assert not any((SHM / n).exists() for n in regions)


def test_command_passes_repositories_ports_and_user_args(server_executable, tmp_path):
    server = ServerProcess(
        server_executable, [Path("/a"), Path("/b")], tmp_path / "log", args=["--log-verbose=1"]
    )
    cmd = server.command(process.Ports(1, 2, 3))
    assert cmd[0] == str(server_executable.path)
    assert "--model-control-mode=explicit" in cmd
    assert ["--model-repository=/a", "--model-repository=/b"] == [
        c for c in cmd if c.startswith("--model-repository")
    ]
    assert {"--http-port=1", "--grpc-port=2", "--metrics-port=3"} <= set(cmd)
    assert f"--backend-directory={server_executable.backends_dir}" in cmd
    assert cmd[-1] == "--log-verbose=1"


def test_listening_names_the_ports_some_socket_listens_on():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((process.LOOPBACK, 0))
    port = sock.getsockname()[1]
    (free,) = process.free_ports(1)
    assert process.listening([port, free]) == set()  # bound, not listening: not in use
    sock.listen()
    try:
        assert process.listening([port, free]) == {port}
    finally:
        sock.close()
    assert process.listening([port]) == set()


def test_a_stub_and_region_a_stopped_server_left_are_leftover_events(server_executable, tmp_path):
    """A stub that outlives its server (one named by its parent pid in argv, as the real
    stub is, and a region it names) is found, killed and removed by stop, and said as the
    leftover_stub / leftover_shm events the supervisor stores; the ports are free after."""
    import subprocess

    from tests.sampling.test_process import STUB_SCRIPT

    (tmp_path / "repo").mkdir()
    stub = tmp_path / "bin" / "triton_python_backend_stub"
    stub.parent.mkdir()
    stub.write_text(STUB_SCRIPT)
    stub.chmod(0o755)
    region = SHM / f"{REGION_PREFIX}soak-test-{os.getpid()}-{time.monotonic_ns()}"
    region.write_bytes(b"\0" * 4096)
    server = ServerProcess(server_executable, [tmp_path / "repo"], tmp_path / "log").start()
    argv = [str(stub), "/m/1/model.py", "/" + region.name, "4096", "4096", str(server.pid), "/b"]
    fake = subprocess.Popen(argv)
    try:
        deadline = time.monotonic() + 10
        while region.name not in " ".join(psutil.Process(fake.pid).cmdline()):
            assert time.monotonic() < deadline  # exec'd: a real stub has long been running
            time.sleep(0.01)
        end = server.stop()
        assert end.leftovers.stub_pids == [fake.pid] and end.leftovers.shm_paths == [str(region)]
        assert fake.wait(10) is not None and not region.exists()
        kinds = [kind for kind, _ in end.leftover_events(server.pid)]
        assert kinds == ["leftover_stub", "leftover_shm"] and end.ports_bound == ()
    finally:
        fake.kill()
        fake.wait()
        region.unlink(missing_ok=True)
    assert_gone(server.pid)
