"""A real tritonserver executable per test module, and the checks that it left nothing."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from soak.tritonserver import executable
from soak.tritonserver.process import ServerProcess
from soak.tritonserver.regions import CLIENT_REGION_PREFIX
from soak.workload import repos

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
SHM = Path("/dev/shm")


@pytest.fixture(scope="session")
def server_executable(tmp_path_factory) -> executable.ServerExecutable:
    return executable.prepare(tmp_path_factory.mktemp("tritonserver"))


@pytest.fixture(scope="session")
def repositories(tmp_path_factory) -> list[Path]:
    """simple1 (correct), simple2 (execute raises on marked requests), and the examples
    (count_decoupled among them)."""
    root = tmp_path_factory.mktemp("repos")
    common, unique = repos.write_repositories(root, 1)
    repos.write_model(unique[0], "raising", behaviour=repos.Behaviour.EXECUTE_RAISES)
    return [common, unique[0], EXAMPLES]


@pytest.fixture(scope="module")
def running(server_executable, repositories, tmp_path_factory):
    """One server for a module's tests; stopped, and checked clean, at its end."""
    log = tmp_path_factory.mktemp("log") / "tritonserver.log"
    server = ServerProcess(server_executable, repositories, log).start()
    yield server
    end = server.stop()
    assert end.clean, end.describe()
    assert_gone(server.pid)


def tritonservers() -> set[int]:
    found = set()
    for proc in psutil.process_iter(["name"]):
        if proc.info.get("name") == executable.EXECUTABLE:
            found.add(proc.pid)
    return found


def client_regions() -> set[str]:
    return {p.name for p in SHM.glob(f"{CLIENT_REGION_PREFIX}{os.getpid()}_*")}


def assert_gone(pid: int) -> None:
    """No server with this pid, no stub naming it as parent, no region of this client."""
    assert pid not in tritonservers()
    stubs = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if (p.info.get("cmdline") or [""])[0].endswith("triton_python_backend_stub")
        and str(pid) in (p.info.get("cmdline") or [])
    ]
    assert stubs == []
    assert client_regions() == set()
