"""Tests of soak.analysis.power: detection power and false alarms on AR(1) noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from soak.analysis.power import (
    ar1_noise,
    block_bootstrap,
    block_length,
    detection_power,
    false_alarm_rate,
    noise_residuals,
)
from soak.analysis.verdict import MetricRule

KiB = 1024.0
# The rule a user would set to catch 64 KiB per server at N=4 (a quarter of the leak).
RULE = MetricRule("rss_bytes", "memory", slope_per_iteration=64 * KiB, growth_budget=2.0**30)


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    return ar1_noise(2000, phi=0.6, sd=150 * KiB, seed=11)


def lag1(e: np.ndarray) -> float:
    c = e - e.mean()
    return float(c[1:] @ c[:-1] / (c @ c))


def test_ar1_noise_has_the_asked_sd_and_correlation() -> None:
    e = ar1_noise(20_000, phi=0.6, sd=150 * KiB, seed=1)
    assert np.std(e) == pytest.approx(150 * KiB, rel=0.05)
    assert lag1(e) == pytest.approx(0.6, abs=0.03)
    assert np.array_equal(e, ar1_noise(20_000, phi=0.6, sd=150 * KiB, seed=1))


def test_block_length_follows_the_memory_of_the_noise() -> None:
    white = np.random.default_rng(0).normal(size=2000)
    assert block_length(white) <= 3
    b = block_length(ar1_noise(2000, phi=0.6, seed=2))
    assert 8 <= b <= 40  # Politis-White for phi 0.6, n 2000 is about 20
    assert block_length(ar1_noise(2000, phi=0.9, seed=2)) > b
    assert block_length(np.zeros(100)) == 1
    with pytest.raises(ValueError):
        block_length(np.zeros(5))


def test_block_bootstrap_keeps_values_and_autocorrelation(noise: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    draw = block_bootstrap(noise, 50_000, block_length(noise), rng)
    assert draw.size == 50_000
    assert np.isin(draw, noise).all()
    assert lag1(draw) == pytest.approx(lag1(noise), abs=0.05)
    # Blocks of one point forget the correlation: the block length is what keeps it.
    assert abs(lag1(block_bootstrap(noise, 50_000, 1, rng))) < 0.03


def test_noise_residuals_cut_warmup_and_remove_the_line() -> None:
    n = 300
    idx = np.arange(n, dtype=float)
    e = ar1_noise(n, seed=4)
    y = 300e6 - 20e6 * np.exp(-idx / 6.0) + 3 * KiB * idx + e
    y[100] = math.nan
    resid = noise_residuals(list(y), warmup=2)
    # cut_warmup walks in blocks of ceil(m / 20) = 15 points; the ramp is > 3 sd until ~23.
    cut = n - 1 - resid.size
    assert 17 <= cut <= 47
    assert abs(np.median(resid[:10])) < 3 * 150 * KiB
    slope = np.polyfit(np.arange(resid.size), resid, 1)[0]
    assert abs(slope) < 0.2 * KiB
    assert np.std(resid) == pytest.approx(np.std(e), rel=0.2)
    with pytest.raises(ValueError):
        noise_residuals(np.ones(15), warmup=0)


def test_big_leak_is_detected_quickly(noise: np.ndarray) -> None:
    result = detection_power(noise, 1024 * KiB, RULE, warmup=10)
    assert result.iterations is not None and result.iterations <= 10
    assert result.detections[result.iterations] >= 19
    # The search stops at the boundary: one iteration less fell short (or was never enough).
    below = result.detections.get(result.iterations - 1)
    assert below is None or below < 19


def test_leak_at_the_threshold_needs_more_iterations_than_a_big_one(noise: np.ndarray) -> None:
    big = detection_power(noise, 256 * KiB, RULE, warmup=10)
    small = detection_power(noise, 96 * KiB, RULE, warmup=10)
    assert big.iterations is not None and small.iterations is not None
    assert big.iterations < small.iterations <= 400


def test_no_leak_is_never_detected(noise: np.ndarray) -> None:
    result = detection_power(noise, 0.0, RULE, warmup=10, max_iterations=200)
    assert result.iterations is None
    assert max(result.detections) == 200  # searched up to the limit
    assert all(count <= 1 for count in result.detections.values())


def test_false_alarm_rate_of_clean_series_is_low(noise: np.ndarray) -> None:
    assert false_alarm_rate(noise, RULE, warmup=10, n_iterations=100) < 0.10
    # A rule with no slope margin at all still keeps false alarms rare on autocorrelated noise.
    strict = MetricRule("rss_bytes", "memory", slope_per_iteration=0.0)
    assert false_alarm_rate(noise, strict, warmup=10, n_iterations=100) < 0.15


def test_power_is_deterministic_with_a_seed(noise: np.ndarray) -> None:
    first = detection_power(noise, 128 * KiB, RULE, warmup=5, seed=7)
    again = detection_power(noise, 128 * KiB, RULE, warmup=5, seed=7)
    assert first == again
    assert false_alarm_rate(noise, RULE, 5, 60, series=30, seed=7) == false_alarm_rate(
        noise, RULE, 5, 60, series=30, seed=7
    )


def test_power_arguments_are_checked(noise: np.ndarray) -> None:
    with pytest.raises(ValueError):
        detection_power(noise, 1.0, RULE, warmup=10, reps=20, needed=21)
    with pytest.raises(ValueError):
        detection_power(np.zeros(10), 1.0, RULE, warmup=10)
    with pytest.raises(ValueError):
        false_alarm_rate(noise, RULE, warmup=10, n_iterations=0)
