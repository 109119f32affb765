"""`make bench` part for attribution: what memray costs a run, and what reading it costs.

Side by side, two supervised runs of the cpu workload (N servers, same iterations): the time
from one quiet point to the next without and with `--attribute`, and their ratio (target:
at most 2x); the capture's bytes per traced iteration and the time the supervisor took to
read it into sites; and the time to judge the sites of a 250-iteration run (synthetic series
in a real store, judged by `soak.run_analysis.analyze_sites` as `soak analyze` does).
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np


def _quiet_intervals(db: Any, run_id: int, warmup: int) -> list[float]:
    """Seconds between consecutive quiet points after the warm-up: the whole iteration,
    quiet-point sampling and attribution's hold included."""
    elapsed = [
        r[0]
        for r in db.execute(
            "SELECT elapsed_s FROM samples WHERE run_id = ? AND kind = 'quiet' AND iteration >= ? "
            "ORDER BY iteration",
            [run_id, warmup],
        )
    ]
    return [b - a for a, b in zip(elapsed, elapsed[1:], strict=False)]


def overhead(servers: int = 4, iterations: int = 8, warmup: int = 1) -> dict[str, Any]:
    from soak import profile as profiles
    from soak.runner import session
    from soak.store import Store

    out: dict[str, Any] = {"servers": servers, "iterations": iterations, "warmup": warmup}
    with tempfile.TemporaryDirectory(prefix="soak-bench-attr-") as tmp:
        store = Store(Path(tmp) / "bench.db")
        cpu = profiles.load("cpu")
        base = replace(cpu, run={**cpu.run, "warmup": warmup}).with_overrides(
            servers=servers, iterations=iterations
        )
        for label, prof in (("plain", base), ("attributed", base.with_attribution())):
            (outcome,) = session.run(prof, store)  # the cell's analysis: run id and status
            steps = _quiet_intervals(store.db, outcome.run_id, warmup)
            out[f"{label}_iteration_s"] = statistics.median(steps) if steps else None
            out[f"{label}_status"] = outcome.status
            if label == "attributed":
                (message,) = store.db.execute(
                    "SELECT message FROM events WHERE run_id = ? AND kind = 'attribution'",
                    [outcome.run_id],
                ).fetchone()
                out["attribution_event"] = message
                size = re.search(r"from (\d+) bytes", message)
                read = re.search(r"read in ([0-9.]+) s", message)
                traced = iterations - warmup
                out["capture_bytes_per_iteration"] = int(size.group(1)) / traced if size else None
                out["read_s_per_iteration"] = float(read.group(1)) / traced if read else None
        store.close()
    if out.get("plain_iteration_s") and out.get("attributed_iteration_s"):
        out["ratio"] = out["attributed_iteration_s"] / out["plain_iteration_s"]
    return out


def site_analysis(iterations: int = 250, sites: int = 50, seed: int = 0) -> dict[str, Any]:
    """Seconds to load and judge the stored sites of a run of `iterations` quiet points."""
    from soak.run_analysis import analyze_sites
    from soak.store import Store, run_row

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="soak-bench-sites-") as tmp:
        store = Store(Path(tmp) / "sites.db")
        run_id = store.create_run({"profile": "bench", "config": {"attribution": {}}})
        rows, samples = [], []
        for site in range(1, sites + 1):
            rows.append({"site_id": site, "stack_key": str(site), "frames": [], "summary": "x"})
        level = rng.integers(1_000, 1_000_000, sites)
        growth = np.where(np.arange(sites) < 3, 4096, 0)
        for it in range(iterations):
            live = level + growth * it + rng.normal(0, 500, sites).astype(int)
            count = 9 + (growth > 0) * it  # a growing site keeps one allocation more each time
            samples += [
                {
                    "iteration": it,
                    "site_id": s + 1,
                    "live_bytes": int(live[s]),
                    "live_count": int(count[s]),
                }
                for s in range(sites)
            ]
            samples.append(
                {"iteration": it, "site_id": 0, "live_bytes": int(live.sum()), "live_count": 99}
            )
        store.write_sites(run_id, rows, samples)
        started = time.perf_counter()
        judged, _ = analyze_sites(store.db, run_row(store.db, run_id), [])
        seconds = time.perf_counter() - started
        store.close()
    return {
        "iterations": iterations,
        "sites": sites,
        "seconds": seconds,
        "growing_found": sum(1 for f in judged if f.verdict == "leak"),
    }


def attribution(servers: int = 4, iterations: int = 8) -> dict[str, Any]:
    return {"overhead": overhead(servers, iterations), "analysis": site_analysis()}


def table_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    o, a = r["overhead"], r["analysis"]
    rows = []
    if o.get("ratio") is not None:
        rows.append(
            (
                f"iteration N={o['servers']} without / with --attribute",
                f"{o['plain_iteration_s']:.2f} s / {o['attributed_iteration_s']:.2f} s "
                f"(x{o['ratio']:.2f}, target <= 2)",
            )
        )
    if o.get("capture_bytes_per_iteration") is not None:
        rows.append(
            (
                "memray capture per traced iteration",
                f"{o['capture_bytes_per_iteration'] / 1024:.0f} KiB",
            )
        )
    if o.get("read_s_per_iteration") is not None:
        traced = o["iterations"] - o["warmup"]
        rows.append(
            (
                f"capture read into sites, {traced} traced iterations",
                f"{o['read_s_per_iteration'] * traced:.1f} s "
                f"({o['read_s_per_iteration']:.3f} s each; a short run is mostly fixed cost: "
                "a 250-iteration cpu run read in 26 s, README)",
            )
        )
    rows.append(
        (
            f"judging {a['sites']} sites of a {a['iterations']}-iteration run",
            f"{a['seconds']:.3f} s",
        )
    )
    return rows
