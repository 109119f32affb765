"""On a node: the body of a cell's Ray task, and the cell process it starts (a Supervisor into a
node-local database, guarded against the loss of its Ray worker). Run as
`python -m soak.runner.ray.node WORKDIR GUARD_PID` by the task itself."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from soak.errors import SoakError
from soak.profile import Profile
from soak.runner.ray import import_ray
from soak.runner.ray.placement import on_node
from soak.runner.teardown import tail
from soak.store import Store, export_run, open_readonly

log = logging.getLogger(__name__)

#: Every process of a Ray matrix on a node (cell process, worker, stubs) inherits this marker,
#: so that the driver can wait until a cancelled matrix has left nothing behind on a node.
MATRIX_ENV = "SOAK_RAY_MATRIX"
CELL_FILE, DB_FILE, OUTCOME_FILE, LOG_FILE = "cell.pkl", "cell.db", "outcome.json", "cell.log"
POLL_S = 0.2
CELL_END_WAIT_S = 30.0
CLEANUP_WAIT_S = 30.0
#: Started by the Ray task, this starts the cell process in a new session and exits at once,
#: so that the cell process is no child of the Ray worker and outlives its SIGKILL.
_LAUNCHER = (
    "import subprocess, sys\n"
    "log = open(sys.argv[1], 'ab')\n"
    "p = subprocess.Popen(sys.argv[2:], start_new_session=True, stdin=subprocess.DEVNULL,"
    " stdout=log, stderr=subprocess.STDOUT)\n"
    "print(p.pid)\n"
)


@dataclass(frozen=True)
class NodeTag:
    """Where a cell ran."""

    host: str
    ray_node_id: str

    @property
    def short(self) -> str:
        return f"{self.host}/{self.ray_node_id[:8]}"


def cell_environment(base: dict[str, str], uses_gpu: bool, matrix_id: str) -> dict[str, str]:
    """The cell process's environment: the matrix marker; no GPU for a CPU-only cell (Ray
    leaves CUDA_VISIBLE_DEVICES unset there, which would show every GPU); CUDA numbering in
    PCI order for a GPU cell, so that Ray's GPU ids are NVML's indices."""
    env = {**base, MATRIX_ENV: matrix_id}
    if uses_gpu:
        env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_cell_task(
    index: int, cell: Profile, tags: dict[str, Any], matrix_id: str, board: Any
) -> dict[str, Any]:
    """The body of a cell's Ray task: run the cell in a cell process, return its rows."""
    ray = import_ray()
    node = NodeTag(socket.gethostname(), ray.get_runtime_context().get_node_id())
    workdir = Path(tempfile.mkdtemp(prefix=f"soak-ray-{matrix_id[:8]}-"))
    payload = {"cell": on_node(cell), "tags": {**tags, "ray_node_id": node.ray_node_id}}
    (workdir / CELL_FILE).write_bytes(pickle.dumps(payload))
    env = cell_environment(dict(os.environ), cell.uses_gpu, matrix_id)
    pid = None
    try:
        cell_process = [sys.executable, "-m", __name__, str(workdir), str(os.getpid())]
        launched = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, str(workdir / LOG_FILE), *cell_process],
            env=env,
            cwd=workdir,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        pid = int(launched.stdout.strip())
        board.start.remote(index, node, pid)  # never wait on Ray here: see _await_outcome
        outcome = _await_outcome(workdir, pid)
        ro = open_readonly(workdir / DB_FILE)
        try:
            rows = export_run(ro, outcome["run_id"])
        finally:
            ro.conn.close()
        return {"node": node, "outcome": outcome, "rows": rows}
    finally:
        if pid is not None:
            _end_cell(pid)
        shutil.rmtree(workdir, ignore_errors=True)


def _await_outcome(workdir: Path, pid: int) -> dict[str, Any]:
    """Until the cell process writes its outcome. No Ray call may block here: a task blocked
    in `ray.get` gives its CPUs back to the node, which then starts another cell beside it
    (seen with Ray 2.60); the driver's stop requests come as signals from `signal_cell`."""
    path = workdir / OUTCOME_FILE
    while not path.exists():
        if not _alive(pid):
            if path.exists():
                break
            output = " ".join(tail(workdir / LOG_FILE, 2000).split()) or "(no output)"
            raise SoakError(f"the cell process ended without an outcome: {output}")
        time.sleep(POLL_S)
    return json.loads(path.read_text())


def signal_cell(pid: int, matrix_id: str, signum: int) -> bool:
    """On the cell's node: SIGINT (stop after this iteration) or SIGTERM (at once) to a cell
    process of this matrix; False when it is gone (or the pid is another process now)."""
    try:
        proc = psutil.Process(pid)
        if proc.environ().get(MATRIX_ENV) != matrix_id:
            return False
        proc.send_signal(signum)
    except psutil.Error:
        return False
    return True


def _end_cell(pid: int) -> None:
    """Ask the cell process to stop at once (it ends its worker's tree), then end its group."""
    if not _alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + CELL_END_WAIT_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if _alive(pid):
        log.warning(
            "cell process %d did not stop in %.0f s: killing its group", pid, CELL_END_WAIT_S
        )
        try:
            os.killpg(pid, signal.SIGKILL)  # its own session: the group id is its pid
        except (ProcessLookupError, PermissionError):
            pass


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def cell_main(workdir: Path, guard_pid: int) -> int:
    """The cell process: a Supervisor into the node-local database; it stops at once when its
    Ray worker (``guard_pid``) is gone, and then also removes its folder."""
    from soak.runner.supervisor import Supervisor

    # A Ray worker blocks signals in its threads, and a blocked mask is inherited: unblock, or
    # neither our stop requests nor the supervisor's SIGUSR1 (stack dumps) would arrive.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    payload = pickle.loads((workdir / CELL_FILE).read_bytes())
    store = Store(workdir / DB_FILE)
    supervisor = Supervisor(payload["cell"], store, run_tags=payload["tags"])
    orphaned = threading.Event()
    finished = threading.Event()

    def stop_now(*_: Any) -> None:
        supervisor.request_stop()
        supervisor.request_stop()

    signal.signal(signal.SIGINT, lambda *_: supervisor.request_stop())
    signal.signal(signal.SIGTERM, stop_now)

    def watch() -> None:
        while not finished.wait(POLL_S):
            if not _alive(guard_pid):
                orphaned.set()
                stop_now()
                return

    threading.Thread(target=watch, name="soak-ray-guard", daemon=True).start()
    try:
        outcome = supervisor.run()
        result = {
            "run_id": outcome.run_id,
            "status": outcome.status,
            "reason": outcome.reason,
            "iterations_done": outcome.iterations_done,
            "failures": outcome.failures,
        }
    finally:
        finished.set()
        store.close()
    if orphaned.is_set():  # nobody will read it: leave nothing behind on the node
        shutil.rmtree(workdir, ignore_errors=True)
        return 3
    partial = workdir / (OUTCOME_FILE + ".part")
    partial.write_text(json.dumps(result))
    partial.rename(workdir / OUTCOME_FILE)
    return 0


def await_no_matrix_processes(matrix_id: str, timeout_s: float = CLEANUP_WAIT_S) -> list[int]:
    """Until no process of this node carries the matrix marker; the pids still there."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get(MATRIX_ENV) == matrix_id and _alive(proc.pid):
                    left.append(proc.pid)
            except psutil.Error:
                continue
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(POLL_S)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    sys.exit(cell_main(Path(sys.argv[1]), int(sys.argv[2])))
