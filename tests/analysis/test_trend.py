"""Tests of the trend statistics (soak.analysis slope, trend_test, warmup, change_point):
scipy agreement, properties on realistic RSS noise, big-n paths."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soak.analysis import slope
from soak.analysis.change_point import change_point
from soak.analysis.slope import EXACT_PAIRS_MAX_N, theil_sen
from soak.analysis.trend_test import mann_kendall
from soak.analysis.warmup import cut_warmup
from tests.analysis.noise import rss_noise

KiB = 1024.0
FAST = settings(max_examples=30, deadline=None, derandomize=True)


def brute_s(y: np.ndarray) -> int:
    signs = np.sign(y[None, :] - y[:, None])
    return int(np.triu(signs, 1).sum())


# --- Theil-Sen -------------------------------------------------------------------------------


# n=4 draws x all tied: scipy warns and returns NaN everywhere, as we do.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("n", [3, 4, 17, 60, 400, EXACT_PAIRS_MAX_N])
def test_theil_sen_matches_scipy_with_ties(n: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(n)
    x = rng.integers(0, max(2, n // 2), n).astype(float)  # ties in x
    y = np.round(rng.normal(size=n) + 0.1 * x, 1)  # ties in y
    ours = theil_sen(x, y, alpha=0.05)
    ref = stats.theilslopes(y, x, 0.95, method="separate")
    assert ours.exact
    np.testing.assert_allclose(
        [ours.slope, ours.intercept, ours.low, ours.high],
        [ref.slope, ref.intercept, ref.low_slope, ref.high_slope],
        rtol=1e-9,
        atol=1e-12,
    )


@FAST
@given(
    ys=st.lists(st.integers(-5, 5), min_size=3, max_size=40),
    alpha=st.sampled_from([0.01, 0.05, 0.1, 0.2]),
)
def test_theil_sen_matches_scipy_property(ys: list[int], alpha: float) -> None:
    stats = pytest.importorskip("scipy.stats")
    y = np.asarray(ys, dtype=float)
    x = np.arange(y.size, dtype=float)
    ours = theil_sen(x, y, alpha)
    ref = stats.theilslopes(y, x, 1 - alpha)
    np.testing.assert_allclose(
        [ours.slope, ours.intercept, ours.low, ours.high],
        [ref.slope, ref.intercept, ref.low_slope, ref.high_slope],
        rtol=1e-9,
        atol=1e-12,
    )


def test_theil_sen_drops_missing_values() -> None:
    rng = np.random.default_rng(1)
    x = np.arange(30, dtype=float)
    y = 3.0 * x + rng.normal(size=30)
    holey = y.astype(object)
    holey[[2, 11]] = None
    holey[20] = math.nan
    keep = np.ones(30, bool)
    keep[[2, 11, 20]] = False
    assert theil_sen(x, holey) == theil_sen(x[keep], y[keep])
    assert theil_sen(x, holey).n == 27


def test_theil_sen_undefined_cases_are_nan() -> None:
    for est in (
        theil_sen([0.0, 1.0], [1.0, 2.0]),
        theil_sen([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]),
        theil_sen([0.0, 1.0, 2.0, 3.0], [math.nan, 1.0, math.nan, None]),
    ):
        assert all(math.isnan(v) for v in (est.slope, est.intercept, est.low, est.high))
    with pytest.raises(ValueError):
        theil_sen([1.0, 2.0, 3.0], [1.0, 2.0])


def test_theil_sen_is_robust_to_outliers() -> None:
    x = np.arange(50, dtype=float)
    y = 2.0 * x
    y[[5, 17, 33]] += 1e6
    assert theil_sen(x, y).slope == pytest.approx(2.0)


def test_theil_sen_sampled_pairs_close_to_exact() -> None:
    n = 3000
    x = np.arange(n, dtype=float)
    y = 0.5 * x + rss_noise(7, n, sd=300.0)
    sampled = theil_sen(x, y)
    assert not sampled.exact
    assert sampled == theil_sen(x, y)  # fixed seed: deterministic
    i, j = np.triu_indices(n, 1)
    slopes = np.sort((y[j] - y[i]) / (x[j] - x[i]))
    exact_median = float(np.median(slopes))
    width = sampled.high - sampled.low
    assert width > 0
    assert abs(sampled.slope - exact_median) < 0.05 * width
    # Sen's bounds with the exact rank formula, compared with the sampled ones.
    sigma = math.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)  # no ties in x; y is continuous
    z = 1.959963984540054
    hi = slopes[min(int(np.round((slopes.size + z * sigma) / 2)), slopes.size - 1)]
    lo = slopes[max(int(np.round((slopes.size - z * sigma) / 2)) - 1, 0)]
    assert abs(sampled.low - lo) < 0.05 * width
    assert abs(sampled.high - hi) < 0.05 * width


# --- Mann-Kendall ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 10, 34, 100, 500, 1600, 3000])
def test_plain_mann_kendall_matches_scipy_kendalltau(n: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(n)
    y = np.round(rng.normal(size=n) + 0.002 * np.arange(n), 1)  # with ties
    ours = mann_kendall(y, autocorrelation=None, continuity=False)
    ref = stats.kendalltau(np.arange(n), y, method="asymptotic")
    assert not ours.corrected
    assert ours.tau == pytest.approx(ref.statistic, rel=1e-10, abs=1e-14)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-14)
    assert ours.s == brute_s(y)


@FAST
@given(ys=st.lists(st.integers(0, 6), min_size=3, max_size=60))
def test_plain_mann_kendall_property_against_scipy(ys: list[int]) -> None:
    stats = pytest.importorskip("scipy.stats")
    y = np.asarray(ys, dtype=float)
    ours = mann_kendall(y, autocorrelation=None, continuity=False)
    ref = stats.kendalltau(np.arange(y.size), y, method="asymptotic")
    if math.isnan(ref.statistic):  # all values tied
        assert math.isnan(ours.tau)
        assert ours.p_value == 1.0
        return
    assert ours.tau == pytest.approx(ref.statistic, rel=1e-10, abs=1e-14)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-14)
    corrected = mann_kendall(y, autocorrelation=None)
    assert corrected.p_value >= ours.p_value
    expected = math.erfc(max(abs(ours.s) - 1, 0) / math.sqrt(ours.var_s) / math.sqrt(2))
    assert corrected.p_value == pytest.approx(expected, rel=1e-12)


def test_s_of_big_series_is_exact() -> None:
    rng = np.random.default_rng(3)
    for n in (1501, 4097):
        y = rng.integers(0, 40, n).astype(float) + 0.01 * np.arange(n) // 7
        assert mann_kendall(y, None).s == brute_s(y)


def _reference_hamed_rao_factor(y: np.ndarray) -> float:
    """Straight transcription with loops: Sen slope, average ranks, ACF, leading significant run."""
    stats = pytest.importorskip("scipy.stats")
    n = y.size
    idx = np.arange(n, dtype=float)
    slopes = [(y[j] - y[i]) / (j - i) for i in range(n) for j in range(i + 1, n)]
    ranks = stats.rankdata(y - float(np.median(slopes)) * idx)
    centred = ranks - ranks.mean()
    c0 = float(np.sum(centred * centred)) / n
    bound = 1.959963984540054 / math.sqrt(n)
    total = 0.0
    for k in range(1, n):
        rho = float(np.sum(centred[:-k] * centred[k:])) / n / c0
        if abs(rho) <= bound:
            break
        total += (n - k) * (n - k - 1) * (n - k - 2) * rho
    return max(1.0, 1.0 + 2.0 * total / (n * (n - 1) * (n - 2)))


@pytest.mark.parametrize("seed", range(5))
def test_hamed_rao_matches_reference_transcription(seed: int) -> None:
    n = 80
    y = 300e6 + rss_noise(seed, n, phi=0.8) + 1000.0 * np.arange(n)
    plain = mann_kendall(y, None)
    corrected = mann_kendall(y)
    factor = _reference_hamed_rao_factor(y)
    assert corrected.corrected
    assert corrected.variance_factor == pytest.approx(factor, rel=1e-9)
    assert corrected.var_s == pytest.approx(plain.var_s * factor, rel=1e-9)
    assert corrected.s == plain.s


def test_hamed_rao_cuts_false_alarms_on_autocorrelated_noise() -> None:
    plain = corrected = 0
    runs = 150
    for seed in range(runs):
        y = 300e6 + rss_noise(1000 + seed, 200, phi=0.7)
        plain += mann_kendall(y, None).p_value < 0.05
        corrected += mann_kendall(y).p_value < 0.05
    assert plain / runs > 0.25  # the problem is real ...
    assert corrected / runs < 0.12  # ... and the correction removes most of it
    assert corrected < plain / 3


def test_mann_kendall_detects_trend_and_handles_small_or_flat_input() -> None:
    y = 300e6 + rss_noise(5, 60) + 100 * KiB * np.arange(60)
    test = mann_kendall(y)
    assert test.s > 0 and test.p_value < 1e-4 and test.z > 0
    down = mann_kendall(-y)
    assert down.s == -test.s and down.z < 0
    assert math.isnan(mann_kendall([1.0, 2.0]).p_value)
    assert mann_kendall([1.0, 2.0, None, math.nan]).n == 2
    flat = mann_kendall([4.0] * 10)
    assert flat.s == 0 and flat.p_value == 1.0
    with pytest.raises(ValueError):
        mann_kendall(y, autocorrelation="prewhiten")  # type: ignore[arg-type]


# --- warm-up ---------------------------------------------------------------------------------


def test_cut_warmup_finds_end_of_warmup_ramp() -> None:
    n = 120
    idx = np.arange(n)
    cuts = [
        cut_warmup(300e6 + rss_noise(seed, n) - 12e6 * np.exp(-idx / 3.0), 2) for seed in range(20)
    ]
    # The ramp is 3 sigma (600 KiB) above noise until about index 9.
    assert all(6 <= c <= 25 for c in cuts), cuts


def test_cut_warmup_keeps_warmup_of_flat_and_leaking_series() -> None:
    n = 100
    idx = np.arange(n)
    extended = 0
    for seed in range(40):
        extended += cut_warmup(300e6 + rss_noise(seed, n), 3) != 3
        extended += cut_warmup(300e6 + rss_noise(seed, n) + 256 * KiB * idx, 3) != 3
    assert extended / 80 < 0.15


def test_cut_warmup_never_takes_a_shift_that_lasts() -> None:
    # Rises for half the series: not a warm-up, so the profile's warm-up stays.
    y = np.r_[np.linspace(0.0, 50e6, 50), np.full(50, 50e6)] + rss_noise(1, 100)
    assert cut_warmup(y, 4) == 4


@FAST
@given(n=st.integers(0, 40), warmup=st.integers(-3, 60), min_points=st.integers(3, 12))
def test_cut_warmup_bounds(n: int, warmup: int, min_points: int) -> None:
    y = np.r_[np.full(n // 3, -1e7), np.zeros(n - n // 3)] + rss_noise(n, n, sd=10.0)
    cut = cut_warmup(y, warmup, min_points)
    start = min(max(warmup, 0), n)
    assert start <= cut <= n
    if cut > start:
        assert n - cut >= min_points


def test_cut_warmup_ignores_missing_values() -> None:
    n = 120
    y = 300e6 + rss_noise(2, n) - 12e6 * np.exp(-np.arange(n) / 3.0)
    holey = y.copy()
    holey[[0, 4, 50, 90]] = np.nan
    assert abs(cut_warmup(holey, 2) - cut_warmup(y, 2)) <= 6
    assert cut_warmup([math.nan] * 30, 5) == 5


# --- change point ----------------------------------------------------------------------------


@FAST
@given(
    n=st.integers(40, 200),
    where=st.floats(0.15, 0.85),
    seed=st.integers(0, 10_000),
    phi=st.floats(0.5, 0.8),
)
def test_change_point_finds_inserted_step(n: int, where: float, seed: int, phi: float) -> None:
    at = int(where * n)
    y = 300e6 + rss_noise(seed, n, phi=phi)
    y[at:] += 4 * 1024 * KiB  # 4 MiB stays: 20 sigma
    found = change_point(y)
    assert found is not None and abs(found - at) <= 2


def test_change_point_finds_start_of_ramp() -> None:
    n = 150
    idx = np.arange(n)
    for seed in range(10):
        y = 300e6 + rss_noise(seed, n) + 300 * KiB * np.maximum(0, idx - 70)
        found = change_point(y)
        assert found is not None and abs(found - 70) <= 6


def test_change_point_linear_growth_starts_at_first_sample() -> None:
    y = np.r_[math.nan, math.nan, 300e6 + 500 * KiB * np.arange(60) + rss_noise(3, 60)]
    assert change_point(y) == 2


def test_change_point_none_for_flat_or_falling() -> None:
    found = sum(change_point(300e6 + rss_noise(seed, 100)) is not None for seed in range(60))
    assert found / 60 < 0.1
    falling = 300e6 + rss_noise(9, 100)
    falling[40:] -= 8 * 1024 * KiB
    assert change_point(falling) is None
    assert change_point([5.0] * 30) is None
    assert change_point([1.0, 2.0, 3.0]) is None


def test_change_point_maps_back_past_missing_values() -> None:
    y = 300e6 + rss_noise(4, 80)
    y[50:] += 4 * 1024 * KiB
    holey = y.copy()
    holey[[3, 10, 20, 30]] = np.nan
    assert change_point(holey) == change_point(y) == 50


def test_counter_step_is_found_exactly() -> None:
    y = np.r_[np.full(30, 12.0), np.full(25, 13.0)]
    assert change_point(y) == 30


# --- big n -----------------------------------------------------------------------------------


def test_big_series_analysis_is_correct() -> None:
    n = 100_000
    idx = np.arange(n, dtype=float)
    noise = np.convolve(np.random.default_rng(0).normal(0, 100 * KiB, n), 0.7 ** np.arange(60))[:n]
    y = 300e6 + noise + 2 * KiB * np.maximum(0.0, idx - 40_000)
    cut = cut_warmup(y, 10)
    assert cut == 10
    est = theil_sen(idx[cut:], y[cut:])
    assert not est.exact
    assert est.low < est.slope < est.high
    assert 0.5 * 2 * KiB < est.slope < 2 * KiB  # hinge: the median slope is below the late one
    test = mann_kendall(y[cut:])
    assert test.s > 0 and test.p_value < 0.01 and test.variance_factor > 1
    found = change_point(y)
    assert found is not None and abs(found - 40_000) < 1_000


def test_module_imports_only_numpy_and_stdlib() -> None:
    import ast
    import sys
    from pathlib import Path

    allowed = set(sys.stdlib_module_names) | {"numpy", "soak", "__future__"}
    modules = ("series_math.py", "slope.py", "trend_test.py", "warmup.py", "change_point.py")
    for module in (*modules, "verdict.py"):
        tree = ast.parse(Path(slope.__file__).with_name(module).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{module} imports {name}"
