"""Sample the worker's process tree from outside: memory, fds, threads, descendants, live python
backend stubs and this run's shared-memory regions; find and remove what a dead worker left.
It must never signal a process or unlink a file that it cannot attribute to this run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from soak.errors import SoakError
from soak.triton.facts import REGION_PREFIX, STUB_EXECUTABLE

log = logging.getLogger(__name__)

_COMM_LEN = 15  # the kernel truncates a process name (comm) to 15 characters
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
class StubProcess:
    """A python backend stub seen on the machine, with what its command line says."""

    pid: int
    create_time_s: float
    ppid: int
    parent_pid_arg: int | None  # the pid of the process that launched it, from its argv
    region_names: tuple[str, ...]
    model: str = ""  # the model folder its model.py is in (argv: <repo>/<model>/<version>/...)

    @property
    def key(self) -> tuple[int, float]:
        """(pid, create time): identifies a process even after its pid is reused."""
        return (self.pid, self.create_time_s)


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


def region_names_in(args: Iterable[str], prefix: str = REGION_PREFIX) -> tuple[str, ...]:
    """Region names (no slash, no /dev/shm) found anywhere in ``args``.

    The name appears as ``/triton_..._<uuid>``, ``triton_..._<uuid>`` or a full
    ``/dev/shm/...`` path depending on the Triton version and on where it is read from (argv, fd
    link, maps line), so search each string rather than parse a position.
    """
    pattern = _region_pattern(prefix)
    found: dict[str, None] = {}
    for arg in args:
        for match in pattern.finditer(arg):
            found[match.group(0)] = None
    return tuple(found)


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _region_pattern(prefix: str) -> re.Pattern[str]:
    pattern = _PATTERNS.get(prefix)
    if pattern is None:
        pattern = re.compile(re.escape(prefix) + r"[A-Za-z0-9_.\-]+")
        _PATTERNS[prefix] = pattern
    return pattern


def _stub_arg_index(name: str, cmdline: Sequence[str], exe: str) -> int | None:
    """Index of the stub path in ``cmdline``, -1 if a stub without one, None if no stub.

    A stub is recognised by its name, its executable's file name, or argv[0]; a stub that is a
    script run through a shebang shows the interpreter in argv[0] and the script in argv[1],
    with the script's (truncated) name as comm, which is how the tests' fake stubs look.
    """
    if cmdline and os.path.basename(cmdline[0]) == STUB_EXECUTABLE:
        return 0
    if (
        len(cmdline) > 1
        and STUB_EXECUTABLE.startswith(name[:_COMM_LEN])
        and len(name) >= _COMM_LEN
        and os.path.basename(cmdline[1]) == STUB_EXECUTABLE
    ):
        return 1
    if name == STUB_EXECUTABLE or os.path.basename(exe) == STUB_EXECUTABLE:
        return -1
    return None


def _classify(proc: psutil.Process, prefix: str) -> tuple[StubProcess | None, bool]:
    """(stub record or None, whether that answer is final). Raises NoSuchProcess if gone.

    Not final while the command line reads empty: during exec the kernel switches to the new
    image and sets its name before it has written the new argv, so a process caught then looks
    like a stub-named process without arguments, and must be classified again later.
    """
    with proc.oneshot():
        name = proc.name()
        zombie = False
        try:
            cmdline = proc.cmdline()
        except psutil.ZombieProcess:
            cmdline, zombie = [], True
        except psutil.AccessDenied:
            cmdline = []
        try:
            exe = proc.exe()
        except (psutil.AccessDenied, psutil.ZombieProcess):
            exe = ""
        final = bool(cmdline) or zombie
        index = _stub_arg_index(name, cmdline, exe)
        if index is None:
            return None, final
        create_time_s = proc.create_time()
        ppid = proc.ppid()
    parent_pid_arg = None
    if index >= 0 and len(cmdline) > index + 5 and cmdline[index + 5].isdigit():
        parent_pid_arg = int(cmdline[index + 5])
    stub = StubProcess(
        pid=proc.pid,
        create_time_s=create_time_s,
        ppid=ppid,
        parent_pid_arg=parent_pid_arg,
        region_names=region_names_in(cmdline, prefix),
        model=_model_of(cmdline[index + 1]) if index >= 0 and len(cmdline) > index + 1 else "",
    )
    return stub, final


def _model_of(model_py: str) -> str:
    parts = model_py.split("/")
    return parts[-3] if len(parts) >= 3 else ""


def _alive(stub: StubProcess) -> bool:
    try:
        proc = psutil.Process(stub.pid)
        return proc.create_time() == stub.create_time_s and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _read_stub(proc: psutil.Process, prefix: str) -> StubProcess | None:
    """The stub record of ``proc``, or None when it is no stub. Raises NoSuchProcess if gone."""
    return _classify(proc, prefix)[0]


def is_stub_process(proc: psutil.Process) -> bool:
    """True when ``proc`` is a python backend stub (False when it has gone)."""
    try:
        return _read_stub(proc, REGION_PREFIX) is not None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def find_stub_processes(prefix: str = REGION_PREFIX) -> list[StubProcess]:
    """Every python backend stub on the machine, whoever started it.

    Reads three /proc files of every process: meant for leftover detection after a run, not
    for sampling.
    """
    stubs = []
    for proc in psutil.process_iter():
        try:
            stub = _read_stub(proc, prefix)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if stub is not None:
            stubs.append(stub)
    return stubs


def descendant_pids(pid: int) -> list[int]:
    """Pids of all descendants of ``pid`` (breadth first), zombies included.

    Reads ``/proc/<pid>/task/<tid>/children`` of every thread (a stub is forked by whichever
    Triton thread loads the model, and lands in that thread's list). That costs one small read
    per thread of the tree, independent of how many processes run on the machine; psutil's
    ``children(recursive=True)`` reads the stat file of every process on the machine instead
    and is the fallback where the kernel lacks CONFIG_PROC_CHILDREN. Both took about 1.4 ms
    here for a 100-thread process among 80 processes, but a CI machine has many processes.
    """
    if not os.path.exists(f"/proc/{pid}/task/{pid}/children"):
        try:
            return [child.pid for child in psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
    found: list[int] = []
    queue = [pid]
    while queue:
        parent = queue.pop(0)
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        for tid in tids:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", "rb") as handle:
                    text = handle.read()
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue  # the thread ended between listing and reading
            for child in text.split():
                found.append(int(child))
                queue.append(int(child))
    return found


def regions_held_by(pid: int, prefix: str = REGION_PREFIX) -> set[str]:
    """Region names ``pid`` holds open (fd links) or mapped (``/proc/<pid>/maps``).

    Costs milliseconds for a Triton process with thousands of mappings, so it is called only
    when an unknown region file turns up. Empty when the process has gone.
    """
    names: set[str] = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        fds = []
    links = []
    for fd in fds:
        try:
            links.append(os.readlink(f"{fd_dir}/{fd}"))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    names.update(region_names_in(links, prefix))
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as handle:
            names.update(region_names_in([handle.read()], prefix))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return names


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
                if present.intersection(s.region_names) and not _alive(s)
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
                        stub, final = _classify(proc, self.prefix)
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
            stub = _read_stub(proc, self.prefix)
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


def wait_ended(
    procs: Sequence[psutil.Process], timeout_s: float, reap: bool = False
) -> list[psutil.Process]:
    """Those of ``procs`` still running after up to ``timeout_s``; the one way soak waits for
    processes to end.

    A zombie has ended (it holds no memory, fd or mapping): psutil.wait_procs would wait for it
    to be reaped, and a killed worker's stubs are orphans that only init reaps, 1.4 s later on
    the CI VM and never under an init that does not reap. A pid that now names another process
    has ended too. ``reap``: also reap those that are our own children, so that they do not
    stay zombies (not for a subprocess.Popen child, whose exit status Popen must read).
    """
    deadline = time.monotonic() + timeout_s
    alive = list(procs)
    while alive:
        if reap:
            _reap_own(alive)
        alive = [p for p in alive if _running(p)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    return alive


def _reap_own(procs: list[psutil.Process]) -> None:
    """Reap those that are our own children, so that they do not stay zombies."""
    for proc in procs:
        try:
            proc.wait(timeout=0)
        except (psutil.TimeoutExpired, psutil.NoSuchProcess):
            pass


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # ZombieProcess included
        return False


def measure_sample_cost(sampler: ProcessTreeSampler, n: int) -> list[float]:
    """Seconds each of ``n`` consecutive samples took (wall clock), for a benchmark."""
    costs = []
    for _ in range(n):
        started = time.perf_counter()
        sampler.sample()
        costs.append(time.perf_counter() - started)
    return costs
