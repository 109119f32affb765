"""The driver of a Ray matrix: joins the cluster (refusing an address that answers nothing at
once), starts one Ray task per cell, follows where each runs, stops them on Ctrl-C and imports
each cell's rows into the results database, the only one it writes."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from soak.errors import SoakError
from soak.formatting import cell_label
from soak.profile import Profile
from soak.runner.ray import import_ray
from soak.runner.ray.node import (
    CLEANUP_WAIT_S,
    NodeTag,
    await_no_matrix_processes,
    run_cell_task,
    signal_cell,
)
from soak.runner.ray.placement import cell_resources, cpu_cap, on_node, unplaceable
from soak.runner.views import RunOutcome, run_columns
from soak.store import Store, event

log = logging.getLogger(__name__)


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


#: Seconds a HOST:PORT or ray://HOST:PORT address has to accept a TCP connection before Ray is
#: asked to join it: Ray itself retries a wrong GCS address for minutes, and a wrong client
#: address for 30 s (Ray 2.60), before it gives up.
REACH_TIMEOUT_S = 5.0


def _check_reachable(address: str) -> None:
    """A GCS address (HOST:PORT) or a Ray client address (ray://HOST:PORT) that accepts no
    connection is refused at once."""
    if address in ("auto", "local"):
        return
    scheme, client, inner = address.partition("://")
    if client and scheme != "ray":  # another client module's address: Ray's to judge
        return
    host, sep, port = (inner if client else address).rpartition(":")
    if not sep or not port.isdigit():
        if client:  # ray://HOST: the Ray client picks the port
            return
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
        self.states = [CellState(cell_label(c.cell, empty=c.name)) for c in cells]
        here = ray.get_runtime_context().get_node_id()
        board = (
            ray.remote(num_cpus=0)(_Board)
            .options(scheduling_strategy=_affinity(ray, here, soft=False))
            .remote()
        )
        task = ray.remote(max_retries=0)(run_cell_task)
        pending: dict[Any, int] = {}
        for i, cell in enumerate(cells):
            tags = cell.matrix_tags
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
            **cell.matrix_tags,
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
