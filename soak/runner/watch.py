"""What the supervisor tracks while one worker runs: its process, channel, samplers and the
deadlines of the phases its servers are in; the message handlers, the sampling and the
endings share it."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from soak.runner import protocol as proto
from soak.runner.servers import ServerSampling
from soak.runner.views import RunOutcome
from soak.sampling.process import ProcessTreeSampler
from soak.triton.facts import LogReader


@dataclass
class Watch:
    """What the supervisor tracks while one worker runs; the handlers share it."""

    run_id: int
    workdir: Path
    proc: subprocess.Popen
    channel: proto.Channel
    sampler: ProcessTreeSampler  # of the processes that hold the servers (Hello says which)
    log_reader: LogReader
    outcome: RunOutcome
    started: float
    hello_deadline: float
    got_hello: bool = False
    first_rss: int | None = None
    servers: ServerSampling | None = None  # servers apart from the worker (Hello says so)
    deadlines: dict[int, tuple[float, str, int]] = field(default_factory=dict)
    """instance -> (monotonic deadline, phase, iteration) of the phase it is in."""
    details: dict[int, str] = field(default_factory=dict)
    """instance -> what its phase does, naming the model, where the worker said (Phase.detail)."""
