"""A real tritonserver executable per test module, and the checks that it left nothing."""

from __future__ import annotations

import os
import time
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
    """simple1 (correct), raising (execute raises on marked requests), erroring (an error
    response to marked requests), and the examples (count_decoupled among them)."""
    root = tmp_path_factory.mktemp("repos")
    common, unique = repos.write_repositories(root, 1)
    repos.write_model(unique[0], "raising", behaviour=repos.Behaviour.EXECUTE_RAISES)
    # Error responses, for requests in flight: with several in flight to `raising`, Triton 2.51
    # sometimes keeps it UNLOADING for good (seen in 4 of 7 runs at 4 in flight, none at 1).
    repos.write_model(unique[0], "erroring", behaviour=repos.Behaviour.ERROR_RESPONSE)
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


def wait_unloaded(server, models: list[str], timeout_s: float = 30.0) -> None:
    """Until `models` are UNAVAILABLE (a server stopped while a model that raised is still
    UNLOADING was seen to sit out its whole 30 s exit timeout)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = {m["name"]: m.get("state") for m in server.model_index()}
        if all(states.get(m) == "UNAVAILABLE" for m in models):
            return
        time.sleep(0.05)
    raise AssertionError(f"still not unloaded after {timeout_s:g} s: {states}")
