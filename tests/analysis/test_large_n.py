"""Large-n paths of the trend statistics (soak.analysis slope, trend_test, warmup) agree with
exact/small-n results within tolerances."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soak.analysis import slope, trend_test
from soak.analysis.slope import EXACT_PAIRS_MAX_N, SAMPLED_PAIRS, theil_sen
from soak.analysis.trend_test import DIRECT_S_MAX_N, MK_MAX_POINTS, mann_kendall
from soak.analysis.verdict import MetricRule, Series, judge
from soak.analysis.warmup import cut_warmup

KiB = 1024.0
FAST = settings(max_examples=40, deadline=None, derandomize=True)
Z95 = 1.959963984540054


def ar1(seed: int, n: int, phi: float = 0.7, sd: float = 1.0) -> np.ndarray:
    """Stationary AR(1) noise, as a truncated moving average (no Python loop)."""
    rng = np.random.default_rng(seed)
    taps = int(math.log(1e-9) / math.log(phi)) + 1
    shocks = rng.normal(0.0, sd * math.sqrt(1 - phi**2), n + taps)
    return np.convolve(shocks, phi ** np.arange(taps))[taps : n + taps]


def brute_s(y: np.ndarray) -> int:
    """sum_{i<j} sign(y_j - y_i), row block by row block (no n x n matrix)."""
    total = 0
    for i in range(y.size - 1):
        total += int(np.sign(y[i + 1 :] - y[i]).sum())
    return total


def exact_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(low, median, high) from every pair: Sen's 95 % bounds by scipy's rank formula, no ties."""
    n = y.size
    i, j = np.triu_indices(n, 1)
    keep = x[j] != x[i]
    slopes = np.sort((y[j] - y[i])[keep] / (x[j] - x[i])[keep])
    m = slopes.size
    z = Z95
    sigma = math.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)
    high = slopes[min(int(np.round((m + z * sigma) / 2)), m - 1)]
    low = slopes[max(int(np.round((m - z * sigma) / 2)) - 1, 0)]
    return float(low), float(np.median(slopes)), float(high)


# --- Mann-Kendall S ---------------------------------------------------------------------------


@FAST
@given(ys=st.lists(st.integers(-20, 20), min_size=DIRECT_S_MAX_N + 1, max_size=3 * DIRECT_S_MAX_N))
def test_radix_s_matches_brute_force_with_ties(ys: list[int]) -> None:
    y = np.asarray(ys, dtype=float)
    assert trend_test._kendall_s(y) == brute_s(y)


@pytest.mark.parametrize("n", [DIRECT_S_MAX_N + 1, 1000, 6000])
@pytest.mark.parametrize("kind", ["continuous", "few_values", "monotone", "constant"])
def test_radix_s_is_exact(n: int, kind: str) -> None:
    rng = np.random.default_rng(n)
    y = {
        "continuous": rng.normal(size=n),
        "few_values": rng.integers(0, 3, n).astype(float),
        "monotone": -np.arange(n, dtype=float),
        "constant": np.full(n, 7.0),
    }[kind]
    assert trend_test._kendall_s(y) == brute_s(y)


# --- Theil-Sen above EXACT_PAIRS_MAX_N ---------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_sampled_interval_contains_the_exact_one_at_n3000(seed: int) -> None:
    n = 3000
    x = np.arange(n, dtype=float)
    y = 0.5 * x + ar1(seed, n, phi=0.7, sd=300.0)
    est = theil_sen(x, y)
    low, median, high = exact_sen(x, y)
    width = high - low
    assert not est.exact and est.n == n
    # Honest: each sampled bound is pushed out by 2 standard errors of a sample quantile, so
    # it lies outside the exact bound (p ~ 0.977 each); the widening is 1/sqrt(M) in rank
    # fraction, about 4 % of the width per side at n = 3000 (documented as 8 % in all).
    assert est.low <= low and est.high >= high
    expected = (1 / math.sqrt(SAMPLED_PAIRS)) / (Z95 * math.sqrt(2 * n**3 / 18) / n**2 * 2)
    assert expected == pytest.approx(0.042, abs=0.005)
    assert (low - est.low) / width < expected + 0.06
    assert (est.high - high) / width < expected + 0.06
    # The point estimate: one standard error is about 2 % of the width.
    assert abs(est.slope - median) < 0.06 * width


def test_sampled_slopes_handle_any_x() -> None:
    n = EXACT_PAIRS_MAX_N + 500
    rng = np.random.default_rng(5)
    y_grid = 2.0 * np.arange(n) + rng.normal(0, 50, n)
    cases = {
        "grid of step 3": (3.0 * np.arange(n) + 10, y_grid),
        "fractional step": (0.1 * np.arange(n), y_grid),
        "irregular": (np.cumsum(rng.uniform(0.5, 1.5, n)), y_grid),
        "unsorted with ties": (rng.integers(0, n // 2, n).astype(float), rng.normal(size=n)),
    }
    for name, (x, y) in cases.items():
        est = theil_sen(x, y)
        low, median, high = exact_sen(x, y)
        width = high - low
        assert est.low <= est.slope <= est.high, name
        assert abs(est.slope - median) < 0.1 * width, name
        # Ties in x leave fewer usable pairs; their bounds are Sen's with the tie correction,
        # a little narrower than the no-tie formula used here, so only check closeness.
        assert abs(est.low - low) < 0.25 * width, name
        assert abs(est.high - high) < 0.25 * width, name


def test_constant_series_fast_path_gives_the_exact_answer() -> None:
    for n in (10, EXACT_PAIRS_MAX_N + 1, 100_000):
        x = np.arange(n, dtype=float)
        est = theil_sen(x, np.full(n, 5.0))
        assert (est.slope, est.low, est.high, est.intercept, est.exact) == (0, 0, 0, 5.0, True)
    tied_x = theil_sen([0.0, 0.0, 1.0, 2.0], [5.0] * 4)
    assert tied_x.slope == 0 and math.isnan(tied_x.low) and math.isnan(tied_x.high)


@FAST
@given(
    values=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50),
    repeats=st.integers(1, 4000),
    ks=st.lists(st.floats(0, 1), min_size=1, max_size=4),
)
def test_order_statistics_are_exact(values: list[float], repeats: int, ks: list[float]) -> None:
    rng = np.random.default_rng(repeats)
    a = rng.permutation(np.repeat(np.asarray(values), repeats))
    kth = sorted({int(k * (a.size - 1)) for k in ks})
    np.testing.assert_array_equal(slope._order_statistics(a, kth), np.sort(a)[kth])


def test_order_statistics_are_exact_on_structured_input() -> None:
    a = np.r_[np.arange(300_000.0), np.zeros(100_000), np.arange(200_000.0)[::-1]]
    kth = [0, 1000, 299_999, 300_000, 599_999]
    np.testing.assert_array_equal(slope._order_statistics(a, kth), np.sort(a)[kth])


# --- Mann-Kendall on block medians -------------------------------------------------------------


def test_block_test_is_off_by_default_and_within_max_points() -> None:
    y = ar1(1, 3 * MK_MAX_POINTS // 2) + 1e-4 * np.arange(3 * MK_MAX_POINTS // 2)
    full = mann_kendall(y)
    assert full.block == 1 and full.s == mann_kendall(y, max_points=y.size).s
    blocked = mann_kendall(y, max_points=MK_MAX_POINTS)
    assert blocked.block == 2 and blocked.n == y.size
    small = ar1(2, 500)
    assert mann_kendall(small, max_points=MK_MAX_POINTS) == mann_kendall(small)
    with pytest.raises(ValueError):
        mann_kendall(small, max_points=2)


def test_block_test_agrees_with_the_full_test() -> None:
    n = 40_000
    idx = np.arange(n, dtype=float)
    for seed, beta in [(1, 0.0), (2, 0.0), (3, 2e-5), (4, 5e-5), (5, -5e-5)]:
        y = ar1(seed, n, phi=0.6) + beta * idx
        full = mann_kendall(y)
        blocked = mann_kendall(y, max_points=MK_MAX_POINTS)
        assert blocked.block == 4
        # Same question, nearly the same answer: z within 25 %, decisions agree when clear.
        assert blocked.z == pytest.approx(full.z, rel=0.25, abs=0.6), (seed, beta)
        if full.p_value < 1e-4:
            assert blocked.p_value < 1e-2 and np.sign(blocked.s) == np.sign(full.s)
        if full.p_value > 0.2:
            assert blocked.p_value > 0.02


def test_block_test_keeps_its_level_on_autocorrelated_noise() -> None:
    runs = 60
    rejected = sum(
        mann_kendall(ar1(100 + seed, 25_000, phi=0.7), max_points=MK_MAX_POINTS).p_value < 0.05
        for seed in range(runs)
    )
    assert rejected / runs < 0.12


def test_given_trend_slope_is_what_the_test_would_compute() -> None:
    n = 1500
    y = ar1(9, n) + 0.01 * np.arange(n)
    slope = theil_sen(np.arange(n, dtype=float), y).slope
    assert mann_kendall(y, trend_slope=slope) == mann_kendall(y)


# --- the verdict at large n agrees with the verdict at small n ---------------------------------


def test_cut_warmup_of_constant_series_is_the_profiles() -> None:
    assert cut_warmup(np.full(100_000, 3.0), 10) == 10


@pytest.mark.parametrize("leak", [0.0, 2 * KiB])
def test_judge_at_large_n_agrees_with_small_n(leak: float) -> None:
    rule = MetricRule("rss_bytes", "memory", slope_per_iteration=1 * KiB)
    findings = {}
    for n in (1_500, 60_000):
        # One noise path for both lengths (150 KiB sd): the short run is a prefix of the long.
        values = 300e6 + ar1(11, 60_000, phi=0.6, sd=150 * KiB)[:n] + leak * np.arange(n)
        findings[n] = judge(Series("rss_bytes", np.arange(n), values), rule, warmup=10)
    short, long = findings[1_500], findings[60_000]
    assert short.verdict == long.verdict == ("leak" if leak else "pass")
    assert long.slope == pytest.approx(leak, abs=0.05 * KiB)
    assert long.slope_low <= leak <= long.slope_high or not leak
    assert long.slope_high - long.slope_low < short.slope_high - short.slope_low
    assert long.n_used == 60_000 - 10


def test_judge_of_constant_and_missing_series_is_quick_and_plain() -> None:
    n = 100_000
    it = np.arange(n)
    counter = judge(Series("threads", it, np.full(n, 40.0)), MetricRule("threads", "counter"), 5)
    assert counter.verdict == "pass" and counter.slope == 0 and counter.p_value == 1.0
    shm = judge(
        Series("shm_bytes", it, np.zeros(n)),
        MetricRule("shm_bytes", "memory", slope_per_iteration=0.0, growth_budget=0.0),
        5,
    )
    assert shm.verdict == "pass" and shm.slope_low == 0
    gpu = judge(
        Series("gpu_used_bytes", it, np.full(n, np.nan)),
        MetricRule("gpu_used_bytes", "memory", slope_per_iteration=1.0),
        5,
    )
    assert gpu.verdict == "no_data"
