"""soak.analysis.compare: the slope interval of `soak compare` is widened for autocorrelation."""

from __future__ import annotations

import numpy as np
import pytest

from soak.analysis.compare import MIN_POINTS, slope_after, widened_slope
from soak.analysis.power import ar1_noise
from soak.analysis.slope import theil_sen

KiB = 1024
MiB = 1024 * KiB


def test_widened_slope_interval_grows_with_autocorrelation():
    rng = np.random.default_rng(11)
    n = 120
    noise = ar1_noise(n, phi=0.9, sd=230 * KiB, seed=rng)
    x = np.arange(n, dtype=float)
    y = 300 * MiB + noise
    slope, low, high, factor = widened_slope(x, y)
    plain = theil_sen(x, y)
    assert factor > 1.5
    assert slope == pytest.approx(plain.slope)
    assert low < plain.low and high > plain.high
    # Independent noise is not widened at all.
    white = 300 * MiB + rng.normal(0, 100 * KiB, n)
    w_slope, w_low, w_high, w_factor = widened_slope(x, white)
    assert w_factor == 1.0
    assert (w_low, w_high) == (theil_sen(x, white).low, theil_sen(x, white).high)


def test_too_few_samples_after_the_cut_give_no_slope():
    x = np.arange(10)
    y = np.where(x % 2 == 0, np.nan, 1.0 * x)
    n, slope, low, high, factor = slope_after(x, y, 2)  # 3, 5, 7, 9 remain
    assert n == MIN_POINTS - 1
    assert all(np.isnan(v) for v in (slope, low, high, factor))
    n, slope, *_ = slope_after(x, 3.0 * x, 0)
    assert n == 10 and slope == pytest.approx(3.0)
