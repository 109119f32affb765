"""One tritonserver process started by soak: loopback ports soak picks, its log in a file,
ready within a timeout, and stopped so that nothing of it outlives it (server, stubs, regions).

Stubs and their /dev/shm regions are tracked with soak.sampling.process's ProcessTreeSampler,
the same rules that find what a dead in-process worker left behind.
"""

from __future__ import annotations

import logging
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from soak.errors import EnvironmentProblem, ProfileError, SoakError
from soak.sampling.process import Leftovers, ProcessTreeSampler
from soak.sampling.procfs import descendant_pids
from soak.sampling.waiting import wait_ended
from soak.tritonserver.executable import ServerExecutable

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
PORT_ATTEMPTS = 5
#: Least ready timeout of a server under heaptrack: 4-8 s on an idle 2-core machine, while
#: heaptrack_interpret symbolises every library it loads, and far longer under load.
TRACED_READY_S = 90.0
_OBSERVE_EVERY_S = 0.2  # stubs that live between two looks are still remembered
_PORT_TAKEN = re.compile(r"already in use|address in use|failed to bind", re.IGNORECASE)
_BAD_OPTION = re.compile(r"(unrecognized option|invalid argument|option) '?(--[\w-]+)", re.I)


class ServerStartError(SoakError):
    """The tritonserver process exited or never became ready; the message has its log tail."""


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int


@dataclass(frozen=True)
class ServerEnd:
    """How a server process ended. `crashed`: it died of a signal soak did not send, or
    exited by itself before soak stopped it; `killed`: SIGTERM was not enough."""

    returncode: int
    stopped_by_soak: bool
    killed: bool
    leftovers: Leftovers  # stubs and regions it left, which stop() removed
    log_tail: str = ""
    ports_bound: tuple[int, ...] = ()  # its ports still listening once it and its stubs ended

    def leftover_events(self, pid: int) -> list[tuple[str, str]]:
        """(event kind, message) of each thing it left: the kinds the supervisor uses for
        what a dead worker leaves (leftover_stub, leftover_shm), and leftover_port."""
        out = [
            ("leftover_stub", f"stub process {s} of tritonserver {pid} outlived it; killed")
            for s in self.leftovers.stub_pids
        ]
        out += [
            ("leftover_shm", f"shared-memory region {p} of tritonserver {pid} outlived it; removed")
            for p in self.leftovers.shm_paths
        ]
        out += [
            ("leftover_port", f"port 127.0.0.1:{port} of tritonserver {pid} still listening")
            for port in self.ports_bound
        ]
        return out

    @property
    def signal(self) -> str | None:
        if self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"

    @property
    def crashed(self) -> bool:
        sent = {signal.SIGTERM.name, signal.SIGKILL.name} if self.stopped_by_soak else set()
        if self.signal is not None:
            return self.signal not in sent
        return not self.stopped_by_soak

    @property
    def clean(self) -> bool:
        return self.stopped_by_soak and not self.killed and self.returncode == 0

    def describe(self) -> str:
        how = f"killed by {self.signal}" if self.signal else f"exit code {self.returncode}"
        if self.crashed:
            return f"crashed ({how})"
        return "stopped cleanly" if self.clean else f"stopped ({how})"


def free_ports(count: int = 3) -> list[int]:
    """`count` distinct loopback ports free now (held together, so the kernel gives distinct
    ones); another program may still take one before tritonserver binds it."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class ServerProcess:
    """A tritonserver process in explicit model-control mode; `start()` returns once it is
    live and ready, `stop()` ends it and everything it started. A context manager."""

    executable: ServerExecutable
    repositories: Sequence[Path]
    log_path: Path
    args: Sequence[str] = ()
    ready_timeout_s: float = 30.0
    exit_timeout_s: int = 30
    ports: Ports | None = None
    attempts: list[str] = field(default_factory=list)  # why earlier starts were retried
    #: Trace the process under heaptrack into this capture (soak.sampling.heaptrack): the
    #: same pid, ready in seconds rather than 0.1 s, so `ready_timeout_s` is raised to
    #: TRACED_READY_S at least.
    heaptrack_capture: Path | None = None

    def __post_init__(self) -> None:
        self._popen: subprocess.Popen | None = None
        self._sampler: ProcessTreeSampler | None = None
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.end: ServerEnd | None = None
        if self.heaptrack_capture is not None:
            self.ready_timeout_s = max(self.ready_timeout_s, TRACED_READY_S)

    # -- start ------------------------------------------------------------------------------
    def command(self, ports: Ports) -> list[str]:
        """The argv of one launch; under heaptrack when `heaptrack_capture` is set."""
        argv = self._server_argv(ports)
        if self.heaptrack_capture is None:
            return argv
        from soak.sampling import heaptrack

        return heaptrack.wrap(argv, self.heaptrack_capture)

    def _server_argv(self, ports: Ports) -> list[str]:
        repos = [f"--model-repository={r}" for r in self.repositories]
        return [
            str(self.executable.path),
            "--model-control-mode=explicit",
            *repos,
            f"--backend-directory={self.executable.backends_dir}",
            f"--http-address={LOOPBACK}",
            f"--grpc-address={LOOPBACK}",
            f"--metrics-address={LOOPBACK}",
            f"--http-port={ports.http}",
            f"--grpc-port={ports.grpc}",
            f"--metrics-port={ports.metrics}",
            "--model-load-retry-count=0",  # see soak.triton.server: retried forever otherwise
            f"--exit-timeout-secs={self.exit_timeout_s}",
            *self.args,
        ]

    def start(self) -> ServerProcess:
        """Start and wait until ready; a port taken before tritonserver bound it is retried
        with new ports (up to PORT_ATTEMPTS), any other early exit is an error."""
        for attempt in range(PORT_ATTEMPTS):
            ports = Ports(*free_ports(3))
            self._launch(ports)
            outcome = self._wait_ready()
            if outcome is None:
                return self
            text = self.log_text()
            if not _PORT_TAKEN.search(text):
                self._reap_failed()
                raise self._start_error(outcome, text)
            self.attempts.append(f"attempt {attempt + 1}: ports {ports} taken")
            log.info("tritonserver ports %s were taken; retrying with new ones", ports)
            self._reap_failed()
        raise EnvironmentProblem(
            f"tritonserver could not bind loopback ports in {PORT_ATTEMPTS} attempts "
            f"(log: {self.log_path})"
        )

    def _launch(self, ports: Ports) -> None:
        self.ports = ports
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as logfile:
            self._popen = subprocess.Popen(
                self.command(ports),
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                env=self.executable.env,
                start_new_session=True,  # a terminal's Ctrl-C is soak's to pass on, not Triton's
            )
        self._sampler = ProcessTreeSampler(self._popen.pid)
        self._watch_stop = threading.Event()
        self._watcher = threading.Thread(
            target=self._watch, name=f"tritonserver-{self._popen.pid}", daemon=True
        )
        self._watcher.start()

    def _watch(self) -> None:
        while not self._watch_stop.wait(_OBSERVE_EVERY_S):
            self.observe()

    def observe(self) -> None:
        """Remember the stubs now alive and the regions their command lines name."""
        if self._sampler is not None and self.running:
            self._sampler.observe()

    def _wait_ready(self) -> str | None:
        """None once ready; otherwise why not (an exit status, or the timeout)."""
        assert self._popen is not None and self.ports is not None
        url = f"http://{LOOPBACK}:{self.ports.http}/v2/health/ready"
        deadline = time.monotonic() + self.ready_timeout_s
        pause = 0.01
        while True:
            code = self._popen.poll()
            if code is not None:
                return f"exited with {_status(code)}"
            try:
                with urllib.request.urlopen(url, timeout=1.0) as reply:
                    if reply.status == 200:
                        return None
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                return f"not ready within {self.ready_timeout_s:g} s"
            time.sleep(pause)
            pause = min(0.1, pause * 1.5)

    def _start_error(self, outcome: str, text: str) -> SoakError:
        bad = _BAD_OPTION.search(text)
        if bad is not None and bad.group(2) in " ".join(self.args):
            line = next(ln for ln in text.splitlines() if bad.group(2) in ln)
            return ProfileError(
                f"[tritonserver] args: {bad.group(2)} refused by tritonserver: "
                f"{line.split(': ', 1)[-1].strip()}"
            )
        return ServerStartError(f"tritonserver {outcome}; log tail: {tail(text, 5)}")

    def _reap_failed(self) -> None:
        """End a start that did not come up (it may still be running: a timeout)."""
        self.stop(grace_s=5.0)
        self.end = None

    # -- while running ----------------------------------------------------------------------
    @property
    def pid(self) -> int:
        if self._popen is None:
            raise SoakError("tritonserver has not been started")
        return self._popen.pid

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def http_url(self) -> str:
        assert self.ports is not None
        return f"{LOOPBACK}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        assert self.ports is not None
        return f"{LOOPBACK}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        assert self.ports is not None
        return f"http://{LOOPBACK}:{self.ports.metrics}/metrics"

    def url(self, protocol: str) -> str:
        return self.grpc_url if protocol == "grpc" else self.http_url

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- stop -------------------------------------------------------------------------------
    def stop(self, grace_s: float | None = None) -> ServerEnd:
        """SIGTERM, wait up to the server's exit timeout (+5 s), then SIGKILL the process and
        its descendants; remove the stubs and regions it left. Idempotent."""
        if self.end is not None:
            return self.end
        if self._popen is None:
            raise SoakError("tritonserver has not been started")
        popen, sampler = self._popen, self._sampler
        assert sampler is not None
        grace = self.exit_timeout_s + 5.0 if grace_s is None else grace_s
        ended_by_itself = popen.poll() is not None
        self.observe()
        tree = _processes(descendant_pids(popen.pid)) if not ended_by_itself else []
        killed = False
        if not ended_by_itself:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver %d ignored SIGTERM for %.0f s: SIGKILL", popen.pid, grace)
                killed = True
                popen.kill()
                popen.wait()
                for proc in tree:
                    try:
                        proc.kill()  # psutil refuses a pid that names another process now
                    except psutil.NoSuchProcess:
                        pass
                wait_ended(tree, 5.0, reap=True)
        self._watch_stop.set()
        if self._watcher is not None:
            self._watcher.join()
        left = sampler.leftovers()
        if not left.empty:
            log.info("tritonserver %d left %s; removing them", popen.pid, left.as_dict())
            sampler.cleanup(left)
        assert popen.returncode is not None
        ports = (self.ports.http, self.ports.grpc, self.ports.metrics) if self.ports else ()
        self.end = ServerEnd(
            popen.returncode,
            not ended_by_itself,
            killed,
            left,
            tail(self.log_text(), 20),
            tuple(sorted(listening(ports))),
        )
        return self.end

    def __enter__(self) -> ServerProcess:
        return self.start() if self._popen is None else self

    def __exit__(self, *exc: object) -> None:
        if self._popen is not None:
            self.stop()


_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column


def listening(
    ports: Sequence[int], tables: Sequence[str] = ("/proc/net/tcp", "/proc/net/tcp6")
) -> set[int]:
    """Those of `ports` some socket on this machine listens on: one read of the kernel's TCP
    tables (psutil.net_connections would read every process's fds)."""
    wanted, found = set(ports), set()
    if not wanted:
        return found
    for table in tables:
        try:
            with open(table, encoding="ascii") as handle:
                next(handle, None)
                for line in handle:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == _LISTEN:
                        port = int(fields[1].rsplit(":", 1)[1], 16)
                        if port in wanted:
                            found.add(port)
        except OSError:
            continue
    return found


def _processes(pids: list[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        try:
            found.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    return found


def _status(code: int) -> str:
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def tail(text: str, lines: int) -> str:
    """The last `lines` lines of a log, joined with ' | ' (one line for events); the option
    table tritonserver prints at start is left out."""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip() and ln[0] not in "|+"]
    return " | ".join(kept[-lines:])


__all__ = [
    "Ports",
    "ServerEnd",
    "ServerProcess",
    "ServerStartError",
    "free_ports",
    "listening",
    "tail",
]
