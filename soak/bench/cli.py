"""`make bench`: soak's own speed and footprint, measured in one run on this machine.

Prints a table and writes results/bench.json. Numbers, never pass/fail: targets are
compared by a human (and in the README's performance section), not asserted.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import click
import psutil

from soak.bench import anchors, attribution, cpp_anchor, measure, model_time, store_growth
from soak.formatting import human, mib
from soak.triton import native

RESULTS = Path("results")


#: The `servers` scenario on target tritonserver: N processes per iteration, a few iterations
#: (each starts and stops N processes: several seconds).
REMOTE_SERVERS = 4
REMOTE_ITERATIONS = 4

#: The goal of soak's in-process traffic against perf_analyzer on a tritonserver process.
RATIO_GOAL = 1.5


def traffic_comparison_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """Soak in-process at N=1 against perf_analyzer at the same concurrency (the ratio and its
    goal), then soak's own tritonserver-target traffic per protocol and concurrency."""
    traffic, pa = r.get("traffic", {}), r.get("perf_analyzer", {})
    rows = []
    for c in measure.TRAFFIC_CONCURRENCY:
        soak = traffic.get("1" if c == 1 else f"1@{c}", {}).get("inferences_per_s")
        anchor = pa.get(f"grpc@{c}", {}).get("inferences_per_s")
        if soak is None or anchor is None:
            continue
        rows.append(
            (
                f"traffic N=1 c={c}: soak in-process / perf_analyzer grpc",
                f"{soak:,.0f} / {anchor:,.0f} inferences/s = x{soak / anchor:.2f} "
                f"(goal >= {RATIO_GOAL})",
            )
        )
        own = traffic.get("1" if c == 1 else f"1@{c}", {}).get("triton_us_per_inference")
        theirs = pa.get(f"grpc@{c}", {}).get("triton_us_per_inference")
        for who, t in (("soak", own), ("perf_analyzer", theirs)):
            if t:
                rows.append(
                    (f"  Triton's time per inference, c={c}, {who}", model_time.describe(t))
                )
    for key, t in r.get("traffic_remote", {}).items():
        protocol, c = key.split("@")
        anchor = pa.get(key, {}).get("inferences_per_s")
        against = (
            f" (perf_analyzer {anchor:,.0f}: x{t['inferences_per_s'] / anchor:.2f})"
            if anchor
            else ""
        )
        cpu = t.get("process_cpu_us_per_inference")
        client = f"; soak's client CPU {cpu:.0f} us/inference" if cpu is not None else ""
        rows.append(
            (
                f"traffic N=1 c={c}: soak on tritonserver over {protocol}",
                f"{t['inferences_per_s']:,.0f} inferences/s{against}{client}",
            )
        )
    for key, a in pa.items():
        if isinstance(a, dict) and a.get("inferences_per_s") is None:
            rows.append((f"perf_analyzer {key}", f"no figure (exit {a.get('returncode')})"))
    return rows


def multi_server_row(lc: dict[str, Any], cpp: dict[str, Any]) -> tuple[str, str]:
    """Soak's N=4 median iteration beside the C++ multi_server's, with the ratio (or why the
    C++ figure is missing)."""
    label = "  against Triton's multi_server.cc made concurrent (C++, 4 threads)"
    if "missing" in cpp:
        return (label, cpp["missing"])
    if "median_s" not in cpp:
        return (label, f"no C++ figure (exit {cpp.get('returncode')})")
    phases = ", ".join(
        f"{p} {v * 1000:.0f}" for p, v in cpp.get("phase_median_s", {}).items() if v >= 0.0005
    )
    phases = f" (C++ phases, median ms: {phases})" if phases else ""
    if "median_s" not in lc:
        return (label, f"C++ {cpp['median_s']:.2f} s median{phases}")
    return (
        label,
        f"soak {lc['median_s']:.2f} s / C++ {cpp['median_s']:.2f} s median "
        f"= x{lc['median_s'] / cpp['median_s']:.2f}{phases}",
    )


def print_table(r: dict[str, Any]) -> None:
    """The parts measured in this run (see `--only`), in one table."""
    rows: list[tuple[str, str]] = []
    for n, lc in r.get("lifecycle", {}).items():
        phases = ", ".join(
            f"{p} {v * 1000:.0f}" for p, v in lc["phase_median_s"].items() if v >= 0.0005
        )
        rows.append(
            (f"iteration N={n} (median / p95)", f"{lc['median_s']:.2f} s / {lc['p95_s']:.2f} s")
        )
        rows.append((f"  phases N={n}, median ms", phases))
        if n == "4" and "multi_server" in r:
            rows.append(multi_server_row(lc, r["multi_server"]))
    if "multi_server" in r and "4" not in r.get("lifecycle", {}):
        rows.append(multi_server_row({}, r["multi_server"]))
    for n, lc in r.get("lifecycle_remote", {}).items():
        rows.append(
            (
                f"iteration N={n} tritonserver processes, grpc (median / p95)",
                f"{lc['median_s']:.2f} s / {lc['p95_s']:.2f} s"
                + (f", {lc['failures']} failures" if lc["failures"] else ""),
            )
        )
    python_callbacks = {f"{n}, Python callbacks": t for n, t in r.get("traffic_python", {}).items()}
    for n, t in {**r.get("traffic", {}), **python_callbacks}.items():
        share = ""
        if "soak_python_share" in t:
            share = (
                f"; soak's Python {t['soak_python_share']:.0%} of the time "
                f"({t['soak_python_us_per_inference']:.0f} us/inference)"
            )
        rows.append(
            (
                f"traffic N={n.replace('@', ', concurrency ')}, "
                f"{measure.TRAFFIC_PER_MODEL} requests per model per burst",
                f"{t['inferences_per_s']:.0f} inferences/s{share}",
            )
        )
    rows += traffic_comparison_rows(r)
    if "store_growth" in r:
        rows += store_growth.table_rows(r["store_growth"])
    if "sampler" in r:
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
                mib(r["sampler"]["supervisor_rss_growth_over_1000_samples_bytes"]),
            )
        )
    if "store" in r:
        rows.append(
            ("store: iterations written per second", f"{r['store']['iterations_per_s']:.0f}")
        )
    if "analysis" in r:
        rows += _analysis_rows(r["analysis"])
    if "footprint" in r:
        f = r["footprint"]
        rows.append(
            (
                "supervisor RSS at start / after a run",
                f"{mib(f['supervisor_rss_start_bytes'])} / "
                f"{mib(f['supervisor_rss_after_bytes'])} ({f['iterations']} iterations, "
                f"{f['status']})",
            )
        )
    if "attribution" in r:
        rows += attribution.table_rows(r["attribution"])
    width = max((len(k) for k, _ in rows), default=0)
    load = r["machine"].get("load_average")
    print(f"soak bench on {r['machine']['summary']}")
    if load:
        print("  load average (1, 5, 15 min) at start / end: " + " / ".join(load))
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")


def _analysis_rows(a: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [
        (f"analysis of a run of {int(n):,} samples", f"{t:.3f} s")
        for n, t in a["run_analysis_s"].items()
    ]
    p = a["power"]
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
    return rows


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


#: The parts of a bench run, in the order they run; `--only` picks some.
PARTS = (
    "footprint",
    "sampler",
    "store",
    "analysis",
    "lifecycle",
    "multi_server",
    "lifecycle_remote",
    "attribution",
    "traffic",
    "traffic_python",
    "traffic_remote",
    "perf_analyzer",
    "store_growth",
)


@click.command(help=__doc__)
@click.option("--servers", default="1,2,4,8", show_default=True, help="Server counts to time.")
@click.option("--iterations", type=int, default=8, show_default=True)
@click.option("--out", default=str(RESULTS / "bench.json"), show_default=True)
@click.option(
    "--traffic-servers", default="1,4", show_default=True, help="Server counts of traffic."
)
@click.option(
    "--only",
    default=",".join(PARTS),
    show_default=True,
    help="Comma-separated parts to run (the table shows what ran).",
)
@click.option(
    "--all-cells",
    is_flag=True,
    help="store_growth: every cell of every profile (default: the first of each, and every "
    "traffic behaviour).",
)
@click.option(
    "--db-iterations",
    type=int,
    default=store_growth.ITERATIONS,
    show_default=True,
    help="store_growth: iterations of each cell.",
)
@click.option("--lifecycle-only", metavar="JSON", hidden=True)
@click.option("--traffic-only", metavar="JSON", hidden=True)
@click.option("--traffic-remote-only", metavar="JSON", hidden=True)
@click.option("--lifecycle-remote-only", metavar="JSON", hidden=True)
def main(
    servers: str,
    iterations: int,
    out: str,
    traffic_servers: str,
    only: str,
    all_cells: bool,
    db_iterations: int,
    lifecycle_only: str | None,
    traffic_only: str | None,
    traffic_remote_only: str | None,
    lifecycle_remote_only: str | None,
) -> None:
    counts = [int(s) for s in servers.split(",")]
    if lifecycle_only:
        Path(lifecycle_only).write_text(json.dumps(measure.lifecycle(counts, iterations)))
        os._exit(0)  # Triton's threads may hold the interpreter at exit
    if lifecycle_remote_only:
        result = measure.lifecycle(counts, iterations, remote=True)
        Path(lifecycle_remote_only).write_text(json.dumps(result))
        os._exit(0)
    if traffic_only:
        Path(traffic_only).write_text(json.dumps(measure.traffic(counts, iterations)))
        os._exit(0)
    if traffic_remote_only:
        result = measure.traffic_remote(list(anchors.PROTOCOLS), iterations)
        Path(traffic_remote_only).write_text(json.dumps(result))
        os._exit(0)
    parts = [p.strip() for p in only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)}: parts are {', '.join(PARTS)}", param_hint="--only"
        )
    traffic_counts = [int(s) for s in traffic_servers.split(",")]
    machine = {
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [_load()],
    }
    machine["summary"] = (
        f"{machine['cpus']} CPUs, {mib(machine['memory_bytes'])} RAM, Python {machine['python']}"
    )
    result: dict[str, Any] = {"machine": machine, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    steps = {
        "footprint": measure.footprint,
        "sampler": measure.sampler,
        "store": measure.store,
        "analysis": measure.analysis,
        "lifecycle": lambda: measure.lifecycle_child(counts, iterations),
        "multi_server": lambda: cpp_anchor.multi_server(4, iterations),
        "lifecycle_remote": lambda: measure.lifecycle_child(
            [REMOTE_SERVERS], REMOTE_ITERATIONS, "lifecycle-remote"
        ),
        "attribution": attribution.attribution,
        "traffic": lambda: measure.lifecycle_child(traffic_counts, iterations, "traffic"),
        "traffic_python": lambda: measure.lifecycle_child(
            [1], iterations, "traffic", env={native.ENV_SWITCH: "0"}
        ),
        "traffic_remote": lambda: measure.lifecycle_child([1], iterations, "traffic-remote"),
        "perf_analyzer": lambda: anchors.perf_analyzer(
            measure.TRAFFIC_CONCURRENCY, anchors.PROTOCOLS
        ),
        "store_growth": lambda: store_growth.store_growth(all_cells, db_iterations),
    }
    for name in [p for p in PARTS if p in parts]:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        result[name] = steps[name]()
        print(f"bench: {name} done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    machine["load_average"].append(_load())
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print_table(result)
    print(f"wrote {path}")
