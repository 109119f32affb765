"""Sample the worker's process tree from outside: memory, fds, threads, descendants, live python
backend stubs and this run's shared-memory regions; find and remove what a dead worker left.
It must never signal a process or unlink a file that it cannot attribute to this run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from soak.errors import SoakError
from soak.sampling.procfs import descendant_pids, regions_held_by
from soak.sampling.stubs import StubProcess, classify, find_stub_processes, read_stub, stub_alive
from soak.sampling.waiting import wait_ended
from soak.triton.facts import REGION_PREFIX

log = logging.getLogger(__name__)

_FOREIGN_AFTER_S = 2.0  # an unknown region younger than this may still be being set up by us
_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess)


class WorkerGoneError(SoakError):
    """The sampled worker has ended (or its pid now names another process)."""


@dataclass(frozen=True)
class ProcessSample:
    """One row of process-tree metrics of the worker, taken from outside.

    The memory of the worker alone is in ``rss_bytes`` ... ``vms_bytes``; ``children`` counts
    all descendants (zombies included, since an unreaped child is itself a leak) and
    ``children_rss_bytes`` sums their resident memory. ``uss_bytes`` and ``pss_bytes`` are None
    only when the kernel refuses to show smaps.
    """

    rss_bytes: int
    uss_bytes: int | None
    pss_bytes: int | None
    vms_bytes: int
    fds: int
    threads: int
    children: int
    children_rss_bytes: int
    stubs_alive: int
    shm_regions: int
    shm_bytes: int
    sample_cost_s: float

    def as_dict(self) -> dict[str, int | float | None]:
        """Plain dict for JSON lines and SQL rows."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Leftovers:
    """Stubs and shared-memory files of this run still present after its worker ended."""

    stub_pids: list[int]
    shm_paths: list[str]

    @property
    def empty(self) -> bool:
        """True when nothing was left behind."""
        return not self.stub_pids and not self.shm_paths

    def as_dict(self) -> dict[str, list[int] | list[str]]:
        """Plain dict for JSON lines and SQL rows."""
        return dataclasses.asdict(self)


class ProcessTreeSampler:
    """Samples one worker and remembers every stub and region of its run.

    One sampler per worker: what it remembers is what :meth:`leftovers` and :meth:`cleanup` may
    touch after the worker has ended. A stub is remembered by (pid, create time), so a reused
    pid is never mistaken for it.

    A region is attributed to this run (and stays so after its stub has gone) when

    * it is named in the command line of a stub that descends from the worker. The python
      backend starts every stub as ``triton_python_backend_stub <model.py> <region> <size>
      <growth> <parent pid> ...``; the cmdline is read once per stub;
    * or it is held (open fd or mapping, ``/proc/<pid>/fd`` and ``/proc/<pid>/maps``) by the
      worker or one of its live stubs. Those are read only when a file with the region prefix
      that is neither attributed nor known to be foreign turns up in ``shm_dir``: the worker
      creates and maps every region before its stub starts, so a region of this run is found
      there for as long as anything holds it. Reading the maps of a process with 3000
      mappings took 2.2 ms here, and takes that process's mmap lock, hence not on every
      sample. An unknown file that nothing of this run holds and that is older than
      ``_FOREIGN_AFTER_S`` is remembered as foreign and not looked up again.

    Limit: a region whose stub lived and died between two samples, and that nothing holds
    any more, cannot be attributed. Call :meth:`observe` often during an iteration (it costs
    about as much as listing the tree) to see every stub.

    Cost: a sample is one ``oneshot()`` of the worker (stat, status, smaps_rollup, fd dir),
    one read of ``children`` per thread of the tree, two or three small reads per descendant
    and one listing of ``shm_dir``: medians of 0.27 ms with no children and about 1 ms with
    8 (1.2 ms with 8 stubs and regions) on the 2-core dev machine.
    """

    def __init__(
        self, pid: int, shm_dir: str | os.PathLike[str] = "/dev/shm", prefix: str = REGION_PREFIX
    ) -> None:
        try:
            self._worker = psutil.Process(pid)
            self._worker_create_time_s = self._worker.create_time()
        except psutil.NoSuchProcess as exc:
            raise WorkerGoneError(f"worker process {pid} does not exist") from exc
        self.pid = pid
        self.shm_dir = Path(shm_dir)
        self.prefix = prefix
        # (pid, create time, comm) -> stub record or None; comm is in the key because a
        # stub starts as "bash -c 'exec stub ...'" and keeps pid and create time across exec.
        self._kinds: dict[tuple[int, float, str], StubProcess | None] = {}
        self._stubs: dict[tuple[int, float], StubProcess] = {}
        self._regions: set[str] = set()
        self._foreign: set[str] = set()
        self._pending_cleanup: dict[int, float] = {}
        # The supervisor may observe() from an interval thread while it samples a quiet point.
        self._lock = threading.RLock()

    @property
    def stubs_seen(self) -> list[StubProcess]:
        """Every stub of this run seen so far, dead or alive."""
        return list(self._stubs.values())

    def died_holding_regions(self) -> list[StubProcess]:
        """Stubs of this run that are gone while a region their command line names is still
        there: they died (a crash, os._exit), for a stub's unload removes its region."""
        with self._lock:
            present = {e.name for e in self._region_entries()}
            return [
                s
                for s in self._stubs.values()
                if present.intersection(s.region_names) and not stub_alive(s)
            ]

    @property
    def regions_attributed(self) -> set[str]:
        """Names of every region attributed to this run so far, existing or not."""
        return set(self._regions)

    def sample(self) -> ProcessSample:
        """Measure the worker and its tree now. Raises WorkerGoneError when it has ended."""
        with self._lock:
            return self._sample()

    def _sample(self) -> ProcessSample:
        started = time.perf_counter()
        worker = self._worker
        try:
            with worker.oneshot():
                if not self._worker_running():
                    raise psutil.NoSuchProcess(self.pid)
                try:
                    full = worker.memory_full_info()
                    uss, pss = full.uss, full.pss
                except psutil.AccessDenied:
                    full = worker.memory_info()
                    uss = pss = None
                fds = worker.num_fds()
                threads = worker.num_threads()
        except _GONE as exc:
            raise WorkerGoneError(f"worker process {self.pid} has ended") from exc
        children, children_rss, live_stubs = self._walk_tree()
        shm_regions, shm_bytes = self._measure_regions(live_stubs)
        return ProcessSample(
            rss_bytes=full.rss,
            uss_bytes=uss,
            pss_bytes=pss,
            vms_bytes=full.vms,
            fds=fds,
            threads=threads,
            children=children,
            children_rss_bytes=children_rss,
            stubs_alive=len(live_stubs),
            shm_regions=shm_regions,
            shm_bytes=shm_bytes,
            sample_cost_s=time.perf_counter() - started,
        )

    def _worker_running(self) -> bool:
        """False once the worker has ended, also while it is a zombie not yet reaped."""
        try:
            return self._worker.is_running() and self._worker.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def observe(self) -> int:
        """Note new stubs (and their regions) without measuring; returns the number alive.

        Cheap enough to call every 100 ms during an iteration, so that stubs living between
        two quiet points are remembered too.
        """
        with self._lock:
            return len(self._walk_tree()[2])

    def _walk_tree(self) -> tuple[int, int, list[StubProcess]]:
        """(descendants, their summed rss, live stubs among them); remembers new stubs."""
        count = 0
        rss = 0
        live: list[StubProcess] = []
        kinds: dict[tuple[int, float, str], StubProcess | None] = {}
        for pid in descendant_pids(self.pid):
            final = True
            try:
                proc = psutil.Process(pid)
                with proc.oneshot():
                    zombie = proc.status() == psutil.STATUS_ZOMBIE
                    key = (pid, proc.create_time(), proc.name())
                    rss_bytes = 0 if zombie else proc.memory_info().rss
                    if key in self._kinds:
                        stub = self._kinds[key]
                    else:
                        stub, final = classify(proc, self.prefix)
            except _GONE:
                continue  # ended between listing and reading: normal
            except psutil.AccessDenied:
                log.debug("no access to descendant %d of worker %d", pid, self.pid)
                continue
            count += 1
            rss += rss_bytes
            if final:
                kinds[key] = stub
            if stub is not None:
                self._remember(stub)
                if not zombie:
                    live.append(stub)
        self._kinds = kinds  # forget what has ended: the cache stays as small as the tree
        return count, rss, live

    def _remember(self, stub: StubProcess) -> None:
        known = self._stubs.get(stub.key)
        if known is None or (stub.region_names and not known.region_names):
            log.debug("stub %d of worker %d: regions %s", stub.pid, self.pid, stub.region_names)
            self._stubs[stub.key] = stub
        self._regions.update(stub.region_names)

    def _measure_regions(self, live_stubs: Sequence[StubProcess]) -> tuple[int, int]:
        """(count, total bytes) of this run's region files present in shm_dir now."""
        count = 0
        size = 0
        unknown: list[os.DirEntry[str]] = []
        for entry in self._region_entries():
            if entry.name in self._regions:
                try:
                    size += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue
                count += 1
            elif entry.name not in self._foreign:
                unknown.append(entry)
        if unknown:
            held = set()
            for pid in [self.pid, *(stub.pid for stub in live_stubs)]:
                held |= regions_held_by(pid, self.prefix)
            self._regions |= held
            now = time.time()
            for entry in unknown:
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if entry.name in held:
                    count += 1
                    size += stat.st_size
                elif now - stat.st_ctime > _FOREIGN_AFTER_S:
                    self._foreign.add(entry.name)
        return count, size

    def _region_entries(self) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(self.shm_dir) as entries:
                return [e for e in entries if e.name.startswith(self.prefix)]
        except FileNotFoundError:
            return []

    def _is_ours(self, stub: StubProcess, tree: set[int]) -> bool:
        """Whether ``stub`` belongs to this run; pid reuse cannot make a stranger ours."""
        if stub.key in self._stubs or stub.pid in tree:
            return True
        if self._regions.intersection(stub.region_names):
            return True
        # Started by our worker (its argv says so) after the worker started: a later process
        # with the worker's pid would have had to be created after the worker ended.
        return stub.parent_pid_arg == self.pid and stub.create_time_s >= self._worker_create_time_s

    def leftovers(self) -> Leftovers:
        """This run's stubs still alive (reparented ones too) and region files still present.

        Meant for after the worker has ended; while it runs, its live stubs are reported too.
        Call it promptly: a stub never sampled is recognised by the worker pid in its argv,
        and stubs of a dead worker exit within seconds, leaving their regions unattributed.
        """
        with self._lock:
            return self._leftovers()

    def _leftovers(self) -> Leftovers:
        tree: set[int] = set()
        if self._worker_running():
            log.warning("leftovers() called while worker %d is still running", self.pid)
            self.observe()
            tree = set(descendant_pids(self.pid))
        stubs = [s for s in find_stub_processes(self.prefix) if self._is_ours(s, tree)]
        for stub in stubs:
            self._remember(stub)
        for stub in stubs:  # a surviving stub may hold regions that no cmdline names
            self._regions |= regions_held_by(stub.pid, self.prefix) - self._foreign
        self._pending_cleanup = {stub.pid: stub.create_time_s for stub in stubs}
        paths = sorted(str(e.path) for e in self._region_entries() if e.name in self._regions)
        return Leftovers(stub_pids=sorted(self._pending_cleanup), shm_paths=paths)

    def cleanup(self, leftovers: Leftovers, timeout_s: float = 5.0) -> Leftovers:
        """Terminate (then kill) the stubs and unlink the region files; returns what went.

        Every pid and path is checked again against what this run owns, so a pid reused since
        :meth:`leftovers` or a path that is not this run's region is left alone (and logged).
        """
        with self._lock:
            return self._cleanup(leftovers, timeout_s)

    def _cleanup(self, leftovers: Leftovers, timeout_s: float) -> Leftovers:
        procs = []
        for pid in leftovers.stub_pids:
            proc = self._own_stub_process(pid)
            if proc is not None:
                procs.append(proc)
        removed_pids = self._terminate(procs, timeout_s)
        removed_paths = []
        for path in leftovers.shm_paths:
            candidate = Path(path)
            if candidate.parent != self.shm_dir or candidate.name not in self._regions:
                log.warning("not removing %s: not a shm region of worker %d", path, self.pid)
                continue
            try:
                candidate.unlink()
            except FileNotFoundError:
                continue
            removed_paths.append(path)
        if removed_pids or removed_paths:
            log.info(
                "removed %d stubs and %d shm regions of worker %d",
                len(removed_pids),
                len(removed_paths),
                self.pid,
            )
        return Leftovers(stub_pids=sorted(removed_pids), shm_paths=removed_paths)

    def _own_stub_process(self, pid: int) -> psutil.Process | None:
        try:
            proc = psutil.Process(pid)
            stub = read_stub(proc, self.prefix)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        expected = self._pending_cleanup.get(pid)
        if stub is None or not (stub.create_time_s == expected or self._is_ours(stub, set())):
            log.warning("not killing pid %d: not a stub of worker %d", pid, self.pid)
            return None
        return proc

    @staticmethod
    def _terminate(procs: list[psutil.Process], timeout_s: float) -> list[int]:
        """SIGTERM, wait, SIGKILL, wait; returns the pids that are gone afterwards."""
        signalled = []
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)  # psutil refuses if the pid was reused
            except psutil.NoSuchProcess:
                continue
            signalled.append(proc)
        alive = wait_ended(signalled, timeout_s, reap=True)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        still = wait_ended(alive, timeout_s, reap=True)
        for proc in still:
            log.warning("stub %d survived SIGKILL for %.1f s", proc.pid, timeout_s)
        return [p.pid for p in signalled if p not in still]


def measure_sample_cost(sampler: ProcessTreeSampler, n: int) -> list[float]:
    """Seconds each of ``n`` consecutive samples took (wall clock), for a benchmark."""
    costs = []
    for _ in range(n):
        started = time.perf_counter()
        sampler.sample()
        costs.append(time.perf_counter() - started)
    return costs
