"""`make bench`: soak's own speed and footprint, measured in one run on this machine.

Prints a table and writes results/bench.json. Numbers, never pass/fail: targets are
compared by a human (and in the README's performance section), not asserted.
The Triton lifecycle part runs in a child process so that the rest measures a supervisor
that never loaded Triton, as in a real run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path("results")


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


# -- traffic (child process too) -------------------------------------------------------------
TRAFFIC_PER_MODEL = 100


class _PythonTime:
    """Bench only: how long soak's own Python runs during inferences. Wraps the two waits of
    `Server.infer` (the caller's time outside them is Python: the workload, the binding) and
    the callbacks Triton calls (Python on Triton's threads). Exact for one caller thread."""

    def __init__(self) -> None:
        from soak.triton import server

        self.wait_s = 0.0
        self.callback_s = 0.0
        timer = self

        class TimedEvent(threading.Event):
            def wait(self, timeout: float | None = None) -> bool:
                started = time.perf_counter()
                try:
                    return super().wait(timeout)
                finally:
                    timer.wait_s += time.perf_counter() - started

        init = server._Inference.__init__

        def timed_init(inf, *args, **kwargs) -> None:
            init(inf, *args, **kwargs)
            inf.completed, inf.released = TimedEvent(), TimedEvent()

        server._Inference.__init__ = timed_init
        for name in ("_alloc", "_release_buffer", "_request_released", "_response"):
            original = getattr(server._Callbacks, name)

            def timed(cb, *args, _original=original):
                started = time.perf_counter()
                try:
                    return _original(cb, *args)
                finally:
                    timer.callback_s += time.perf_counter() - started

            setattr(server._Callbacks, name, timed)

    def reset(self) -> None:
        self.wait_s = self.callback_s = 0.0


def traffic(servers: list[int], bursts: int) -> dict[str, Any]:
    """Inferences per second of the traffic scenario, and at N=1 the share of an inference's
    wall time spent in soak's Python (the rest: Triton, the python backend stub, waiting)."""
    from soak.triton import setup
    from soak.workload.iteration import WorkloadConfig
    from soak.workload.scenarios import make_workload

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="soak-bench-traffic-") as tmp:
        runtime = setup(Path(tmp))
        timer = _PythonTime()
        for n in servers:
            work = Path(tmp) / f"n{n}"
            work.mkdir()
            config = WorkloadConfig(
                servers=n, inferences_per_model=TRAFFIC_PER_MODEL, scenario="traffic"
            )
            workload = make_workload(config, work, runtime.backends_dir, work / "triton.log")
            try:
                failures = len(workload.run_iteration(0).failures)  # servers, loads, a burst
                timer.reset()
                wall, inferences = 0.0, 0
                for i in range(1, bursts + 1):
                    record = workload.run_iteration(i)
                    failures += len(record.failures)
                    wall += record.wall_s
                    inferences += record.inferences
            finally:
                failures += len(workload.close())
            result = {
                "bursts": bursts,
                "inferences": inferences,
                "inferences_per_s": inferences / wall,
                "failures": failures,
            }
            if n == 1:
                python_s = wall - timer.wait_s + timer.callback_s
                result["soak_python_share"] = python_s / wall
                result["soak_python_us_per_inference"] = python_s / inferences * 1e6
            out[str(n)] = result
    return out


def _lifecycle_child(servers: list[int], iterations: int, part: str = "lifecycle") -> dict:
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
    from soak.bench_analysis import bench_run_analysis, rss_power_report

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
    from soak.runner.session import run_cells
    from soak.store import Store

    start_rss = _rss()
    with tempfile.TemporaryDirectory() as tmp:
        st = Store(Path(tmp) / "fp.db")
        prof = profiles.load("smoke").with_overrides(iterations=iterations)
        outcomes = run_cells(prof, st)
        st.close()
    return {
        "iterations": iterations,
        "status": outcomes[0].status if outcomes else None,
        "supervisor_rss_start_bytes": start_rss,
        "supervisor_rss_after_bytes": _rss(),
    }


def human(value: float, metric: str) -> str:
    from soak.report.console import human as fmt

    return fmt(value, metric)


def _mib(b: float) -> str:
    return f"{b / 2**20:.1f} MiB"


def print_table(r: dict[str, Any]) -> None:
    rows: list[tuple[str, str]] = []
    for n, lc in r["lifecycle"].items():
        phases = ", ".join(
            f"{p} {v * 1000:.0f}" for p, v in lc["phase_median_s"].items() if v >= 0.0005
        )
        rows.append(
            (f"iteration N={n} (median / p95)", f"{lc['median_s']:.2f} s / {lc['p95_s']:.2f} s")
        )
        rows.append((f"  phases N={n}, median ms", phases))
    for n, t in r.get("traffic", {}).items():
        share = ""
        if "soak_python_share" in t:
            share = (
                f"; soak's Python {t['soak_python_share']:.0%} of the time "
                f"({t['soak_python_us_per_inference']:.0f} us/inference)"
            )
        rows.append(
            (
                f"traffic N={n}, {TRAFFIC_PER_MODEL} requests per model per burst",
                f"{t['inferences_per_s']:.0f} inferences/s{share}",
            )
        )
    for key, s in r["sampler"].items():
        if isinstance(s, dict):
            rows.append(
                (
                    f"quiet-point sample, {key.replace('_', ' ')}",
                    f"median {s['median_ms']:.2f} ms, p95 {s['p95_ms']:.2f} ms",
                )
            )
    rows.append(
        (
            "supervisor RSS growth over 1,000 samples",
            _mib(r["sampler"]["supervisor_rss_growth_over_1000_samples_bytes"]),
        )
    )
    rows.append(("store: iterations written per second", f"{r['store']['iterations_per_s']:.0f}"))
    for n, t in r["analysis"]["run_analysis_s"].items():
        rows.append((f"analysis of a run of {int(n):,} samples", f"{t:.3f} s"))
    p = r["analysis"]["power"]
    rows.append(
        (
            "detection: iterations after warm-up for 64 KiB/server at N=4 (19/20)",
            f"{p['iterations_needed_19_of_20']} (threshold "
            f"{human(p['threshold_per_iteration_bytes'], 'x_bytes')}"
            f"/iteration; noise: {p['noise']})",
        )
    )
    for n, rate in p["false_alarm_rates"].items():
        rows.append(
            (
                f"false alarms, {p['false_alarm_series']} clean series of {n} iterations",
                f"{rate:.0%}",
            )
        )
    f = r["footprint"]
    rows.append(
        (
            "supervisor RSS at start / after a run",
            f"{_mib(f['supervisor_rss_start_bytes'])} / {_mib(f['supervisor_rss_after_bytes'])} "
            f"({f['iterations']} iterations, {f['status']})",
        )
    )
    width = max(len(k) for k, _ in rows)
    print(f"soak bench on {r['machine']['summary']}")
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="soak.bench", description=__doc__)
    parser.add_argument("--servers", default="1,2,4,8")
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--out", default=str(RESULTS / "bench.json"))
    parser.add_argument("--traffic-servers", default="1,4")
    parser.add_argument("--lifecycle-only", metavar="JSON", help=argparse.SUPPRESS)
    parser.add_argument("--traffic-only", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    servers = [int(s) for s in args.servers.split(",")]
    if args.lifecycle_only:
        Path(args.lifecycle_only).write_text(json.dumps(lifecycle(servers, args.iterations)))
        os._exit(0)  # Triton's threads may hold the interpreter at exit
    if args.traffic_only:
        Path(args.traffic_only).write_text(json.dumps(traffic(servers, args.iterations)))
        os._exit(0)
    traffic_servers = [int(s) for s in args.traffic_servers.split(",")]
    machine = {
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    machine["summary"] = (
        f"{machine['cpus']} CPUs, {_mib(machine['memory_bytes'])} RAM, Python {machine['python']}"
    )
    result: dict[str, Any] = {"machine": machine, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    steps = [
        ("footprint", footprint),
        ("sampler", sampler),
        ("store", store),
        ("analysis", analysis),
        ("lifecycle", lambda: _lifecycle_child(servers, args.iterations)),
        ("traffic", lambda: _lifecycle_child(traffic_servers, args.iterations, "traffic")),
    ]
    for name, fn in steps:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        result[name] = fn()
        print(f"bench: {name} done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print_table(result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
