"""The statistics of `soak compare`: a run's slope with an interval honest about autocorrelation.

Pure (numpy and the trend module): the triage layer reads the runs and cuts each series where
the verdict cut it; this module only turns the kept samples into a slope and its interval.
"""

from __future__ import annotations

import math

import numpy as np

from soak.analysis.slope import theil_sen
from soak.analysis.trend_test import mann_kendall
from soak.analysis.warmup import MIN_POINTS

#: Two-sided 95 % normal quantile; compare's intervals are widened from it.
Z95 = 1.959963984540054


def widened_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Theil-Sen slope and its 95 % interval widened for autocorrelation, and the factor.

    Sen's bounds sit z * sqrt(Var S) ranks either side of the median pairwise slope; Hamed and
    Rao's factor f inflates Var S for autocorrelated noise, so the widened interval is Sen's
    with z * sqrt(f), i.e. Sen's interval at level alpha = erfc(z * sqrt(f / 2)).
    """
    factor = mann_kendall(y, autocorrelation="hamed_rao").variance_factor
    factor = max(1.0, factor if math.isfinite(factor) else 1.0)
    alpha = math.erfc(Z95 * math.sqrt(factor) / math.sqrt(2.0))
    est = theil_sen(x, y, alpha)
    return est.slope, est.low, est.high, factor


def slope_after(
    iterations: np.ndarray, values: np.ndarray, cut: int
) -> tuple[int, float, float, float, float]:
    """(samples used, slope, low, high, variance factor) of the finite values from index
    ``cut`` on; NaN numbers when fewer than :data:`MIN_POINTS` remain."""
    x, y = iterations[cut:].astype(float), values[cut:]
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if y.size < MIN_POINTS:
        nan = math.nan
        return int(y.size), nan, nan, nan, nan
    return (int(y.size), *widened_slope(x, y))
