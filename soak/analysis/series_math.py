"""What the trend statistics of a series share: the series type, NULL handling, tie sums and
the normal quantile; numpy and the standard library only.

A soak run samples the worker once per iteration at a quiet point, when everything it created
should be gone.  Each metric (RSS, GPU memory, open files, threads, ...) is therefore a 1-D
series ``y_0 .. y_{n-1}`` indexed by iteration.  Four modules answer four questions about such
a series, without scipy (the python backend's stub pins numpy < 2, and current scipy refuses
numpy 1.26; the tests compare with scipy wherever it imports):

1. How fast does it grow?  (:func:`soak.analysis.slope.theil_sen`)
2. Is the growth real or noise?  (:func:`soak.analysis.trend_test.mann_kendall`)
3. Where does the steady state begin?  (:func:`soak.analysis.warmup.cut_warmup`)
4. Where did growth begin?  (:func:`soak.analysis.change_point.change_point`)

Missing samples (a NULL GPU metric arrives as ``None`` or NaN) are dropped by every function;
indices that functions return always refer to positions in the array as given.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

ArrayLike = Sequence[float | None] | np.ndarray


def as_float(y: ArrayLike) -> np.ndarray:
    """A 1-D float view in which None became NaN (NULL metrics arrive either way); never mutated."""
    return np.asarray(y, dtype=float).ravel()


def tie_sums(counts: np.ndarray) -> tuple[float, float]:
    """From the sizes of groups of equal values: sums of t(t-1)(2t+5) and of t(t-1)/2."""
    t = counts[counts > 1].astype(float)
    return float(np.sum(t * (t - 1) * (2 * t + 5))), float(np.sum(t * (t - 1) / 2))


def tie_sum(values: np.ndarray) -> tuple[float, float]:
    """Sums over groups of t tied values of t(t-1)(2t+5) and of t(t-1)/2."""
    _, counts = np.unique(values, return_counts=True)
    return tie_sums(counts)


def z_two_sided(alpha: float) -> float:
    return NormalDist().inv_cdf(1.0 - alpha / 2.0)
