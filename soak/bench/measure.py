"""The measurements of `make bench`: lifecycle, traffic, sampler, store, analysis, footprint.

Each returns plain numbers for results/bench.json. The Triton parts (lifecycle, traffic) run
in a child process (``python -m soak.bench --lifecycle-only`` / ``--traffic-only``) so that
the rest measures a supervisor that never loaded Triton, as in a real run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from soak.bench import model_time


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _rss() -> int:
    return psutil.Process().memory_info().rss


# -- lifecycle (child process: it loads Triton) ---------------------------------------------
def lifecycle(servers: list[int], iterations: int, remote: bool = False) -> dict[str, Any]:
    """The `servers` scenario's iteration time per server count: in-process, or with
    `remote` as that many tritonserver processes per iteration (over gRPC)."""
    from soak.target.remote import TritonServerTarget
    from soak.triton import setup

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="soak-bench-") as tmp:
        target = TritonServerTarget(protocol="grpc") if remote else None
        backends_dir = (
            target.prepare(Path(tmp)).backends_dir if target else setup(Path(tmp)).backends_dir
        )
        extra = {"target": target} if target is not None else {}
        try:
            _lifecycles(servers, iterations, Path(tmp), backends_dir, extra, out)
        finally:
            if target is not None:
                target.stop_all()
    return out


def _lifecycles(
    servers: list[int],
    iterations: int,
    tmp: Path,
    backends_dir: Path,
    extra: dict[str, Any],
    out: dict[str, Any],
) -> None:
    """`lifecycle`'s cells into `out`, one per server count."""
    from soak.workload.iteration import WorkloadConfig
    from soak.workload.scenarios import Servers

    for n in servers:
        work = tmp / f"n{n}"
        work.mkdir()
        workload = Servers(
            WorkloadConfig(servers=n, inferences_per_model=10, **extra),
            work,
            backends_dir,
            log_file=work / "triton.log",
        )
        walls, phases, failures = [], [], 0
        for i in range(iterations + 1):
            record = workload.run_iteration(i)
            failures += len(record.failures)
            if i == 0:
                continue  # the first iteration pays for imports and page faults
            walls.append(record.wall_s)
            phases.append(record.phase_max_s())
        out[str(n)] = {
            "iterations": iterations,
            "median_s": statistics.median(walls),
            "p95_s": _pct(walls, 0.95),
            "failures": failures,
            "phase_median_s": {p: statistics.median(ph[p] for ph in phases) for p in phases[0]},
        }


# -- traffic (child process too) -------------------------------------------------------------
TRAFFIC_PER_MODEL = 100


class _PythonTime:
    """Bench only: how long soak's own Python runs during inferences. Wraps the wait of
    each request (`Completions.wait`, Python or C callbacks: the caller's time outside it is
    Python, the workload and the binding) and the Python callbacks Triton calls (Python on
    Triton's threads; the C callbacks run none). Exact for one caller thread."""

    def __init__(self) -> None:
        from soak.triton import callbacks, native

        self.wait_s = 0.0
        self.callback_s = 0.0
        timer = self

        def timing(cls: type, name: str, attr: str) -> None:
            original = getattr(cls, name)

            def timed(cb, *args, _original=original):
                started = time.perf_counter()
                try:
                    return _original(cb, *args)
                finally:
                    setattr(timer, attr, getattr(timer, attr) + time.perf_counter() - started)

            setattr(cls, name, timed)

        for cls in (callbacks.Callbacks, native.NativeCompletions):
            timing(cls, "wait", "wait_s")
        for name in ("_alloc", "_release_buffer", "_request_released", "_response"):
            timing(callbacks.Callbacks, name, "callback_s")

    def reset(self) -> None:
        self.wait_s = self.callback_s = 0.0


#: Requests in flight of the traffic measurement at N=1 (more servers: 1 only); keyed
#: "1" (concurrency 1, as before) and "1@4".
TRAFFIC_CONCURRENCY = (1, 4)


def traffic(servers: list[int], bursts: int) -> dict[str, Any]:
    """Inferences per second of the traffic scenario, and at N=1 the share of an inference's
    wall time spent in soak's Python (the rest: Triton, the python backend stub, waiting);
    at N=1 also with `TRAFFIC_CONCURRENCY` requests in flight."""
    from soak.triton import native, setup

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="soak-bench-traffic-") as tmp:
        runtime = setup(Path(tmp))
        callbacks = "Python" if native.completions() is None else "C"
        timer = _PythonTime()
        cells = [(n, c) for n in servers for c in (TRAFFIC_CONCURRENCY if n == 1 else (1,))]
        for n, concurrency in cells:
            key = str(n) if concurrency == 1 else f"{n}@{concurrency}"
            work = Path(tmp) / f"n{key}"
            work.mkdir()
            result = _traffic_cell(n, concurrency, bursts, work, runtime.backends_dir, timer=timer)
            if key == "1":
                wall, inferences = result["wall_s"], result["inferences"]
                python_s = wall - timer.wait_s + timer.callback_s
                result["soak_python_share"] = python_s / wall
                result["soak_python_us_per_inference"] = python_s / inferences * 1e6
            result["callbacks"] = callbacks
            out[key] = result
    return out


#: Requests in flight of soak's tritonserver-target traffic, as perf_analyzer's anchor.
REMOTE_CONCURRENCY = (1, 4)


def traffic_remote(protocols: list[str], bursts: int) -> dict[str, Any]:
    """Inferences per second of soak's traffic scenario on the tritonserver target, N=1, per
    protocol ("grpc@1" keys): the same model and requests as in-process, over loopback."""
    from soak.target.remote import TritonServerTarget

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="soak-bench-remote-") as tmp:
        for protocol in protocols:
            for concurrency in REMOTE_CONCURRENCY:
                work = Path(tmp) / f"{protocol}{concurrency}"
                work.mkdir()
                target = TritonServerTarget(protocol=protocol)
                try:
                    info = target.prepare(work)
                    out[f"{protocol}@{concurrency}"] = _traffic_cell(
                        1, concurrency, bursts, work, info.backends_dir, target=target
                    )
                finally:
                    target.stop_all()
    return out


def _traffic_cell(
    servers: int,
    concurrency: int,
    bursts: int,
    work: Path,
    backends_dir: Path,
    target: Any = None,
    timer: _PythonTime | None = None,
) -> dict[str, Any]:
    """One traffic workload: a first iteration (servers, loads, a burst) untimed, then
    `bursts` timed iterations; the timer, if any, is reset after the first."""
    from soak.workload.iteration import WorkloadConfig
    from soak.workload.scenarios import make_workload

    extra = {"target": target} if target is not None else {}
    config = WorkloadConfig(
        servers=servers,
        inferences_per_model=TRAFFIC_PER_MODEL,
        scenario="traffic",
        concurrency=concurrency,
        **extra,
    )
    workload = make_workload(config, work, backends_dir, work / "triton.log")
    try:
        failures = len(workload.run_iteration(0).failures)
        if timer is not None:
            timer.reset()
        triton_before = _triton_time(workload)
        wall, inferences = 0.0, 0
        cpu_started = time.process_time()
        for i in range(1, bursts + 1):
            record = workload.run_iteration(i)
            failures += len(record.failures)
            wall += record.wall_s
            inferences += record.inferences
        cpu_s = time.process_time() - cpu_started
        triton = model_time.per_inference(triton_before, _triton_time(workload))
    finally:
        failures += len(workload.close())
    return {
        "triton_us_per_inference": triton,
        "bursts": bursts,
        "inferences": inferences,
        "inferences_per_s": inferences / wall,
        # soak's process CPU per inference: all of it with the tritonserver target (the
        # server is another process), the server's too in-process
        "process_cpu_us_per_inference": cpu_s / inferences * 1e6,
        "wall_s": wall,
        "failures": failures,
    }


def _triton_time(workload: Any) -> dict[str, int]:
    """The model statistics of every server the long-lived workload holds, summed."""
    total = model_time.snapshot({})
    for life in workload.lives or []:
        if life.server is not None:
            total = model_time.add(total, model_time.snapshot(life.server.model_statistics()))
    return total


def lifecycle_child(
    servers: list[int],
    iterations: int,
    part: str = "lifecycle",
    *extra: str,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`lifecycle`, `traffic` or `traffic-remote` in a child process (they load Triton or
    start servers); `extra` are more of the child's flags, `env` more of its environment."""
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "soak.bench",
                f"--{part}-only",
                f.name,
                "--servers",
                ",".join(map(str, servers)),
                "--iterations",
                str(iterations),
                *extra,
            ],
            check=True,
            env={**os.environ, **(env or {})},
        )
        return json.loads(Path(f.name).read_text())


# -- sampler --------------------------------------------------------------------------------
def sampler(samples: int = 500) -> dict[str, Any]:
    from soak.sampling.process import ProcessTreeSampler, measure_sample_cost

    script = (
        "import subprocess, sys, time\n"
        "n = int(sys.argv[1])\n"
        "kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']) "
        "for _ in range(n)]\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
        "[k.kill() for k in kids]\n"
    )
    out: dict[str, Any] = {}
    for children in (0, 8):
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(children)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            proc.stdout.readline()
            sam = ProcessTreeSampler(proc.pid)
            costs = measure_sample_cost(sam, samples)
            out[f"children_{children}"] = {
                "median_ms": statistics.median(costs) * 1000,
                "p95_ms": _pct(costs, 0.95) * 1000,
                "samples": samples,
            }
            if children == 0:
                before = _rss()
                measure_sample_cost(sam, 1000)
                out["supervisor_rss_growth_over_1000_samples_bytes"] = _rss() - before
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)
    return out


# -- store ----------------------------------------------------------------------------------
def store(iterations: int = 500) -> dict[str, Any]:
    from soak.store import SAMPLE_COLUMNS, Store, event

    with tempfile.TemporaryDirectory() as tmp:
        st = Store(Path(tmp) / "bench.db")
        run_id = st.create_run({"profile": "bench", "profile_text": ""})
        sample = {k: (1.0 if t is float else 123456) for k, t in SAMPLE_COLUMNS.items()}
        start = time.perf_counter()
        for i in range(iterations):
            st.write_iteration(
                run_id,
                {
                    "iteration": i,
                    "wall_s": 1.0,
                    "server_lifecycles": 4,
                    "model_loads": 8,
                    "inferences": 80,
                    "failures": 0,
                },
                [{"iteration": i, "kind": "quiet", "t": time.time(), **sample}],
                [{"iteration": i, "type_name": "dict", "count": 10, "increase": 1}],
                [event("triton_warning", "W bench", i)],
            )
        elapsed = time.perf_counter() - start
        st.close()
    return {"iterations": iterations, "iterations_per_s": iterations / elapsed}


# -- analysis -------------------------------------------------------------------------------
def analysis() -> dict[str, Any]:
    from soak.bench.analysis import bench_run_analysis, rss_power_report

    times = {str(n): bench_run_analysis(n) for n in (1_000, 10_000, 100_000)}
    report = rss_power_report()
    return {
        "run_analysis_s": times,
        "power": {
            "noise": report.noise_source,
            "real_noise": report.real_noise,
            "leak_per_iteration_bytes": report.leak_per_iteration,
            "threshold_per_iteration_bytes": report.rule.slope_per_iteration,
            "warmup": report.warmup,
            "iterations_needed_19_of_20": report.power.iterations,
            "false_alarm_rates": {str(k): v for k, v in report.false_alarm_rates.items()},
            "false_alarm_series": report.false_alarm_series,
        },
    }


# -- footprint: a real supervised run -------------------------------------------------------
def footprint(iterations: int = 10) -> dict[str, Any]:
    from soak import profile as profiles
    from soak.runner import session
    from soak.store import Store

    start_rss = _rss()
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        st = Store(Path(tmp) / "fp.db")
        prof = profiles.load("smoke").with_overrides(iterations=iterations)
        session.run(prof, st, on_done=lambda outcome, _analysis: outcomes.append(outcome))
        st.close()
    return {
        "iterations": iterations,
        "status": outcomes[0].status if outcomes else None,
        "supervisor_rss_start_bytes": start_rss,
        "supervisor_rss_after_bytes": _rss(),
    }
