"""The measurements of `make bench`: lifecycle, sampler, store, analysis, footprint.

Each returns plain numbers for results/bench.json. The Triton lifecycle part runs in a child
process (``python -m soak.bench --lifecycle-only``) so that the rest measures a supervisor
that never loaded Triton, as in a real run.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _rss() -> int:
    return psutil.Process().memory_info().rss


# -- lifecycle (child process: it loads Triton) ---------------------------------------------
def lifecycle(servers: list[int], iterations: int) -> dict[str, Any]:
    from soak.triton import setup
    from soak.workload.iteration import Workload, WorkloadConfig

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="soak-bench-") as tmp:
        runtime = setup(Path(tmp))
        for n in servers:
            work = Path(tmp) / f"n{n}"
            work.mkdir()
            workload = Workload(
                WorkloadConfig(servers=n, inferences_per_model=10),
                work,
                runtime.backends_dir,
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
    return out


def lifecycle_child(servers: list[int], iterations: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "soak.bench",
                "--lifecycle-only",
                f.name,
                "--servers",
                ",".join(map(str, servers)),
                "--iterations",
                str(iterations),
            ],
            check=True,
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
