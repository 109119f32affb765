"""One perf_analyzer burst against a tritonserver: a fixed number of requests at a fixed
concurrency, bounded by a timeout, counted and timed by soak.

perf_analyzer's own throughput with --request-count is rounded to whole seconds (it printed
499.8 infer/s for 500 requests that took 0.3 s here), so throughput is taken from the counts
and soak's clock; its output is kept whole when the burst fails.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from soak.tritonserver.executable import find_perf_analyzer

_REQUESTS = re.compile(r"^\s*Request count:\s*(\d+)", re.MULTILINE)
_SERVER_OK = re.compile(r"^\s*Successful request count:\s*(\d+)", re.MULTILINE)
_THROUGHPUT = re.compile(r"^\s*Throughput:\s*([\d.]+) infer/sec", re.MULTILINE)


@dataclass(frozen=True)
class PerfBurst:
    """What one burst did. `completed` is perf_analyzer's client-side request count (zero
    when it stopped at an error: it prints no counts then). perf_analyzer ends with an error at
    the first failed request, so `failed` is zero for a burst that exited 0 and the rest of the
    burst otherwise. A decoupled model's request that sends no response (only the final flag)
    is not in perf_analyzer's client count (seen: 20 of 30 requests, 10 asked for no
    responses, server count 30): `server_successes` counts those."""

    requests: int
    completed: int
    failed: int
    server_successes: int | None  # the server's count perf_analyzer read, if it printed it
    wall_s: float
    returncode: int
    timed_out: bool
    reported_infer_per_s: float | None  # perf_analyzer's own, rounded figure
    output: str  # stdout and stderr; kept whole for events when the burst failed

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def infer_per_s(self) -> float:
        """Completed requests per second of the whole run, start-up included."""
        return self.completed / self.wall_s if self.wall_s > 0 else 0.0


def command(
    model: str,
    url: str,
    protocol: str,
    concurrency: int,
    requests: int,
    shared_memory: str = "none",
    streaming: bool = False,
    input_data: Path | None = None,
    executable: Path | None = None,
) -> list[str]:
    """The perf_analyzer command line of one burst. Decoupled models need --streaming and
    --async together (perf_analyzer refuses either alone for them)."""
    cmd = [
        str(executable or find_perf_analyzer()),
        "-m",
        model,
        "-u",
        url,
        "-i",
        protocol,
        "--concurrency-range",
        str(concurrency),
        "--request-count",
        str(requests),
    ]
    if shared_memory == "system":
        cmd += ["--shared-memory", "system"]
    if streaming:
        cmd += ["--streaming", "--async"]
    if input_data is not None:
        cmd += ["--input-data", str(input_data)]
    return cmd


def run_burst(cmd: list[str], env: dict[str, str], requests: int, timeout_s: float) -> PerfBurst:
    """Run `cmd` in its own session; on timeout its whole group is killed (it starts worker
    threads only, but a wrapper script would not pass a signal on)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    timed_out = False
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
    wall = time.monotonic() - started
    counts = [int(n) for n in _REQUESTS.findall(output)]
    finished = proc.returncode == 0 and not timed_out
    completed = min(counts[-1], requests) if counts and finished else 0
    server = _SERVER_OK.findall(output)
    rate = _THROUGHPUT.findall(output)
    return PerfBurst(
        requests=requests,
        completed=completed,
        failed=0 if finished else requests - completed,
        server_successes=int(server[-1]) if server else None,
        wall_s=wall,
        returncode=proc.returncode,
        timed_out=timed_out,
        reported_infer_per_s=float(rate[-1]) if rate else None,
        output=output,
    )


def burst(
    model: str,
    url: str,
    protocol: str,
    concurrency: int,
    requests: int,
    env: dict[str, str],
    timeout_s: float,
    shared_memory: str = "none",
    streaming: bool = False,
    input_data: Path | None = None,
) -> PerfBurst:
    """One burst of `requests` at `concurrency`; `env` from executable.perf_analyzer_environment."""
    cmd = command(model, url, protocol, concurrency, requests, shared_memory, streaming, input_data)
    return run_burst(cmd, env, requests, timeout_s)
