"""Servers as `tritonserver` processes started by the worker, driven over HTTP or gRPC.

Each `new_server` starts one process (soak.tritonserver.process) over the spec's repositories
and returns a RemoteServer bound to it: `stop` ends the process (SIGTERM, wait, then the
tree killed and its regions removed), `delete` closes the client. The worker is then only the
client: the supervisor samples the processes `server_pids` names and the worker apart. A
process that dies by itself is reported once through `watch_crashes`.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from soak.errors import EnvironmentProblem, ProfileError
from soak.target.interface import MemoryType, ServerSpec, TargetInfo
from soak.triton.returns import TritonError

if TYPE_CHECKING:
    from soak.tritonserver.client import RemoteServer
    from soak.tritonserver.executable import ServerExecutable
    from soak.tritonserver.metrics import ModelCounters
    from soak.tritonserver.perf_load import PerfAnalyzerLoad
    from soak.tritonserver.process import ServerProcess
    from soak.workload.inject import Injection

log = logging.getLogger(__name__)

_WATCH_EVERY_S = 0.2


class ProcessServer:
    """A RemoteServer bound to the process it talks to: the lifecycle's stop ends the process
    (SIGTERM and wait), delete closes the client. Every other call goes to the client.

    The client lives on one thread of its own for the server's life: the workload calls from
    new threads every iteration, and tritonclient's HTTP client (gevent) fails once the
    thread that made it has exited ("cannot switch to a different thread"); a client per
    calling thread would also keep one more connection per iteration (measured: +2 fds per
    server and iteration)."""

    def __init__(
        self,
        process: ServerProcess,
        make_client: Callable[[], RemoteServer],
        target: Any,
        load: PerfAnalyzerLoad | None = None,
    ) -> None:
        self.process = process
        self.load = load  # perf_analyzer bursts instead of the client's
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"tritonserver-{process.pid}")
        self.client = self._thread.submit(make_client).result()
        self._target = target
        self.stopping = False  # soak is ending it: its exit is no crash
        self.log_file: Path | None = None
        self.log_appended = False

    def _on_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._thread.submit(fn, *args, **kwargs).result()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr
        return functools.partial(self._on_thread, attr)

    def is_live(self) -> bool:
        return self._on_thread(self.client.is_live)

    def is_ready(self) -> bool:
        return self._on_thread(self.client.is_ready)

    def infer_many(
        self,
        model: str,
        inputs: Any,
        outputs: list[str],
        on_result: Callable[..., bool],
        concurrency: int = 1,
        memory_type: MemoryType = MemoryType.SYSTEM,
        timeout_s: float = 30.0,
        device: int = 0,
        datatypes: dict[str, str] | None = None,
        keep: Callable[[int], bool] | None = None,
        expected: Callable[[int], Any] | None = None,
    ) -> int:
        """The load generator's burst: perf_analyzer's run when the profile chose it, else the
        client's on its thread; `concurrency` requests in flight either way."""
        if self.load is not None:
            return self.load.infer_many(
                model, inputs, outputs, on_result, concurrency, timeout_s, expected
            )
        return self._on_thread(
            self.client.infer_many, model, inputs, outputs, on_result, concurrency,
            memory_type, timeout_s, device, datatypes, keep,
        )  # fmt: skip

    def request_counters(self) -> dict[str, ModelCounters]:
        """The process's /metrics per model; TritonError when it does not answer."""
        from soak.tritonserver import metrics

        try:
            return metrics.read(self.process.metrics_url)
        except OSError as exc:
            raise TritonError("Unavailable", f"{self.process.metrics_url}: {exc}") from None

    def stop(self) -> None:
        """Close the client (its regions unregistered while the server still listens), then
        end the process: an HTTP keep-alive connection left open holds tritonserver's exit
        for its whole exit timeout (measured: 30 s over HTTP, 0.6 s once closed)."""
        try:
            self._on_thread(self.client.close)
        finally:
            self._target._stopped(self)

    def abandon(self) -> None:
        """The process is gone: its client's regions are unlinked from this thread (the
        client's own may still wait in a call to it) and nothing more is sent to it."""
        try:
            self.client.abandon()
        finally:
            self._thread.shutdown(wait=False)
            self._target._stopped(self)

    def delete(self) -> None:
        """The client's thread ends; the client and the process are already gone. An HTTP
        client's thread also had gevent's hub (tritonclient.http runs on gevent), whose loop
        holds an epoll fd and an eventfd until the hub is destroyed on its own thread
        (measured: +2 client fds per server lifecycle otherwise)."""
        try:
            if not self.client.grpc:
                self._thread.submit(_destroy_gevent_hub).result()
        finally:
            self._thread.shutdown(wait=False)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self.delete()

    def __enter__(self) -> ProcessServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def refuse_device_memory(memory: Sequence[MemoryType]) -> None:
    """A tritonserver target's buffers travel over HTTP or gRPC (or system shared memory):
    pinned and GPU buffers are the in-process target's."""
    refused = [m.value for m in memory if m != MemoryType.SYSTEM]
    if refused:
        raise EnvironmentProblem(
            f"target tritonserver: memory {', '.join(refused)} is in-process only"
        )


@dataclass
class TritonServerTarget:
    """`triton_home` picks the install (None: the C API's search order, so both targets run
    the same core); `args` are the profile's extra tritonserver flags."""

    name: ClassVar[str] = "tritonserver"
    writes_repositories: ClassVar[bool] = True
    #: Allocation sites come from each server process, traced by heaptrack from its start.
    attribution: ClassVar[str] = "heaptrack"
    triton_home: str | None = None
    protocol: str = "http"
    streaming: bool = False
    shared_memory: str = "none"
    concurrency: int = 1
    load_generator: str = "soak"  # or "perf_analyzer"
    args: Sequence[str] = ()
    ready_timeout_s: float = 30.0
    heaptrack: bool = False  # every server runs under heaptrack (soak run --attribute)
    executable: ServerExecutable | None = None
    _servers: list[ProcessServer] = field(default_factory=list)
    _leftovers: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _count: int = 0

    def prepare(
        self,
        workdir: Path,
        memory: Sequence[MemoryType] = (),
        device: int = 0,
        stub: Path | None = None,
    ) -> TargetInfo:
        from soak.tritonserver import executable

        refuse_device_memory(memory)
        self.executable = executable.prepare(workdir, self.triton_home, stub=stub)
        self._workdir = Path(workdir)
        self._perf_env: dict[str, str] | None = None
        if self.load_generator == "perf_analyzer":
            executable.find_perf_analyzer()  # EnvironmentProblem naming the package
            self._perf_env = executable.perf_analyzer_environment(
                self.executable.install, self._workdir / "perf_analyzer_libs"
            )
        if self.heaptrack:
            from soak.sampling import heaptrack

            if (problem := heaptrack.unavailable()) is not None:
                raise EnvironmentProblem(problem)
        install = self.executable.install
        return TargetInfo(
            self.executable.backends_dir, str(self.executable.path), install.source, ""
        )

    def new_server(self, spec: ServerSpec) -> ProcessServer:
        from soak.tritonserver import executable
        from soak.tritonserver.client import RemoteServer
        from soak.tritonserver.process import ServerProcess

        if self.executable is None:
            raise EnvironmentProblem("target tritonserver: prepare() was not called")
        with self._lock:
            self._count += 1
            number = self._count
        logdir = spec.log_file.parent if spec.log_file else self._workdir
        process = ServerProcess(
            self.executable,
            spec.repositories,
            logdir / f"tritonserver-{spec.server_id}-{number}.log",
            args=(*executable.feature_args(self.executable, spec.features), *self.args),
            ready_timeout_s=self.ready_timeout_s,
            exit_timeout_s=spec.exit_timeout_s,
            heaptrack_capture=self._capture(number),
        )
        process.start()
        url = process.url(self.protocol)
        try:
            server = ProcessServer(
                process,
                lambda: RemoteServer(
                    url,
                    self.protocol,
                    self.streaming,
                    self.shared_memory,
                    concurrency=self.concurrency,
                ),
                self,
                self._perf_load(url),
            )
        except Exception:
            process.stop()
            raise
        server.log_file = spec.log_file
        with self._lock:
            self._servers.append(server)
        return server

    def _perf_load(self, url: str) -> PerfAnalyzerLoad | None:
        from soak.tritonserver.perf_load import PerfAnalyzerLoad

        if self._perf_env is None:
            return None
        return PerfAnalyzerLoad(
            url, self.protocol, self.streaming, self.shared_memory, self._perf_env, self._workdir
        )

    def _capture(self, number: int) -> Path | None:
        """Where server `number`'s heaptrack capture goes (the supervisor reads every one)."""
        if not self.heaptrack:
            return None
        from soak.sampling import heaptrack

        return self._workdir / heaptrack.CAPTURE_DIR / f"tritonserver-{number}"

    def phase_floors(self) -> dict[str, float]:
        """A server under heaptrack starts in seconds, not 0.1 s: `server_new` (which waits
        until it is ready) gets as long as its ready timeout."""
        if not self.heaptrack:
            return {}
        from soak.tritonserver.process import TRACED_READY_S

        return {"server_new": TRACED_READY_S + 10.0}

    def _stopped(self, server: ProcessServer) -> None:
        """End the process; what its stop had to remove is noted, its log joins the run's."""
        with self._lock:
            server.stopping = True
        end = server.process.stop()
        with self._lock:
            if server in self._servers:
                self._servers.remove(server)
        self._leftovers += end.leftover_events(server.process.pid)
        _append_log(server)

    def inject_server_leaks(self, injection: Injection, device: int = 0) -> None:
        if injection.native_bytes_per_server or injection.gpu_bytes_per_server:
            raise ProfileError(
                "inject native_bytes_per_server / gpu_bytes_per_server are made inside an "
                "in-process server; target tritonserver cannot inject them"
            )

    def server_pids(self) -> list[int]:
        with self._lock:
            return [s.process.pid for s in self._servers if s.process.running]

    def client_pid(self) -> int:
        return os.getpid()

    def take_leftovers(self) -> list[tuple[str, str]]:
        """What the servers stopped since the last call left (stubs, regions: removed; ports
        still listening), as (event kind, message)."""
        with self._lock:
            left, self._leftovers = self._leftovers, []
        return left

    def watch_crashes(self, report: Callable[[str], None]) -> None:
        """Call `report` once with a line (signal, log tail) when a server process ends that
        soak did not stop; a daemon thread looks every 0.2 s."""

        def watch() -> None:
            while True:
                threading.Event().wait(_WATCH_EVERY_S)
                with self._lock:
                    dead = [s for s in self._servers if not s.stopping and not s.process.running]
                    for server in dead:
                        server.stopping = True
                        self._servers.remove(server)
                for server in dead:
                    end = server.process.stop()  # removes its stubs and regions
                    _append_log(server)
                    report(
                        f"tritonserver {server.process.pid} {end.describe()}; "
                        f"log tail: {end.log_tail}"
                    )
                    return

        threading.Thread(target=watch, name="tritonserver-crash-watch", daemon=True).start()

    def stop_all(self) -> None:
        """End every process still running (the worker's last act after a failure), the
        perf_analyzer bursts first."""
        from soak.tritonserver import perf_analyzer

        killed = perf_analyzer.kill_running()
        if killed:
            log.warning("killed %d perf_analyzer burst(s) still running", killed)
        with self._lock:
            servers = list(self._servers)
        for server in servers:
            try:
                server.process.stop(grace_s=5.0)
            except Exception as exc:  # noqa: BLE001 - the others must still go
                log.warning("stopping tritonserver %d: %s", server.process.pid, exc)


def _destroy_gevent_hub() -> None:
    import gevent

    gevent.get_hub().destroy(destroy_loop=True)


def _append_log(server: ProcessServer) -> None:
    """The process's log appended (once) to the run's Triton log, which the supervisor reads."""
    dest = server.log_file
    if dest is None or server.log_appended:
        return
    server.log_appended = True
    try:
        data = server.process.log_path.read_bytes()
    except OSError:
        return
    with open(dest, "ab") as out:
        out.write(data)


def check_executable(triton_home: str | None, args: Sequence[str]) -> None:
    """Before any run: the install has a tritonserver executable, and the profile's `args`
    are flags it takes (one start and stop over an empty repository, ~0.5 s, only when
    there are args), so a bad flag is one line rather than a failure in every lifecycle."""
    import tempfile

    from soak.triton import capi
    from soak.tritonserver import executable
    from soak.tritonserver.process import ServerProcess

    install = capi.locate(triton_home)
    executable.executable_path(install)
    if not args:
        return
    with tempfile.TemporaryDirectory(prefix="soak-probe-") as tmp:
        prepared = executable.prepare(Path(tmp), triton_home)
        empty = Path(tmp) / "repository"
        empty.mkdir()
        probe = ServerProcess(prepared, [empty], Path(tmp) / "probe.log", args=tuple(args))
        with probe:
            pass
