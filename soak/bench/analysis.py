"""Benchmarks of the analysis for ``make bench``: its speed on a stored run and on a bare
series, and its power.

:func:`bench_run_analysis` writes a temporary database with n synthetic quiet points through
:class:`soak.store.Store` (its schema, its transaction), then times
:func:`soak.run_analysis.analyze_run` exactly as ``soak analyze`` runs it; writing is not timed.
:func:`rss_power_report` measures how many iterations the verdict needs to catch a native leak of
64 KiB per server lifecycle at N=4, and how often it fails a clean run, on a real run's RSS noise
(``soak/analysis/data/rss_noise_n4.json``) or, while that file is absent, on AR(1) noise.  This
module, not ``soak.analysis``, does the I/O: the analysis never imports the store.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soak.analysis.change_point import change_point
from soak.analysis.power import (
    PowerResult,
    ar1_noise,
    detection_power,
    false_alarm_rate,
    noise_residuals,
)
from soak.analysis.slope import theil_sen
from soak.analysis.trend_test import mann_kendall
from soak.analysis.verdict import MetricRule
from soak.analysis.warmup import cut_warmup
from soak.run_analysis import analyze_run
from soak.store import SAMPLE_COLUMNS, Store, open_readonly

__all__ = [
    "BENCH_PROFILE",
    "NOISE_PATH",
    "POWER_RULE",
    "RssPowerReport",
    "bench_run_analysis",
    "load_rss_noise",
    "rss_power_report",
    "synthetic_quiet_samples",
    "trend_seconds",
    "write_synthetic_run",
]

KiB = 1024

#: The profile stored with the synthetic run: N=4 CPU servers, default thresholds.
BENCH_PROFILE = """\
description = "synthetic run for the analysis benchmark"
servers = 4
iterations = {iterations}
warmup = 10
"""


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """Stationary AR(1) noise as a truncated moving average (phi**k negligible): no Python loop."""
    taps = max(1, math.ceil(math.log(1e-9) / math.log(phi)))
    innovations = rng.normal(0.0, sd * math.sqrt(1.0 - phi**2), n + taps)
    return np.convolve(innovations, np.power(phi, np.arange(taps)))[taps : taps + n]


def synthetic_quiet_samples(n: int, seed: int = 0) -> dict[str, np.ndarray | None]:
    """Column -> values of n quiet points of a clean N=4 CPU run; None for a NULL column.

    Realistic in what makes analysis costly or cheap: RSS, USS, PSS, heap and tracemalloc
    noisy and autocorrelated after a warm-up, counters constant (gc_objects noisy), shared
    memory and GPU columns empty.
    """
    rng = np.random.default_rng(seed)
    idx = np.arange(n, dtype=float)
    warm = np.exp(-idx / 4.0)
    rss = 310e6 - 9e6 * warm + _ar1(rng, n, 0.6, 150 * KiB)
    own = _ar1(rng, n, 0.3, 20 * KiB)
    inuse = 120e6 - 4e6 * warm + _ar1(rng, n, 0.5, 90 * KiB)
    cols: dict[str, np.ndarray | None] = {
        "rss_bytes": np.round(rss),
        "uss_bytes": np.round(rss - 40e6 + own),
        "pss_bytes": np.round(rss - 25e6 + 0.5 * own),
        "vms_bytes": np.full(n, 2.1e9),
        "fds": np.full(n, 57.0),
        "threads": np.full(n, 23.0),
        "children": np.zeros(n),
        "children_rss_bytes": np.zeros(n),
        "stubs_alive": np.zeros(n),
        "shm_regions": np.zeros(n),
        "shm_bytes": np.zeros(n),
        "sample_cost_s": 0.004 + 0.001 * rng.random(n),
        "tracemalloc_bytes": np.round(6.2e6 + _ar1(rng, n, 0.4, 3 * KiB)),
        "tracemalloc_peak_bytes": np.round(9.5e6 + _ar1(rng, n, 0.4, 30 * KiB)),
        "gc_objects": np.round(118_000 + rng.normal(0.0, 150.0, n)),
        "mallinfo_inuse_bytes": np.round(inuse),
        "mallinfo_free_bytes": np.round(30e6 + _ar1(rng, n, 0.5, 200 * KiB)),
        "gpu_process_bytes": None,
        "gpu_used_bytes": None,
        "client_rss_bytes": None,  # in-process: the client is the server
        "client_fds": None,
        "client_threads": None,
    }
    return cols


def write_synthetic_run(store: Store, n: int, seed: int = 0) -> int:
    """Write one finished run of n iterations (one quiet point each) and return its id."""
    text = BENCH_PROFILE.format(iterations=max(n, 1))
    run = {
        "servers": 4,
        "iterations": n,
        "warmup": 10,
        "memory_type": "system",
        "instance_kind": "cpu",
        "inferences_per_model": 10,
        "datatype": "int32",
    }
    run_id = store.create_run(
        {
            "profile": "bench",
            "profile_source": "<bench>",
            "profile_text": text,
            "servers": 4,
            "iterations_planned": n,
            "memory_type": "system",
            "instance_kind": "cpu",
            "inferences_per_model": 10,
            "datatype": "int32",
            "config": json.dumps({"name": "bench", "source": "<bench>", "run": run}),
        }
    )
    cols = synthetic_quiet_samples(n, seed)
    names = list(SAMPLE_COLUMNS)
    # Python ints and floats (or None), as the supervisor writes them.
    columns = []
    for name in names:
        values = cols[name]
        if values is None:
            columns.append([None] * n)
        elif SAMPLE_COLUMNS[name] is int:
            columns.append(values.astype(np.int64).tolist())
        else:
            columns.append(values.tolist())
    t0 = time.time()
    sample_rows = [
        (run_id, it, "quiet", t0 + it, float(it), *row)
        for it, row in zip(range(n), zip(*columns, strict=True), strict=True)
    ]
    iteration_rows = [(run_id, it, t0 + it, 1.0, 4, 8, 80, 0) for it in range(n)]
    sample_sql = (
        "INSERT INTO samples (run_id, iteration, kind, t, elapsed_s, "
        + ", ".join(names)
        + ") VALUES ("
        + ", ".join("?" * (5 + len(names)))
        + ")"
    )
    iteration_sql = (
        "INSERT INTO iterations (run_id, iteration, ended_at, wall_s, server_lifecycles, "
        "model_loads, inferences, failures) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    with store.transaction():
        store.conn.executemany(iteration_sql, iteration_rows)
        store.conn.executemany(sample_sql, sample_rows)
    store.update_run(run_id, status="passed", iterations_done=n, ended_at=time.time())
    return run_id


def bench_run_analysis(n: int, seed: int = 0) -> float:
    """Seconds `analyze_run` takes on a stored clean run of n quiet samples (all metrics).

    The database lives in a temporary directory and is opened read-only for the analysis, as
    ``soak analyze`` opens it; writing it is not timed.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    with tempfile.TemporaryDirectory(prefix="soak-bench-") as tmp:
        path = Path(tmp) / "bench.db"
        store = Store(path)
        try:
            run_id = write_synthetic_run(store, n, seed)
        finally:
            store.close()
        db = open_readonly(path)
        try:
            begin = time.perf_counter()
            analyze_run(db, run_id)
            return time.perf_counter() - begin
        finally:
            db.conn.close()


# -- detection power ------------------------------------------------------------------------

#: A real N=4 CPU run's quiet-point RSS: {"source": ..., "iterations": [...], "rss_bytes": [...]}.
NOISE_PATH = Path(__file__).resolve().parent.parent / "analysis" / "data" / "rss_noise_n4.json"
#: Warm-up of the real run cut before its residuals are taken (extended by cut_warmup), unless
#: the file gives its own "warmup".
NOISE_WARMUP = 10
SERVERS = 4
LEAK_PER_SERVER = 64 * KiB
#: The rule of the power experiment. The default rss rule (256 KiB/iteration) equals this very
#: leak at N=4 and could never flag it; a user hunting 64 KiB per server at N=4 would set the
#: threshold to a quarter of it, 64 KiB/iteration, and leave the growth budget out of play.
POWER_RULE = MetricRule(
    "rss_bytes", "memory", slope_per_iteration=64 * KiB, growth_budget=float(1 << 30)
)
#: Warm-up of each synthetic run (its noise is stationary, so this only costs samples).
POWER_WARMUP = 10
POWER_MAX_ITERATIONS = 400
#: AR(1) stand-in for the real noise while the file is absent.
AR1_PHI = 0.6
AR1_SD = 150 * KiB
AR1_LENGTH = 2000


@dataclass(frozen=True)
class RssPowerReport:
    """What ``make bench`` reports about the verdict's power on RSS."""

    noise_source: str
    real_noise: bool
    noise_samples: int
    leak_per_iteration: float
    rule: MetricRule
    warmup: int
    power: PowerResult
    #: Run length after the warm-up -> share of clean runs judged "leak".
    false_alarm_rates: dict[int, float]
    false_alarm_series: int


def load_rss_noise(path: Path = NOISE_PATH, seed: int = 0) -> tuple[str, bool, np.ndarray]:
    """(description, is real, residuals): the real run's noise if the file exists, else AR(1)."""
    if path.is_file():
        data = json.loads(path.read_text())
        residuals = noise_residuals(
            [math.nan if v is None else v for v in data["rss_bytes"]],
            int(data.get("warmup", NOISE_WARMUP)),
            data.get("iterations"),
        )
        return f"real run: {data.get('source', path.name)}", True, residuals
    noise = ar1_noise(AR1_LENGTH, AR1_PHI, AR1_SD, seed)
    text = f"AR(1) noise, phi {AR1_PHI}, sd {AR1_SD / KiB:.0f} KiB ({path.name} absent)"
    return text, False, noise


def rss_power_report(
    path: Path = NOISE_PATH, seed: int = 0, reps: int = 20, needed: int = 19, series: int = 100
) -> RssPowerReport:
    """Iterations needed to catch 64 KiB/server at N=4, and false-alarm rates of clean runs.

    False alarms are counted on ``series`` clean synthetic runs (same noise and rule) as long as
    the run the leak needed and as long as :data:`POWER_MAX_ITERATIONS`.
    """
    source, real, noise = load_rss_noise(path, seed)
    leak = float(LEAK_PER_SERVER * SERVERS)
    power = detection_power(
        noise, leak, POWER_RULE, POWER_WARMUP, reps, needed, POWER_MAX_ITERATIONS, seed
    )
    lengths = sorted({power.iterations or POWER_MAX_ITERATIONS, POWER_MAX_ITERATIONS})
    rates = {n: false_alarm_rate(noise, POWER_RULE, POWER_WARMUP, n, series, seed) for n in lengths}
    return RssPowerReport(
        source, real, int(noise.size), leak, POWER_RULE, POWER_WARMUP, power, rates, series
    )


def trend_seconds(n: int, seed: int = 0) -> float:
    """Seconds to run the whole trend analysis once on a synthetic n-point RSS-like series.

    The series is 300 MB plus AR(1) noise (phi 0.7, sd 200 KiB), a warm-up ramp and a leak of
    4 KiB per iteration starting halfway. Used by benchmarks, never asserted by tests.
    """
    rng = np.random.default_rng(seed)
    innovations = rng.normal(0.0, 200 * 1024 * math.sqrt(1 - 0.7**2), n)
    # AR(1) as a truncated moving average (0.7**200 is negligible): no Python loop.
    noise = np.convolve(innovations, np.power(0.7, np.arange(min(n, 200))))[:n]
    idx = np.arange(n, dtype=float)
    y = 300e6 + noise - 8e6 * np.exp(-idx / 5.0) + 4096.0 * np.maximum(0.0, idx - n / 2)
    begin = time.perf_counter()
    cut = cut_warmup(y, min(10, n // 10))
    part = y[cut:]
    theil_sen(idx[cut:], part)
    mann_kendall(part)
    change_point(part)
    return time.perf_counter() - begin
