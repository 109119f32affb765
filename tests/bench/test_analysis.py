"""soak.bench.analysis: the power report reads a real run's noise when the file is there; the
trend benchmark reports seconds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from soak.analysis.power import ar1_noise
from soak.bench.analysis import (
    LEAK_PER_SERVER,
    POWER_MAX_ITERATIONS,
    POWER_RULE,
    SERVERS,
    load_rss_noise,
    rss_power_report,
    trend_seconds,
)

KiB = 1024.0


def test_power_rule_can_catch_the_leak_the_default_rule_cannot() -> None:
    from soak.profile import MEMORY_METRICS

    leak = LEAK_PER_SERVER * SERVERS
    default_slope, _ = MEMORY_METRICS["rss_bytes"]
    assert default_slope >= leak  # the default threshold would never flag this leak
    assert POWER_RULE.slope_per_iteration == leak / 4
    assert POWER_RULE.growth_budget >= leak * POWER_MAX_ITERATIONS * 4


def test_without_the_file_the_noise_is_ar1(tmp_path: Path) -> None:
    source, real, noise = load_rss_noise(tmp_path / "absent.json")
    assert not real and "AR(1)" in source
    assert np.std(noise) == np.std(ar1_noise(noise.size, 0.6, 150 * KiB, 0))


def test_report_reads_a_real_run_file(tmp_path: Path) -> None:
    n = 500
    idx = np.arange(n)
    rss = 400e6 - 15e6 * np.exp(-idx / 3.0) + ar1_noise(n, 0.5, 120 * KiB, seed=8)
    values: list[float | None] = [float(v) for v in np.round(rss)]
    values[50] = None  # a missed sample
    path = tmp_path / "rss_noise_n4.json"
    path.write_text(
        json.dumps({"source": "test run 7", "iterations": idx.tolist(), "rss_bytes": values})
    )
    source, real, noise = load_rss_noise(path)
    assert real and "test run 7" in source
    assert noise.size < n - 10  # warm-up cut and the missing sample dropped
    assert np.std(noise) < 2 * 120 * KiB  # the warm-up ramp is not part of the noise

    report = rss_power_report(path, reps=10, needed=9, series=20)
    assert report.real_noise and report.leak_per_iteration == 256 * KiB
    assert report.power.iterations is not None and report.power.iterations < 40
    assert set(report.false_alarm_rates) == {report.power.iterations, POWER_MAX_ITERATIONS}
    assert all(0 <= r < 0.1 for r in report.false_alarm_rates.values())
    assert math.isfinite(report.power.block) and report.power.block >= 1


def test_trend_benchmark_reports_seconds() -> None:
    # Timings are printed for information (-s), never asserted.
    for n in (1_000, 10_000, 100_000):
        seconds = trend_seconds(n)
        assert math.isfinite(seconds) and seconds > 0
        print(f"trend_seconds({n}) = {seconds:.3f} s")
