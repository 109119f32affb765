"""Synthetic runs written through soak.store.Store: quiet series with known slopes, optional
interval samples with known per-phase additions, events, and findings from the real analysis
(``soak.run_analysis.analyze_run``). The golden database builds on it, and so does the database
every triage test reads (:func:`build_db`, the ``soak_db`` fixture of conftest).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from soak.run_analysis import analyze_run, finding_row
from soak.store import Store

KiB = 1024
MiB = 1024 * KiB
N_ITER = 30
WARMUP = 2
PHASE_ADDS = {"load": 50 * MiB, "infer": 80 * MiB, "unload": 20 * MiB}
#: Events of one iteration: (iteration, the run's start time) -> event rows.
IterationEvents = Callable[[int, float], list[dict[str, Any]]]
#: Events stored once the iterations are in: (now, iterations) -> event rows.
EndEvents = Callable[[float, int], list[dict[str, Any]]]


def dead_pid() -> int:
    """A pid no process can have: above the kernel's pid_max."""
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    except OSError:
        return 2**22 + 1


def failures(i: int, started: float) -> list[dict[str, Any]]:
    """A wrong output in iterations 5, 9 and 17."""
    if i not in (5, 9, 17):
        return []
    return [
        {
            "t": started + i,
            "kind": "failure",
            "iteration": i,
            "instance": 1,
            "phase": "infer",
            "message": "output OUTPUT0 is wrong: expected [3 3], got [3 4]",
        }
    ]


@dataclass(frozen=True)
class RunSpec:
    profile: str
    seed: int
    rss_slope: float = 0.0
    uss_slope: float = 0.0
    thread_step_every: int = 0  # a thread that never ends every k iterations (0: none)
    iterations: int = N_ITER
    servers: int = 2
    memory_type: str = "system"
    inferences_per_model: int = 10
    matrix: str | None = None
    cell: dict | None = None
    interval: bool = False
    events: IterationEvents | None = None
    end_events: EndEvents | None = None
    final_status: str = "passed"  # before analysis; 'running' leaves it unanalysed
    thresholds: str = ""
    started_ago_s: float = 86_400.0
    heartbeat_ago_s: float | None = None  # None: ended normally
    run: Mapping[str, Any] = field(default_factory=dict)  # replaces fields of the run row
    analyzed_at: float | None = None  # the findings' analysis time (None: now)


def add_run(store: Store, spec: RunSpec, now: float) -> int:
    rng = np.random.default_rng(spec.seed)
    n = spec.iterations
    started = now - spec.started_ago_s
    text = (
        f"servers = {spec.servers}\niterations = {n}\nwarmup = {WARMUP}\n"
        f"memory_type = '{spec.memory_type}'\ninferences_per_model = {spec.inferences_per_model}\n"
        + ("[sampling]\nsample_interval_ms = 50\n" if spec.interval else "")
        + spec.thresholds
    )
    run_id = store.create_run(
        {
            "profile": spec.profile,
            "profile_source": "<test>",
            "profile_text": text,
            "config": {
                "run": {"warmup": WARMUP, "iterations": n, "servers": spec.servers},
                "sampling": {"sample_interval_ms": 50 if spec.interval else 0},
            },
            "iterations_planned": n,
            "servers": spec.servers,
            "memory_type": spec.memory_type,
            "instance_kind": "cpu",
            "inferences_per_model": spec.inferences_per_model,
            "datatype": "int32",
            "started_at": started,
            "heartbeat_at": started,
            "host": socket.gethostname(),
            # A fresh running run's supervisor is alive (pid 1 predates every run); the
            # others' is gone, which on this host makes a running one abandoned at once.
            "supervisor_pid": 1 if (spec.heartbeat_ago_s or 1e9) < 300 else dead_pid(),
            "triton_version": "2.51.0",
            "matrix": spec.matrix,
            "cell": spec.cell,
            **spec.run,
        }
    )
    previous_rss = None
    for i in range(n):
        rss = int(200 * MiB + spec.rss_slope * i + rng.normal(0, 48 * KiB)) // 4096 * 4096
        uss = int(150 * MiB + spec.uss_slope * i + rng.normal(0, 48 * KiB)) // 4096 * 4096
        threads = 40 + (i // spec.thread_step_every if spec.thread_step_every else 0)
        samples = []
        if spec.interval and previous_rss is not None:
            for phase, added in PHASE_ADDS.items():
                for delta in (-MiB, 0, MiB):  # median exactly `added` above the quiet point
                    samples.append(
                        {
                            "iteration": i,
                            "kind": "interval",
                            "phase": phase,
                            "t": started + i,
                            "rss_bytes": previous_rss + added + delta,
                        }
                    )
        samples.append(
            {
                "iteration": i,
                "kind": "quiet",
                "t": started + i + 0.5,
                "rss_bytes": rss,
                "uss_bytes": uss,
                "threads": threads,
                "fds": 64,
            }
        )
        row = {
            "iteration": i,
            "ended_at": started + i + 0.5,
            "wall_s": 2.0 + 0.01 * i,
            "server_lifecycles": spec.servers,
            "model_loads": 2 * spec.servers,
            "inferences": 2 * spec.servers * spec.inferences_per_model,
            "failures": 0,
            "load_max_s": 0.5 + 0.01 * i,
            "unload_max_s": 0.25,
        }
        events = spec.events(i, started) if spec.events else []
        store.write_iteration(run_id, row, samples, [], events)
        previous_rss = rss
    store.add_events(run_id, spec.end_events(now, n) if spec.end_events else [])
    if spec.final_status == "running":
        beat = now - (spec.heartbeat_ago_s or 0.0)
        store.update_run(run_id, heartbeat_at=beat)
        return run_id
    end = started + n + 1
    store.update_run(run_id, status=spec.final_status, ended_at=end, heartbeat_at=end)
    analysis = analyze_run(store.db, run_id)
    rows = [finding_row(f) for f in analysis.findings]
    if spec.analyzed_at is not None:
        rows = [{**row, "analyzed_at": spec.analyzed_at} for row in rows]
    store.write_findings(run_id, rows)
    store.update_run(
        run_id, status=analysis.status, verdict=analysis.verdict, exit_code=analysis.exit_code
    )
    return run_id


# -- the triage tests' database ------------------------------------------------------------
TRITON_WARNING = "model 'simple2' took longer than expected to unload"


def triage_events(i: int, started: float) -> list[dict]:
    """A Triton warning every iteration (glog prefix varying), wrong outputs, an error."""
    events = [
        {
            "t": started + i,
            "kind": "triton_warning",
            "iteration": i,
            "message": f"W1125 14:{i:02d}:22.123456 {900 + i} "
            f"model_lifecycle.cc:42] {TRITON_WARNING}",
        }
    ]
    events += failures(i, started)
    if i == 7:
        events.append(
            {
                "t": started + i,
                "kind": "triton_error",
                "iteration": i,
                "message": "E1125 14:07:22.000001 77 server.cc:9] failed to stop",
            }
        )
    return events


def leftovers(now: float, n: int) -> list[dict]:
    return [
        {"t": now, "kind": "leftover_stub", "message": "stub process 4242 outlived the worker"},
        {
            "t": now,
            "kind": "leftover_shm",
            "message": "shared-memory region /dev/shm/triton_python_backend_shm_region_1 "
            "outlived the worker",
        },
        {
            "t": now,
            "kind": "leftover_shm",
            "message": "shared-memory region /dev/shm/triton_python_backend_shm_region_2 "
            "outlived the worker",
        },
    ]


def hang_with_stack_dump(now: float, n: int) -> list[dict]:
    return [
        {
            "t": now,
            "kind": "hang",
            "iteration": n - 1,
            "instance": 0,
            "phase": "unload",
            "message": f"phase unload of instance 0 exceeded its timeout in iteration {n}",
        },
        {
            "t": now,
            "kind": "stack_dump",
            "iteration": n - 1,
            "instance": 0,
            "phase": "unload",
            "message": 'Thread 0x01 (most recent call first):\n  File "lifecycle.py", line 88 '
            'in unload\n  File "iteration.py", line 12 in run\n',
        },
    ]


def grid_cells(gpu_factor: float, session: int) -> list[RunSpec]:
    """Matrix 'grid': RSS grows 100 KiB per server per iteration, times gpu_factor on GPU."""
    out = []
    for memory_type in ("system", "gpu"):
        for servers in (2, 4):
            factor = gpu_factor if memory_type == "gpu" else 1.0
            ipm = 0 if (memory_type, servers, session) == ("gpu", 2, 1) else 10
            out.append(
                RunSpec(
                    "grid",
                    seed=100 * session + servers + (50 if memory_type == "gpu" else 0),
                    rss_slope=100 * KiB * servers * factor,
                    servers=servers,
                    memory_type=memory_type,
                    inferences_per_model=ipm,
                    matrix="grid",
                    cell={"memory_type": memory_type, "servers": servers},
                )
            )
    return out


BUDGETS = (
    "[thresholds.rss_bytes]\ngrowth_budget = 8388608.0\n"
    "[thresholds.uss_bytes]\ngrowth_budget = 8388608.0\n"
)


def build_db(path: Path) -> dict[str, int]:
    """The synthetic database every triage test reads; returns run ids by role."""
    now = time.time()
    store = Store(path)
    ids = {}
    ids["flat"] = add_run(store, RunSpec("cpu", seed=1), now)
    ids["leaky"] = add_run(
        store,
        RunSpec(
            "cpu",
            seed=2,
            rss_slope=1 * MiB,
            uss_slope=0.5 * MiB,
            interval=True,
            events=triage_events,
            end_events=leftovers,
            final_status="passed",
            thresholds=BUDGETS,
        ),
        now,
    )
    ids["hung"] = add_run(
        store,
        RunSpec(
            "cpu",
            seed=3,
            thread_step_every=3,
            end_events=hang_with_stack_dump,
            final_status="hung",
        ),
        now,
    )
    ids["flat2"] = add_run(store, RunSpec("cpu", seed=4), now)
    ids["other_profile"] = add_run(store, RunSpec("gpu", seed=5), now)
    grid1 = [add_run(store, spec, now) for spec in grid_cells(gpu_factor=3.0, session=1)]
    grid2 = [add_run(store, spec, now) for spec in grid_cells(gpu_factor=1.0, session=2)]
    ids.update({f"grid1_{k}": r for k, r in enumerate(grid1)})
    ids.update({f"grid2_{k}": r for k, r in enumerate(grid2)})
    ids["abandoned"] = add_run(
        store,
        RunSpec(
            "cpu",
            seed=6,
            iterations=4,
            final_status="running",
            started_ago_s=4000,
            heartbeat_ago_s=3600,
        ),
        now,
    )
    ids["running"] = add_run(
        store,
        RunSpec(
            "cpu", seed=7, iterations=3, final_status="running", started_ago_s=60, heartbeat_ago_s=1
        ),
        now,
    )
    store.close()
    return ids
