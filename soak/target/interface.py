"""The interface the workload drives servers through, whatever kind of server answers.

In-process servers (`soak.target.inprocess`, the C API binding of `soak.triton`) stand behind
it today; a `tritonserver` process driven over HTTP or gRPC is the next. What crosses it is
plain Python and numpy, and every error a server reports is a `soak.errors.ServerError`
(`ServerTimeout` when no answer came in time). Nothing here may import a server library.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from soak.errors import ServerError, ServerTimeout

if TYPE_CHECKING:
    from soak.tritonserver.metrics import ModelCounters
    from soak.workload.inject import Injection


class MemoryType(str, Enum):
    """Where the client keeps a request's input and output buffers."""

    SYSTEM = "system"
    PINNED = "pinned"
    GPU = "gpu"


#: Request flags of a sequence (Triton's TRITONSERVER_RequestFlag values, also its gRPC/HTTP
#: sequence_start / sequence_end).
SEQUENCE_START = 1
SEQUENCE_END = 2
#: The deadline of a request sent when its burst's time is already up: it still gets one.
LEAST_TIMEOUT_S = 0.001


@dataclass
class Output:
    """One output tensor copied out of a response; BYTES as an object array of bytes, BF16 as
    its raw bits (uint16)."""

    array: np.ndarray
    memory_type: MemoryType
    datatype: str = ""


@dataclass(frozen=True)
class ServerFeatures:
    """Server-wide Triton features a profile turns on (the same for every server of a run).

    `strict_model_config` false lets a backend complete a config (python models'
    `auto_complete_config`), so a model folder needs no config.pbtxt. `response_cache`
    names a cache library ("local", or "" for none) of `response_cache_bytes` bytes, which
    models with `response_cache { enable: true }` use."""

    strict_model_config: bool = True
    response_cache: str = ""
    response_cache_bytes: int = 1 << 20


@dataclass(frozen=True)
class ServerSpec:
    """What the workload asks of one server; each target turns it into its own options."""

    repositories: tuple[Path, ...]
    backends_dir: Path
    server_id: str = "soak"
    log_file: Path | None = None
    exit_timeout_s: int = 30  # how long a stop waits for models still in use (Triton's default)
    features: ServerFeatures = ServerFeatures()


@dataclass(frozen=True)
class TargetInfo:
    """What preparing a target found: the backend folder servers get, and which Triton it is."""

    backends_dir: Path
    triton_library: str
    triton_source: str
    api_version: str
    # What the user should know about how this target runs here, one line each (the
    # in-process target without a C compiler: its callbacks in Python, slower traffic).
    notes: tuple[str, ...] = ()


#: The outputs a load generator hands on for a request it completed but could not check
#: (perf_analyzer with shared memory): counted, not compared. Identity is the test.
NOT_CHECKED: dict = {}

#: What a burst hands on per request: (index, outputs of its first response or None, the
#: ServerError it ended in or None) -> whether to go on.
OnResult = Callable[[int, "dict[str, Output] | None", "ServerError | None"], bool]


def infer_one_by_one(
    server: ModelServer,
    model: str,
    inputs: Iterable[dict[str, np.ndarray]],
    outputs: list[str],
    on_result: OnResult,
    memory_type: MemoryType = MemoryType.SYSTEM,
    timeout_s: float = 30.0,
    device: int = 0,
    datatypes: dict[str, str] | None = None,
    keep: Callable[[int], bool] | None = None,
) -> int:
    """`ModelServer.infer_many` at concurrency 1 from `infer`, for a server that has no
    asynchronous path of its own; each request gets what is left of the burst's
    `timeout_s`."""
    handed = 0
    end = time.monotonic() + timeout_s
    for index, item in enumerate(inputs):
        keep_one = bool(keep is not None and keep(index))
        left = max(LEAST_TIMEOUT_S, end - time.monotonic())
        try:
            result = server.infer(
                model, item, outputs, memory_type, left, keep_one, device, datatypes
            )
        except ServerTimeout:
            raise
        except ServerError as exc:
            handed += 1
            if not on_result(index, None, exc):
                break
            continue
        handed += 1
        if not on_result(index, result, None):
            break
    return handed


@runtime_checkable
class ModelServer(Protocol):
    """One server with explicit model control; `close()` (or the with-block) ends it once.
    `receives_decoupled`: whether its client can take a decoupled model's responses (Triton
    serves them through the C API or gRPC's stream, never over HTTP or unary gRPC)."""

    receives_decoupled: bool

    def is_live(self) -> bool: ...

    def is_ready(self) -> bool: ...

    def metadata(self) -> dict: ...

    def load_model(self, name: str) -> None: ...

    def unload_model(self, name: str) -> None: ...

    def model_is_ready(self, name: str, version: int = -1) -> bool: ...

    def model_index(self, ready_only: bool = False) -> list[dict]:
        """Every model of the server's repositories with its state ("READY", ...)."""
        ...

    def model_metadata(self, name: str, version: int = -1) -> dict: ...

    def model_config(self, name: str, version: int = -1) -> dict: ...

    def model_statistics(self, name: str = "", version: int = -1) -> dict: ...

    def request_counters(self) -> dict[str, ModelCounters] | None:
        """The server's own request counters per model (tritonserver's Prometheus /metrics:
        successes, failures by reason, pending); None where there are none (in-process)."""
        ...

    def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        memory_type: MemoryType = MemoryType.SYSTEM,
        timeout_s: float = 30.0,
        keep_response: bool = False,
        device: int = 0,
        datatypes: dict[str, str] | None = None,
        sequence: tuple[int, int] = (0, 0),
    ) -> dict[str, Output]:
        """One request, its final response (and its release) awaited; the outputs of its
        first response (see `infer_responses` for decoupled models). `keep_response` never
        frees the response: an injected leak inside the server. `device` is the GPU that GPU
        buffers live on; `datatypes` names an input's Triton datatype where its numpy dtype
        cannot (BF16); `sequence` is (correlation id, SEQUENCE_START | SEQUENCE_END flags)
        for a sequence model, (0, 0) none."""
        ...

    def infer_responses(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        memory_type: MemoryType = MemoryType.SYSTEM,
        timeout_s: float = 30.0,
        datatypes: dict[str, str] | None = None,
        device: int = 0,
        sequence: tuple[int, int] = (0, 0),
    ) -> list[dict[str, Output]]:
        """Every response of one request until the FINAL flag: a decoupled model sends any
        number, and a final flag that comes without a response adds none. Arguments as for
        `infer`."""
        ...

    def infer_many(
        self,
        model: str,
        inputs: Iterable[dict[str, np.ndarray]],
        outputs: list[str],
        on_result: OnResult,
        concurrency: int = 1,
        memory_type: MemoryType = MemoryType.SYSTEM,
        timeout_s: float = 30.0,
        device: int = 0,
        datatypes: dict[str, str] | None = None,
        keep: Callable[[int], bool] | None = None,
        expected: Callable[[int], dict[str, np.ndarray] | None] | None = None,
    ) -> int:
        """A burst of requests, at most `concurrency` in flight: each result handed to
        `on_result(index, outputs, error)` in submission order (False stops the burst; what
        is in flight is still awaited). `keep(index)` true never frees that response.
        `expected(index)`: the outputs a request must give (None: it must fail), for a load
        generator that checks answers itself (perf_analyzer); soak's own hands every answer
        to `on_result`, which checks it. Returns how many results were handed on;
        ServerTimeout when one has not completed `timeout_s` after the burst began (the
        burst's budget, not each request's)."""
        ...

    def stop(self) -> None: ...

    def delete(self) -> None:
        """Free the server (after `stop`): the lifecycle times the two apart."""
        ...

    def close(self) -> None:
        """Stop, then delete even when stop fails."""
        ...

    def __enter__(self) -> ModelServer: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class ServerTarget(Protocol):
    """A kind of server: how the worker prepares for it, makes one, and which processes to
    sample. Chosen from the profile in one place, `soak.target.make_target`."""

    name: str
    #: Whether the repositories soak writes reach the servers (its generated models, new
    #: versions); False for a server someone else started, which serves its own repository.
    writes_repositories: bool
    #: Who finds allocation sites (`--attribute`): "memray" (the worker traces itself from the
    #: end of the warm-up) or "heaptrack" (each server process is traced from its start).
    attribution: str

    def prepare(
        self,
        workdir: Path,
        memory: Sequence[MemoryType] = (),
        device: int = 0,
        stub: Path | None = None,
    ) -> TargetInfo:
        """Once per worker, before any server: libraries, backend folder, environment; refuses
        (EnvironmentProblem) a machine that lacks what `memory` on `device` needs. `stub`
        replaces the python backend stub (tests break the environment on purpose)."""
        ...

    def new_server(self, spec: ServerSpec) -> ModelServer:
        """A started server, not yet known to be live."""
        ...

    def inject_server_leaks(self, injection: Injection, device: int = 0) -> None:
        """The profile's per-server leaks, made where the server lives (after new_server)."""
        ...

    def server_pids(self) -> list[int]:
        """The processes whose resources are the servers' (sampled by the supervisor)."""
        ...

    def client_pid(self) -> int:
        """The process that drives the servers: the worker."""
        ...

    def phase_floors(self) -> dict[str, float]:
        """Least timeouts (seconds) of phases that take longer with this target as set up
        (a server traced by heaptrack starts in seconds); the profile's larger ones stand."""
        ...

    def take_leftovers(self) -> list[tuple[str, str]]:
        """What servers ended since the last call left behind, as (event kind, message): stubs
        and shm regions (removed), ports still listening; [] where a server is no process."""
        ...

    def stop_all(self) -> None:
        """End every server still running: the worker's last act, whatever happened, so that
        no server process outlives it."""
        ...

    def watch_crashes(self, report: Callable[[str], None]) -> None:
        """Call `report` once with one line when a server dies that soak did not stop; a
        crash of an in-process server ends the worker, which the supervisor sees itself."""
        ...
