"""One perf_analyzer burst against a tritonserver: a fixed number of requests at a fixed
concurrency, bounded by a timeout, counted and timed by soak.

With --request-count, perf_analyzer checks for the end of its run about once a second: its
runs lasted just over whole seconds here (1.05, 2.09, 3.06, 5.14 ... s of wall clock) and its
printed throughput is the count over that time (499.8 infer/s for 500 requests that the server
answered at ~2,000/s). Soak's own clock (`PerfBurst.infer_per_s`) has the same step, so a burst
measures throughput to within 1 s over its wall time: give it several seconds of requests when
the figure matters. Its output is kept whole for events when the burst fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soak.tritonserver.executable import find_perf_analyzer

_REQUESTS = re.compile(r"^\s*Request count:\s*(\d+)", re.MULTILINE)
_SERVER_OK = re.compile(r"^\s*Successful request count:\s*(\d+)", re.MULTILINE)
_THROUGHPUT = re.compile(r"^\s*Throughput:\s*([\d.]+) infer/sec", re.MULTILINE)
_THREAD_ERROR = re.compile(r"^Thread \[\d+\] had error: ", re.MULTILINE)

_running: set[subprocess.Popen] = set()  # bursts now running, for kill_running()
_running_lock = threading.Lock()


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
        """Completed requests per second of the whole run, start-up and the final wait for
        perf_analyzer's once-a-second check included (see the module docstring)."""
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
        _dies_with_parent(_line_buffered(cmd)),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    with _running_lock:
        _running.add(proc)
    timed_out = False
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(proc)
        output, _ = proc.communicate()
    finally:
        with _running_lock:
            _running.discard(proc)
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


def _line_buffered(cmd: list[str]) -> list[str]:
    """`cmd` through coreutils' `stdbuf -oL -eL` where it is installed: perf_analyzer writes
    to a pipe through stdio's buffer, and a burst killed for time would otherwise leave no
    output at all (what it printed is in its buffer, lost with it)."""
    stdbuf = shutil.which("stdbuf")
    return [stdbuf, "-oL", "-eL", *cmd] if stdbuf else cmd


def _dies_with_parent(cmd: list[str]) -> list[str]:
    """`cmd` run through util-linux's `setpriv --pdeathsig KILL` where it is installed: killed
    when the thread that started it ends, so a burst never outlives a worker that died (the
    burst's own thread waits for it). A preexec_fn would do the same but is unsafe in a
    process with threads (the worker has several)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", *cmd] if setpriv else cmd


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_running() -> int:
    """Kill every burst still running in this process (a worker's teardown); how many."""
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        _kill(proc)
    return len(procs)


def thread_errors(output: str) -> list[str]:
    """The errors perf_analyzer's threads ended with ("Thread [k] had error: ..."), one per
    failed request it saw; it prints no count of the others."""
    starts = [m.end() for m in _THREAD_ERROR.finditer(output)]
    ends = [m.start() for m in _THREAD_ERROR.finditer(output)][1:] + [len(output)]
    return [output[a:b].strip() for a, b in zip(starts, ends, strict=True)]


def _tensor(array: np.ndarray) -> dict:
    array = np.asarray(array)
    return {"content": array.ravel().tolist(), "shape": list(array.shape)}


def write_input_data(
    path: Path,
    inputs: Sequence[dict[str, np.ndarray]],
    expected: Sequence[dict[str, np.ndarray]] | None = None,
) -> Path:
    """perf_analyzer's --input-data JSON: one entry per request, in order, and when
    `expected` is given its outputs as `validation_data` (perf_analyzer then compares every
    response and ends with "Output doesn't match expected output", exit 99, at a wrong one)."""
    doc: dict = {"data": [{n: _tensor(a) for n, a in item.items()} for item in inputs]}
    if expected is not None:
        doc["validation_data"] = [{n: _tensor(a) for n, a in e.items()} for e in expected]
    path.write_text(json.dumps(doc))
    return path


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
