"""How a run ends when its worker does not say Done: it exited or was killed (a crash), or a
phase overran its timeout (a hang: stacks dumped, regions attributed, the worker killed)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from typing import Any

import psutil

from soak.errors import SoakError
from soak.runner import teardown
from soak.runner.watch import Watch
from soak.store import event

Record = Callable[[list[dict[str, Any]]], None]  # stores the run's events


def worker_ended(watch: Watch, record: Record) -> None:
    """The worker exited or was killed without saying Done: a crash, with its output's tail."""
    proc, outcome = watch.proc, watch.outcome
    try:
        code = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        teardown.kill_tree(proc)
        code = proc.wait()
    tail = teardown.tail(watch.workdir / "worker.log")
    if code < 0:
        name = signal.Signals(-code).name
        reason = f"worker killed by {name} after {outcome.iterations_done} iteration(s)"
        kind = "signal"
    else:
        reason = f"worker exited with status {code} after {outcome.iterations_done} iteration(s)"
        kind = "crash"
    record(
        [event(kind, reason + ("\n--- worker output ---\n" + tail if tail else ""))],
    )
    outcome.status, outcome.reason = "crashed", reason


def hang(
    watch: Watch,
    record: Record,
    iteration: int | None,
    instance: int | None,
    phase: str,
    detail: str = "",
) -> None:
    """A phase (or the startup) overran its timeout: dump the worker's stacks, attribute the
    regions it holds while it lives, then kill it."""
    stacks = teardown.dump_stacks(watch.proc, watch.workdir)
    try:
        # While the worker still lives: attribute every region it holds, so that what the
        # kill leaves behind is known to be this run's and can be removed.
        watch.sampler.sample()
        died = watch.sampler.died_holding_regions()
        if watch.servers is not None:
            watch.servers.hold_regions()
    except (psutil.Error, SoakError):
        died = []
    record([teardown.stub_died(s, iteration) for s in died])
    what = f"phase {phase}" + (
        f" of instance {instance}" if instance is not None and instance >= 0 else ""
    )
    when = (
        "before iteration 1"
        if instance == -1 and not watch.got_hello
        else f"in iteration {(iteration or 0) + 1}"
    )
    reason = f"{what} exceeded its timeout {when}" + (f" ({detail})" if detail else "")
    reason += "; worker killed"
    record(
        [
            event("hang", reason, iteration, instance, phase),
            event(
                "stack_dump",
                stacks or "(no stacks: the worker did not answer SIGUSR1)",
                iteration,
                instance,
                phase,
            ),
        ],
    )
    teardown.kill_tree(watch.proc)
    watch.outcome.status, watch.outcome.reason = "hung", reason
