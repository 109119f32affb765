"""Ending a worker and what it leaves: kill its tree, dump its stacks, find and remove the
stubs and shared-memory regions that outlived it, read the tail of its output.

The supervisor decides when; these say how, and return events rather than store them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from soak.runner import protocol as proto
from soak.sampling.process import ProcessTreeSampler
from soak.sampling.stubs import StubProcess
from soak.sampling.waiting import wait_ended
from soak.store import event


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the worker and every descendant (stubs), then wait for the worker's status."""
    if proc.poll() is not None:
        return
    try:
        root = psutil.Process(proc.pid)
        victims = [root, *root.children(recursive=True)]
    except psutil.Error:
        victims = []
    for p in victims:
        try:
            p.kill()
        except psutil.Error:
            pass
    wait_ended(victims, timeout_s=10)  # not reaped: Popen reads the worker's status
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def dump_stacks(proc: subprocess.Popen, workdir: Path) -> str:
    """The threads' stacks a hung worker writes on SIGUSR1 ("" when it does not answer)."""
    path = workdir / proto.STACKS_FILE
    try:
        before = path.stat().st_size if path.exists() else 0
        os.kill(proc.pid, signal.SIGUSR1)
    except (OSError, ProcessLookupError):
        return ""
    deadline = time.monotonic() + 3
    text = ""
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            text = path.read_text(errors="replace")[before:]
        except OSError:
            text = ""
        if text and "File" in text and time.monotonic() > deadline - 2.4:
            break
    return text


def stub_died(stub: StubProcess, iteration: int | None) -> dict[str, Any]:
    """The event of a stub that died under a live worker. Its exit status is not to be had:
    Triton, its parent, reaps it (no zombie is left to read) and logs nothing of it."""
    model = f" of model {stub.model!r}" if stub.model else ""
    return event(
        "stub_exit",
        f"python backend stub process {stub.pid}{model} exited while its server lived "
        "(its region still there; its exit status is not visible: Triton, its parent, reaped it)",
        iteration,
    )


def cleanup_leftovers(sampler: ProcessTreeSampler) -> list[dict[str, Any]]:
    """Stubs and regions that outlived the worker are findings: the events that say so, once
    they are removed."""
    deadline = time.monotonic() + 3
    left = sampler.leftovers()
    # Stubs notice a dead parent within about a second; give them that chance first.
    while left.stub_pids and time.monotonic() < deadline:
        time.sleep(0.2)
        left = sampler.leftovers()
    events = [
        event("leftover_stub", f"stub process {pid} outlived the worker") for pid in left.stub_pids
    ]
    events += [
        event("leftover_shm", f"shared-memory region {p} outlived the worker")
        for p in left.shm_paths
    ]
    if events:
        removed = sampler.cleanup(left)
        events.append(
            event(
                "cleanup",
                f"removed {len(removed.stub_pids)} stub process(es) and "
                f"{len(removed.shm_paths)} shm region(s)",
            )
        )
    return events


def tail(path: Path, limit: int = 12000) -> str:
    """The last `limit` bytes of a process's output file, stripped ("" when unreadable)."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode(errors="replace").strip()
