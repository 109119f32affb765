"""Python backend stubs recognised from /proc: by name, executable or argv, with the shared-memory
regions and the launching pid their command line names (`triton_python_backend_stub
<model.py> <region> <size> <growth> <parent pid> ...`)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psutil

from soak.triton.facts import REGION_PREFIX, STUB_EXECUTABLE

_COMM_LEN = 15  # the kernel truncates a process name (comm) to 15 characters


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


def classify(proc: psutil.Process, prefix: str) -> tuple[StubProcess | None, bool]:
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


def stub_alive(stub: StubProcess) -> bool:
    try:
        proc = psutil.Process(stub.pid)
        return proc.create_time() == stub.create_time_s and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def read_stub(proc: psutil.Process, prefix: str) -> StubProcess | None:
    """The stub record of ``proc``, or None when it is no stub. Raises NoSuchProcess if gone."""
    return classify(proc, prefix)[0]


def is_stub_process(proc: psutil.Process) -> bool:
    """True when ``proc`` is a python backend stub (False when it has gone)."""
    try:
        return read_stub(proc, REGION_PREFIX) is not None
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
            stub = read_stub(proc, prefix)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if stub is not None:
            stubs.append(stub)
    return stubs
