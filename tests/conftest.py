"""Shared fixtures: one real Triton runtime per test session, a leftover guard, and the
synthetic database the triage tests read."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psutil
import pytest

from soak.triton import GRPC_FORK_ENV

# Before anything loads gRPC: in-process tests share this process with the tritonserver
# target's gRPC client, and gRPC's fork handler deadlocks the stubs Triton forks
# (soak.triton.setup says more).
os.environ.setdefault(GRPC_FORK_ENV, "0")

from soak.sampling.waiting import wait_ended  # noqa: E402
from soak.triton.backends import STUB_EXECUTABLE  # noqa: E402
from soak.triton.facts import REGION_PREFIX  # noqa: E402

SHM = Path("/dev/shm")
#: Every process this test session starts inherits this marker (workers, and through them the
#: python-backend stubs), so the leftover checks count this session's stubs only: other test
#: sessions or soak runs on the same machine must neither trip nor hide them.
SESSION_ENV = "SOAK_TEST_SESSION"
SESSION_ID = os.environ.setdefault(SESSION_ENV, uuid.uuid4().hex)


def all_stubs() -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if proc.info.get("name") == STUB_EXECUTABLE or (
            cmd and os.path.basename(cmd[0]) == STUB_EXECUTABLE
        ):
            out.append(proc)
    return out


def _ours(proc: psutil.Process) -> bool:
    try:
        return proc.environ().get(SESSION_ENV) == SESSION_ID
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # cannot tell: count it, a false alarm is the safe mistake


def stub_processes() -> set[int]:
    """This session's python-backend stub processes."""
    return {p.pid for p in all_stubs() if _ours(p)}


def shm_regions() -> set[str]:
    """python-backend shm regions, less those that other sessions' live stubs name."""
    foreign = set()
    for proc in all_stubs():
        if not _ours(proc):
            try:
                foreign.update(a for a in proc.cmdline() if REGION_PREFIX in a)
            except psutil.Error:
                pass
    names = {p.name for p in SHM.glob(REGION_PREFIX + "*")}
    return {n for n in names if not any(n in arg for arg in foreign)}


def write_model_with(repo: Path, name: str, first_line: str) -> Path:
    """soak's add/sub model `name` in `repo` whose execute runs `first_line` first (a sleep
    to make it slow, a C call that holds the GIL); the model.py written."""
    from soak.workload.repos import write_model

    model_py = write_model(repo, name) / "1" / "model.py"
    head = "    def execute(self, requests):\n"
    model_py.write_text(model_py.read_text().replace(head, f"{head}        {first_line}\n", 1))
    return model_py


def cuda_problem() -> str | None:
    """Why pinned/GPU memory cannot be used here, or None when a GPU answers."""
    from soak.triton import capi
    from soak.triton.memory import Cuda

    return Cuda(capi.locate().library_dir).problem


@pytest.fixture(scope="session", autouse=True)
def no_leftovers():
    """The whole session must leave no stub process and no shm region behind."""
    stubs_before, regions_before = stub_processes(), shm_regions()
    yield
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stubs = stub_processes() - stubs_before
        regions = shm_regions() - regions_before
        if not stubs and not regions:
            return
        time.sleep(0.2)
    raise AssertionError(
        f"tests left behind stubs {sorted(stubs)} and shm regions {sorted(regions)}"
    )


@pytest.fixture(scope="session")
def runtime(tmp_path_factory):
    """The real Triton core, loaded once into the test process."""
    from soak.triton import setup

    return setup(tmp_path_factory.mktemp("triton"))


@pytest.fixture(scope="session")
def gpu():
    problem = cuda_problem()
    if problem is not None:
        pytest.skip(f"needs an NVIDIA GPU: {problem}")


def kill_and_unlink(pids: set[int], regions: set[str]) -> None:
    """Remove what a deliberately killed test process left behind."""
    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            proc.kill()
            procs.append(proc)
        except psutil.NoSuchProcess:
            pass
    wait_ended(procs, timeout_s=5)
    for name in regions:
        (SHM / name).unlink(missing_ok=True)


@pytest.fixture(scope="session")
def soak_db(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """The triage tests' database (tests.synthetic.build_db) and its run ids by role; read-only
    tests share it."""
    from tests.synthetic import build_db

    path = tmp_path_factory.mktemp("triage") / "soak.db"
    return path, build_db(path)


@pytest.fixture
def ids(soak_db) -> dict[str, int]:
    return soak_db[1]
