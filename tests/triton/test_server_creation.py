"""Servers created and deleted from several threads at once: Triton 2.51's pinned memory
manager race, and the lock that keeps soak's workload clear of it (soak.triton.server).

Each case runs in its own process, because the race kills the process it happens in."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

_CHURN = """
import resource, sys, threading
from pathlib import Path
from soak.triton import Server, ServerOptions, setup
from soak.workload.repos import write_model

resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
workdir, serialize, loops = Path(sys.argv[1]), sys.argv[2] == "serialize", int(sys.argv[3])
runtime = setup(workdir / "triton")
write_model(workdir / "common", "simple")

def lifecycle(i):
    options = ServerOptions(
        (workdir / "common",), runtime.backends_dir, server_id=f"churn-{i}",
        serialize_new_delete=serialize,
    )
    Server(options).close()

for loop in range(loops):
    threads = [threading.Thread(target=lifecycle, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
print("survived", loops, flush=True)
"""


def _churn(tmp_path: Path, mode: str, loops: int) -> subprocess.CompletedProcess:
    """Four threads, each creating and deleting a server, `loops` times over."""
    return subprocess.run(
        [sys.executable, "-c", _CHURN, str(tmp_path), mode, str(loops)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_serialized_new_and_delete_survive_four_threads_churning(tmp_path):
    done = _churn(tmp_path, "serialize", 500)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "survived 500" in done.stdout


def test_triton_crashes_when_new_and_delete_race_unserialized(tmp_path):
    """The Triton finding itself: without the lock the same churn kills the process (seen
    within 10 to 40 loops of 4 threads in every try). If this starts passing, a new Triton
    has fixed PinnedMemoryManager::Create/Reset and the lock can be reconsidered."""
    done = _churn(tmp_path, "concurrent", 2000)
    assert done.returncode in (-signal.SIGSEGV, -signal.SIGABRT, -signal.SIGBUS), (
        f"4 threads creating and deleting servers unserialized exited {done.returncode}: "
        "has Triton made its pinned memory manager thread-safe?"
    )
