"""The supervisor-worker protocol: typed messages, one JSON object per line, over two pipes.

This is the only place the message shapes are defined; both sides encode and decode here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from soak.profile.profile import Profile

STACKS_FILE = "stacks.txt"
"""File in the run's folder where the worker dumps its threads' stacks on SIGUSR1."""


@dataclass(frozen=True)
class ProfileMessage:
    """What the worker needs of a profile: its already validated sections, no thresholds.

    It is also what a run row stores as its `config`, so a stored run says what it ran.
    """

    name: str
    source: str
    run: dict[str, Any]
    timeouts: dict[str, float]
    sampling: dict[str, Any]
    inject: dict[str, Any]
    models: dict[str, Any] = field(default_factory=dict)  # [models]: repositories, load
    model: dict[str, Any] = field(default_factory=dict)  # [model.<name>] settings
    # [attribution]: allocation sites traced with memray (soak.sampling.memray_sites)
    attribution: dict[str, Any] = field(default_factory=dict)
    tritonserver: dict[str, Any] = field(default_factory=dict)  # [tritonserver]: args

    @classmethod
    def of(cls, profile: Profile) -> ProfileMessage:
        return cls(
            profile.name,
            profile.source,
            profile.run,
            profile.timeouts,
            profile.sampling,
            profile.inject,
            profile.models,
            profile.model,
            profile.attribution,
            profile.tritonserver,
        )


@dataclass(frozen=True)
class Message:
    kind: ClassVar[str] = ""

    def encode(self) -> bytes:
        return (json.dumps({"kind": self.kind, **asdict(self)}) + "\n").encode()

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> Message:
        """The message from its decoded JSON fields; nested records override this."""
        return cls(**data)


# -- supervisor -> worker -------------------------------------------------------------------
@dataclass(frozen=True)
class Start(Message):
    kind: ClassVar[str] = "start"
    profile: ProfileMessage
    workdir: str
    stub: str | None = None  # a replacement stub (tests break the environment on purpose)

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> Start:
        return cls(**{**data, "profile": ProfileMessage(**data["profile"])})


@dataclass(frozen=True)
class Continue(Message):
    """Sent after the quiet-point sample was taken; `stop` ends the run after this point."""

    kind: ClassVar[str] = "continue"
    stop: bool = False


# -- worker -> supervisor -------------------------------------------------------------------
@dataclass(frozen=True)
class Hello(Message):
    kind: ClassVar[str] = "hello"
    pid: int
    triton_library: str
    triton_source: str
    api_version: str
    python_version: str
    # The processes that hold the servers, as the worker's target reports them; the supervisor
    # samples these. [] means the worker itself (the in-process target).
    server_pids: list[int] = field(default_factory=list)
    # True when the servers are processes of their own (target tritonserver): the worker is
    # then only the client, sampled apart, and each Quiet names the live server processes.
    client_apart: bool = False
    notes: list[str] = field(default_factory=list)  # the target's notes, one line each


@dataclass(frozen=True)
class Phase(Message):
    """An instance enters a phase; the watchdog allows it `timeout_s`."""

    kind: ClassVar[str] = "phase"
    iteration: int
    instance: int
    phase: str
    timeout_s: float
    detail: str = ""  # what the phase does, naming its model (the preflight's loads)


@dataclass(frozen=True)
class Quiet(Message):
    """Every server of the iteration is deleted; the worker waits for Continue."""

    kind: ClassVar[str] = "quiet"
    iteration: int
    wall_s: float
    server_lifecycles: int
    model_loads: int
    inferences: int
    phase_sum_s: dict[str, float]
    phase_max_s: dict[str, float]
    failures: list[dict[str, Any]]
    triton_version: str | None
    heap: dict[str, Any] = field(default_factory=dict)
    failed_loads: int = 0  # loads that failed as the model's behaviour expects
    errors: int = 0  # inferences that ended in the expected error
    responses: int = 0  # responses received (a decoupled request sends any number)
    cache_hits: int = 0  # response cache hits in the model statistics this iteration
    cache_insertions: int = 0  # response cache misses (each inserts a response)
    server_pids: list[int] = field(default_factory=list)  # live server processes (client_apart)
    # (event kind, message) of what ended servers left: leftover_stub, leftover_shm (removed),
    # leftover_port (still listening)
    server_leftovers: list[list[str]] = field(default_factory=list)
    # The servers' Prometheus counters this iteration (tritonserver target); None: not read.
    metrics_successes: int | None = None
    metrics_failures: int | None = None
    metrics_failure_reasons: dict[str, int] | None = None  # failures by reason (BACKEND, ...)
    metrics_pending: int | None = None  # requests pending when read (a gauge)


@dataclass(frozen=True)
class Hung(Message):
    """A call into Triton overran its phase timeout inside the worker."""

    kind: ClassVar[str] = "hung"
    iteration: int
    instance: int
    phase: str
    timeout_s: float
    detail: str = ""  # the call that hung, naming its model ("inference on m")
    failures: list[dict[str, Any]] = field(default_factory=list)  # the iteration's, so far


@dataclass(frozen=True)
class Failed(Message):
    """The worker cannot go on (setup error or Python exception); `error` is one line."""

    kind: ClassVar[str] = "failed"
    error: str
    traceback: str = ""
    setup: bool = False  # True: nothing ran (bad environment), not a crash


@dataclass(frozen=True)
class Done(Message):
    """The run's end; `failures` are those of closing long-lived servers after the last
    quiet point (reload and traffic scenarios)."""

    kind: ClassVar[str] = "done"
    iterations: int
    failures: list[dict[str, Any]] = field(default_factory=list)


MESSAGES: dict[str, type[Message]] = {
    cls.kind: cls for cls in (Start, Continue, Hello, Phase, Quiet, Hung, Failed, Done)
}


class ProtocolError(Exception):
    pass


def decode(line: bytes) -> Message:
    try:
        data = json.loads(line)
        cls = MESSAGES[data.pop("kind")]
        return cls.from_fields(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(f"bad message {line[:200]!r}: {exc}") from exc


class Channel:
    """Line-framed messages over a pair of file descriptors."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self._buffer = b""

    def send(self, message: Message) -> None:
        data = message.encode()
        while data:
            written = os.write(self.write_fd, data)
            data = data[written:]

    def fileno(self) -> int:
        return self.read_fd

    def pending(self) -> Message | None:
        """A complete message already buffered, if any."""
        if b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            return decode(line)
        return None

    def receive(self) -> Message | None:
        """Block for the next message; None at end of stream."""
        while True:
            message = self.pending()
            if message is not None:
                return message
            chunk = os.read(self.read_fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk

    def feed(self) -> bool:
        """Read what is available (after select said so); False at end of stream."""
        chunk = os.read(self.read_fd, 65536)
        if not chunk:
            return False
        self._buffer += chunk
        return True

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
