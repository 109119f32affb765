"""A tritonserver someone else started (a container, a service), soaked through its url.

soak never starts, signals or stops it: `new_server` hands out a client bound to it, `stop`
closes that client only, and the supervisor samples the process the profile names (`pid`,
with its stubs). The server's repository is its own, so soak loads only the models the
profile names (explicit model control), and the models that were ready when soak attached
are ready again when it leaves.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import psutil

from soak.errors import EnvironmentProblem, ProfileError, ServerError
from soak.sampling.procfs import descendant_pids
from soak.target.interface import MemoryType, ServerSpec, TargetInfo
from soak.target.remote import ProcessServer, refuse_device_memory

if TYPE_CHECKING:
    from soak.tritonserver.client import RemoteServer
    from soak.workload.inject import Injection

log = logging.getLogger(__name__)

_WATCH_EVERY_S = 0.2
_STUBS_EVERY = 2  # polls between two looks at its stubs (~1.4 ms each at 100 threads)
_STUB_GRACE_S = 2.0


@dataclass(frozen=True)
class AttachedProcess:
    """The attached server's process as ProcessServer sees one: a pid, and whether it runs
    (the same process: its create time is checked, so a reused pid is not it)."""

    pid: int
    create_time_s: float

    @property
    def running(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            return (
                proc.create_time() == self.create_time_s and proc.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False

    def stubs(self) -> list[psutil.Process]:
        """Its descendants now (the backend stubs); empty once it has ended."""
        found = []
        for pid in descendant_pids(self.pid):
            try:
                found.append(psutil.Process(pid))
            except psutil.Error:
                pass
        return found


def outliving(stubs: Sequence[psutil.Process], wait_s: float = _STUB_GRACE_S) -> str:
    """What to add to the line saying the server ended: its stubs still running `wait_s`
    after it (a python backend stub checks its parent every 0.3 s and should be gone). They
    are not soak's to end."""
    _, alive = psutil.wait_procs(list(stubs), timeout=wait_s)
    if not alive:
        return ""
    pids = ", ".join(str(p.pid) for p in sorted(alive, key=lambda p: p.pid))
    return (
        f"; {len(alive)} of its stub process(es) still ran {wait_s:g} s after it (pid {pids}): "
        "they hold its connections and shared memory"
    )


def listening_ports(pid: int) -> set[int]:
    """The TCP ports `pid` listens on (empty when it cannot be read)."""
    try:
        proc = psutil.Process(pid)
        read = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6
        conns = read("tcp")
    except psutil.Error:
        return set()
    return {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN and c.laddr}


def check_attached(
    url: str,
    pid: int,
    protocol: str,
    url_label: str = "tritonserver.url",
    pid_label: str = "tritonserver.pid",
) -> str:
    """Before any run: `pid` runs and is the process listening on `url`'s port. Returns the
    client's address; a ProfileError naming the key (or flag) otherwise."""
    from soak.profile.targets import attach_address

    address = attach_address(url, protocol, url_label)
    port = int(address.rsplit(":", 1)[1])
    try:
        proc = psutil.Process(pid)
        name = proc.name()
        zombie = proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        raise ProfileError(f"{pid_label} = {pid}: no such process is running") from None
    except psutil.AccessDenied:
        raise ProfileError(f"{pid_label} = {pid}: not allowed to read that process") from None
    if zombie:
        raise ProfileError(f"{pid_label} = {pid}: that process has ended (a zombie)")
    ports = listening_ports(pid)
    if port not in ports:
        listens = ", ".join(map(str, sorted(ports))) or "no port"
        raise ProfileError(
            f"{pid_label} = {pid} ({name}) is not the process listening on {url} "
            f"(it listens on {listens})"
        )
    return address


#: What Triton answers a load or unload when its model control mode is not explicit.
_NOT_EXPLICIT = "explicit model load / unload is not allowed"


class AttachedServer(ProcessServer):
    """A client of the attached server: a load or unload it refuses for want of explicit
    model control says so, naming the flag (Triton's own words mention polling only)."""

    def load_model(self, name: str) -> None:
        self._explicit(self.client.load_model, name)

    def unload_model(self, name: str) -> None:
        self._explicit(self.client.unload_model, name)

    def request_counters(self) -> None:
        """Not read: soak does not know where the attached server serves /metrics (and its
        models are the user's, which the counter check does not judge)."""
        return None

    def _explicit(self, call: Callable[[str], None], name: str) -> None:
        try:
            self._on_thread(call, name)
        except ServerError as exc:
            if _NOT_EXPLICIT not in exc.message:
                raise
            raise ServerError(
                exc.code,
                f"{exc.message}: the attached tritonserver must run with "
                "--model-control-mode=explicit for soak to load and unload its models",
            ) from None


@dataclass
class AttachedServerTarget:
    """The server at `url` (process `pid`): one, long-lived, never started or stopped here."""

    name: ClassVar[str] = "tritonserver"
    writes_repositories: ClassVar[bool] = False  # its repository is its own
    #: heaptrack, which must start the process it traces: --attribute is refused for a server
    #: someone else started (soak.runner.session.check_attribution).
    attribution: ClassVar[str] = "heaptrack"
    url: str = ""
    pid: int = 0
    protocol: str = "http"
    streaming: bool = False
    shared_memory: str = "none"
    _process: AttachedProcess | None = None
    _address: str = ""
    _ready_before: list[str] = field(default_factory=list)
    _servers: list[ProcessServer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def prepare(
        self,
        workdir: Path,
        memory: Sequence[MemoryType] = (),
        device: int = 0,
        stub: Path | None = None,
    ) -> TargetInfo:
        refuse_device_memory(memory)
        try:
            self._address = check_attached(self.url, self.pid, self.protocol)
            proc = psutil.Process(self.pid)
            self._process = AttachedProcess(self.pid, proc.create_time())
        except (ProfileError, psutil.Error) as exc:
            raise EnvironmentProblem(f"attach: {exc}") from None
        client = self._client()
        try:
            self._ready_before = [
                m["name"] for m in client.model_index(ready_only=True) if m.get("name")
            ]
        except ServerError as exc:
            raise EnvironmentProblem(f"attach: {self.url} answers no model index: {exc}") from None
        finally:
            client.close()
        return TargetInfo(
            Path(workdir),
            f"tritonserver {self.pid} at {self.url} (attached)",
            "attached",
            "",
        )

    def _client(self) -> RemoteServer:
        from soak.tritonserver.client import RemoteServer

        return RemoteServer(self._address, self.protocol, self.streaming, self.shared_memory)

    def new_server(self, spec: ServerSpec) -> AttachedServer:
        """A client of the attached server (the spec's repositories are not its: ignored)."""
        if self._process is None:
            raise EnvironmentProblem("attach: prepare() was not called")
        if not self._process.running:
            raise EnvironmentProblem(f"attached tritonserver {self.pid} is not running")
        server = AttachedServer(self._process, self._client, self)  # type: ignore[arg-type]
        with self._lock:
            self._servers.append(server)
        return server

    def _stopped(self, server: ProcessServer) -> None:
        """ProcessServer's stop: the client is closed; the server is not ours to stop."""
        with self._lock:
            if server in self._servers:
                self._servers.remove(server)

    def inject_server_leaks(self, injection: Injection, device: int = 0) -> None:
        if injection.native_bytes_per_server or injection.gpu_bytes_per_server:
            raise ProfileError(
                "inject native_bytes_per_server / gpu_bytes_per_server are made inside an "
                "in-process server; an attached tritonserver cannot take them"
            )

    def server_pids(self) -> list[int]:
        process = self._process
        return [process.pid] if process is not None and process.running else []

    def client_pid(self) -> int:
        return os.getpid()

    def phase_floors(self) -> dict[str, float]:
        return {}

    def take_leftovers(self) -> list[tuple[str, str]]:
        return []

    def watch_crashes(self, report: Callable[[str], None]) -> None:
        """`report` once when the attached process ends (soak never ends it), naming the
        stubs that outlive it."""
        process = self._process
        if process is None:
            return

        def watch() -> None:
            stubs: list[psutil.Process] = []
            for polls in itertools.count():
                if not process.running:
                    break
                if polls % _STUBS_EVERY == 0:
                    stubs = process.stubs() or stubs
                threading.Event().wait(_WATCH_EVERY_S)
            line = f"attached tritonserver {process.pid} ({self.url}) ended while soak ran"
            report(line + outliving(stubs))

        threading.Thread(target=watch, name="tritonserver-attach-watch", daemon=True).start()

    def stop_all(self) -> None:
        """Close the clients still open (their shared-memory regions unregistered), then load
        again the models that were ready when soak attached: the server is left as found."""
        with self._lock:
            servers, self._servers = list(self._servers), []
        gone = self._process is None or not self._process.running
        for server in servers:
            try:
                if gone:  # nothing to unregister from, and its connections may never answer
                    server.abandon()
                else:
                    server.close()
            except Exception as exc:  # noqa: BLE001 - the others must still go
                log.warning("closing the client of %s: %s", self.url, exc)
        if gone or not self._ready_before:
            return
        client = self._client()
        try:
            ready = {m["name"] for m in client.model_index(ready_only=True)}
            for name in (m for m in self._ready_before if m not in ready):
                log.info("loading %s again on %s (it was ready when soak attached)", name, self.url)
                client.load_model(name)
        except ServerError as exc:
            log.warning("could not restore the models of %s: %s", self.url, exc)
        finally:
            client.close()
