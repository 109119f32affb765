"""A profile's matrix cells on a Ray cluster: one Ray task per cell, the driver the only writer.

On its node a cell runs the ordinary supervisor/worker pair into a node-local database, in a
process of its own session that is no child of the Ray worker: Ray kills a task's direct
children with its worker, and `ray.cancel(force=False)` does not interrupt a task that waits
(both seen with Ray 2.60). That cell process watches the Ray worker; when the worker is gone
(force-cancelled, or its node died) it ends its own worker's tree and removes the stubs' shm
regions, as a second Ctrl-C does locally. The task returns the run's rows; the driver imports
them tagged with the node (host, Ray node id, GPU) and the caller judges them as a local run.
Ray is optional: it is imported here only, and only when asked for.
"""

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
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from soak.errors import SoakError
from soak.profile.loading import Profile
from soak.runner.supervisor import RunOutcome, run_columns
from soak.store import Store, event, export_run, open_readonly

log = logging.getLogger(__name__)

INSTALL_LINE = "pip install 'soak[ray]'"
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


def import_ray() -> Any:
    """The ray module, or the one-line refusal that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise SoakError(
            f"--ray needs Ray, which is not installed here; install it with: {INSTALL_LINE}"
        ) from exc
    return ray


@dataclass(frozen=True)
class NodeTag:
    """Where a cell ran."""

    host: str
    ray_node_id: str

    @property
    def short(self) -> str:
        return f"{self.host}/{self.ray_node_id[:8]}"


@dataclass
class CellState:
    label: str
    status: str = "pending"  # pending | running | done
    node: NodeTag | None = None
    outcome: RunOutcome | None = None


@dataclass(frozen=True)
class CellsProgress:
    """What a progress display needs: each cell's state, and where the running ones run."""

    cells: tuple[CellState, ...]

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.cells)

    def line(self) -> str:
        running = [f"{c.label} on {c.node.short}" for c in self.cells if c.status == "running"]
        where = f" ({', '.join(running)})" if running else ""
        return (
            f"cells: {self.count('pending')} pending, {self.count('running')} running{where}, "
            f"{self.count('done')} done"
        )


def cell_label(cell: Profile) -> str:
    return " ".join(f"{k}={v}" for k, v in cell.cell.items()) or cell.name


def cell_resources(cell: Profile, largest_node_cpus: float = 0.0) -> dict[str, Any]:
    """Ray task options of a cell: a GPU when it uses GPU memory or instances, a CPU per
    server up to what the largest node has (so that it fits somewhere), its custom resources."""
    cpus = float(cell.run["servers"])
    if largest_node_cpus > 0:
        cpus = min(cpus, largest_node_cpus)
    return {
        "num_cpus": cpus,
        "num_gpus": 1 if cell.uses_gpu else 0,
        "resources": dict(cell.ray["resources"]),
    }


def on_node(cell: Profile) -> Profile:
    """The cell as its node runs it: Ray gives a GPU cell its GPU as CUDA_VISIBLE_DEVICES,
    in which that GPU is device 0 (the GpuSampler then samples it alone)."""
    if not cell.uses_gpu:
        return cell
    return replace(cell, run={**cell.run, "gpu_device": 0})


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


def cpu_cap(cell: Profile, nodes: list[dict[str, Any]]) -> float:
    """The most CPUs a live node that has the cell's other resources (GPU, custom) offers."""
    opts = cell_resources(cell)
    others = {"GPU": opts["num_gpus"], **opts["resources"]}
    fitting = [
        n["Resources"].get("CPU", 0.0)
        for n in nodes
        if n.get("Alive") and all(n["Resources"].get(k, 0.0) >= v for k, v in others.items() if v)
    ]
    return max(fitting, default=0.0)


def unplaceable(cells: list[Profile], nodes: list[dict[str, Any]]) -> str | None:
    """Why a cell fits on no live node of the cluster (None: every cell fits on one)."""
    for cell in cells:
        if cpu_cap(cell, nodes) > 0:
            continue
        opts = cell_resources(cell)
        wanted = {"GPU": opts["num_gpus"], **opts["resources"]}
        asks = ", ".join(f"{k}={v:g}" for k, v in wanted.items() if v) or "a CPU"
        return f"cell [{cell_label(cell)}] needs {asks}, which no live node of the cluster has"
    return None


# -- on the node ------------------------------------------------------------------------------
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
            tail = _tail(workdir / LOG_FILE)
            raise SoakError(f"the cell process ended without an outcome: {tail}")
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


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return " ".join(path.read_text(errors="replace")[-limit:].split()) or "(no output)"
    except OSError:
        return "(no output)"


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


# -- the driver -------------------------------------------------------------------------------
class _Board:
    """A tiny actor on the driver's node: where each cell runs (node, cell process id)."""

    def __init__(self) -> None:
        self.cells: dict[int, tuple[NodeTag, int]] = {}

    def start(self, index: int, node: NodeTag, pid: int) -> None:
        self.cells[index] = (node, pid)

    def started(self) -> dict[int, tuple[NodeTag, int]]:
        return dict(self.cells)


def connect(address: str) -> bool:
    """Join (or, for `local`, start) a cluster; True when this call started Ray here. Ray shuts
    down at exit (its own atexit hook), or when `RayMatrix.run` started it."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    _check_reachable(address)
    try:
        with _stderr_to_log():
            if address == "local":
                ray.init(include_dashboard=False, logging_level=logging.WARNING)
            else:
                ray.init(address=address, logging_level=logging.WARNING)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ...
        raise SoakError(f"--ray {address}: cannot join the Ray cluster: {exc}") from exc
    return True


#: Seconds a HOST:PORT address has to accept a TCP connection before Ray is asked to join it:
#: Ray itself retries a wrong address for minutes before it gives up.
REACH_TIMEOUT_S = 5.0


def _check_reachable(address: str) -> None:
    """A plain HOST:PORT (a GCS address) that accepts no connection is refused at once."""
    if address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise SoakError(f"--ray {address}: give auto, local, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection(
            (host.strip("[]") or "127.0.0.1", int(port)), REACH_TIMEOUT_S
        ).close()
    except OSError as exc:
        raise SoakError(
            f"--ray {address}: no Ray cluster answers there ({exc.strerror or exc}); start one "
            "with `ray start --head` or use --ray local"
        ) from None


@contextmanager
def _stderr_to_log() -> Iterator[None]:
    """Ray's C++ core writes a line per failed connection attempt to fd 2 (20 lines for a
    wrong address): into the log instead, so that a refusal stays one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace").strip()
            if text:
                log.info("Ray while joining: %s", text)


def check_placeable(profile: Profile) -> None:
    """Refuse, before any run row, a cell that no live node of the joined cluster can take."""
    problem = unplaceable(profile.cells(), import_ray().nodes())
    if problem:
        raise SoakError(f"{profile.source}: {problem}")


@dataclass
class RayMatrix:
    """Run a profile's cells as Ray tasks; `run()` returns one outcome per cell that ran, in
    cell order, each a run of `store` (``on_outcome`` hears of each as it comes home);
    `cancel()` (from a signal handler) stops them."""

    profile: Profile
    store: Store
    address: str = "auto"
    on_progress: Callable[[CellsProgress], None] | None = None
    on_outcome: Callable[[RunOutcome], None] | None = None
    cancels: int = 0
    states: list[CellState] = field(default_factory=list)

    def cancel(self, by: str = "Ctrl-C") -> None:
        """First call: pending cells are cancelled, running ones stop after their iteration.
        Second: running cells are force-cancelled; their nodes remove what they leave. ``by``
        (the signal's name) is accepted as a Supervisor's request_stop takes it."""
        self.cancels += 1

    request_stop = cancel  # what soak.runner.session.Stopper calls

    def run(self) -> list[RunOutcome]:
        ray = import_ray()
        started_here = connect(self.address)
        try:
            return self._run(ray)
        finally:
            if started_here:
                ray.shutdown()

    def _run(self, ray: Any) -> list[RunOutcome]:
        cells = self.profile.cells()
        check_placeable(self.profile)
        nodes = ray.nodes()
        matrix_id = uuid.uuid4().hex
        self.states = [CellState(cell_label(c)) for c in cells]
        here = ray.get_runtime_context().get_node_id()
        board = (
            ray.remote(num_cpus=0)(_Board)
            .options(scheduling_strategy=_affinity(ray, here, soft=False))
            .remote()
        )
        task = ray.remote(max_retries=0)(run_cell_task)
        pending: dict[Any, int] = {}
        for i, cell in enumerate(cells):
            tags = {"matrix": self.profile.name, "cell": cell.cell} if cell.cell else {}
            opts = cell_resources(cell, cpu_cap(cell, nodes))
            ref = task.options(name=f"soak cell {self.states[i].label}", **opts).remote(
                i, cell, tags, matrix_id, board
            )
            pending[ref] = i
        outcomes: dict[int, RunOutcome] = {}
        shown = ""
        acted = 0
        try:
            while pending:
                if self.cancels > acted:
                    acted = self.cancels
                    self._stop(ray, board, pending, matrix_id, force=acted > 1)
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                self._mark_running(ray, board)
                for ref in ready:
                    i = pending.pop(ref)
                    outcome = self._collect(ray, ref, cells[i], self.states[i])
                    if outcome is not None:
                        outcomes[i] = outcome
                        if self.on_outcome:
                            self.on_outcome(outcome)
                    self.states[i].status = "done"
                    self.states[i].outcome = outcome
                line = CellsProgress(tuple(self.states)).line()
                if self.on_progress and line != shown:
                    shown = line
                    self.on_progress(CellsProgress(tuple(self.states)))
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            if acted or pending:  # something was force-cancelled: wait for the nodes' cleanup
                self._await_nodes_clean(ray, matrix_id)
            ray.kill(board)
        return [outcomes[i] for i in sorted(outcomes)]

    def _stop(
        self, ray: Any, board: Any, pending: dict[Any, int], matrix_id: str, force: bool
    ) -> None:
        """Cancel the cells not started yet; ask the running ones to stop after their
        iteration (a signal sent on their node), or force-cancel them."""
        started = ray.get(board.started.remote())
        stoppers = []
        for ref, i in pending.items():
            if force or i not in started:
                ray.cancel(ref, force=True)
                continue
            node, pid = started[i]
            stopper = ray.remote(num_cpus=0, max_retries=0)(signal_cell).options(
                scheduling_strategy=_affinity(ray, node.ray_node_id, soft=False)
            )
            stoppers.append(stopper.remote(pid, matrix_id, int(signal.SIGINT)))
        try:
            ray.get(stoppers, timeout=30)
        except ray.exceptions.RayError as exc:  # a node died meanwhile: its cell fails anyway
            log.warning("a stop request did not arrive: %s", _short(exc))

    def _mark_running(self, ray: Any, board: Any) -> None:
        try:
            started = ray.get(board.started.remote(), timeout=30)
        except ray.exceptions.RayError as exc:  # progress loses the places, the cells go on
            log.warning("where the cells run is unknown: %s", _short(exc))
            return
        for i, (node, _) in started.items():
            state = self.states[i]
            state.node = node
            if state.status == "pending":
                state.status = "running"

    def _collect(self, ray: Any, ref: Any, cell: Profile, state: CellState) -> RunOutcome | None:
        """The cell's run imported into the results database; a cell that did not come back
        (node died, task failed) becomes a failed run with the reason; a cancelled cell that
        never started leaves no run, as a local matrix cut short by Ctrl-C."""
        try:
            result = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            if state.node is None:
                return None
            return self._failed(
                cell, state, "interrupted", "force-cancelled (Ctrl-C twice); its samples are lost"
            )
        except ray.exceptions.RayError as exc:
            return self._failed(cell, state, "failed", _short(exc))
        node: NodeTag = result["node"]
        state.node = node
        tags = {"host": node.host, "ray_node_id": node.ray_node_id}
        run_id = self.store.import_run(result["rows"], tags)
        o = result["outcome"]
        return RunOutcome(run_id, o["status"], o["reason"], o["iterations_done"], o["failures"])

    def _failed(self, cell: Profile, state: CellState, status: str, reason: str) -> RunOutcome:
        where = f" on {state.node.short}" if state.node else ""
        row = {
            **run_columns(on_node(cell)),
            "status": status,
            "reason": f"Ray cell{where}: {reason}",
            "ended_at": time.time(),
            **({"matrix": self.profile.name, "cell": cell.cell} if cell.cell else {}),
        }
        node = state.node
        row.update(host=node.host if node else None, ray_node_id=node.ray_node_id if node else None)
        run_id = self.store.create_run(row)
        self.store.add_events(run_id, [event("ray", row["reason"])])
        return RunOutcome(run_id, status, row["reason"], 0, 0)

    def _await_nodes_clean(self, ray: Any, matrix_id: str) -> None:
        """After a force-cancel: on every live node, wait until the cells' processes are gone
        (each removes its stubs' regions first), so that nothing stays behind."""
        waiter = ray.remote(num_cpus=0, max_retries=0)(await_no_matrix_processes)
        refs = [
            waiter.options(scheduling_strategy=_affinity(ray, n["NodeID"], soft=False)).remote(
                matrix_id
            )
            for n in ray.nodes()
            if n["Alive"]
        ]
        try:
            left = [pid for pids in ray.get(refs, timeout=CLEANUP_WAIT_S + 30) for pid in pids]
        except ray.exceptions.RayError as exc:
            log.warning("could not check the nodes for leftovers: %s", _short(exc))
            return
        if left:
            log.warning("processes of cancelled cells still running: %s", left)


def _affinity(ray: Any, node_id: str, soft: bool) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=soft)


def _short(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}"


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    sys.exit(cell_main(Path(sys.argv[1]), int(sys.argv[2])))
