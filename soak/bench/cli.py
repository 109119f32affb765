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

from soak.bench import attribution, measure
from soak.formatting import human, mib

RESULTS = Path("results")


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
                f"traffic N={n.replace('@', ', concurrency ')}, "
                f"{measure.TRAFFIC_PER_MODEL} requests per model per burst",
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
            mib(r["sampler"]["supervisor_rss_growth_over_1000_samples_bytes"]),
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
            f"{mib(f['supervisor_rss_start_bytes'])} / {mib(f['supervisor_rss_after_bytes'])} "
            f"({f['iterations']} iterations, {f['status']})",
        )
    )
    if "attribution" in r:
        rows += attribution.table_rows(r["attribution"])
    width = max(len(k) for k, _ in rows)
    print(f"soak bench on {r['machine']['summary']}")
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")


@click.command(help=__doc__)
@click.option("--servers", default="1,2,4,8", show_default=True, help="Server counts to time.")
@click.option("--iterations", type=int, default=8, show_default=True)
@click.option("--out", default=str(RESULTS / "bench.json"), show_default=True)
@click.option(
    "--traffic-servers", default="1,4", show_default=True, help="Server counts of traffic."
)
@click.option("--lifecycle-only", metavar="JSON", hidden=True)
@click.option("--traffic-only", metavar="JSON", hidden=True)
def main(
    servers: str,
    iterations: int,
    out: str,
    traffic_servers: str,
    lifecycle_only: str | None,
    traffic_only: str | None,
) -> None:
    counts = [int(s) for s in servers.split(",")]
    if lifecycle_only:
        Path(lifecycle_only).write_text(json.dumps(measure.lifecycle(counts, iterations)))
        os._exit(0)  # Triton's threads may hold the interpreter at exit
    if traffic_only:
        Path(traffic_only).write_text(json.dumps(measure.traffic(counts, iterations)))
        os._exit(0)
    traffic_counts = [int(s) for s in traffic_servers.split(",")]
    machine = {
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    machine["summary"] = (
        f"{machine['cpus']} CPUs, {mib(machine['memory_bytes'])} RAM, Python {machine['python']}"
    )
    result: dict[str, Any] = {"machine": machine, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    steps = [
        ("footprint", measure.footprint),
        ("sampler", measure.sampler),
        ("store", measure.store),
        ("analysis", measure.analysis),
        ("lifecycle", lambda: measure.lifecycle_child(counts, iterations)),
        ("attribution", attribution.attribution),
        ("traffic", lambda: measure.lifecycle_child(traffic_counts, iterations, "traffic")),
    ]
    for name, fn in steps:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        result[name] = fn()
        print(f"bench: {name} done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print_table(result)
    print(f"wrote {path}")
