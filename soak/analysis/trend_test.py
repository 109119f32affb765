r"""Is the growth real or noise: Mann-Kendall with the Hamed-Rao correction (:func:`mann_kendall`).

The series conventions are those of :mod:`soak.analysis.series_math`.

Mann's test [Mann1945]_ [Kendall1975]_ uses :math:`S = \sum_{i<j}\mathrm{sgn}(y_j - y_i)`.
Under "no trend, independent noise" :math:`E S = 0` and, with groups of :math:`t` tied values,

.. math:: \mathrm{Var}\,S_0 = \tfrac{1}{18}\Big[n(n-1)(2n+5) - \sum t(t-1)(2t+5)\Big].

The two-sided p-value uses the normal approximation with a continuity correction,
:math:`z = (S - \mathrm{sgn}\,S)/\sqrt{\mathrm{Var}\,S}`, :math:`p = \mathrm{erfc}(|z|/\sqrt2)`.
The reported ``tau`` is Kendall's tau-b between time and ``y``, :math:`S/\sqrt{n_0(n_0 - n_2)}`
with :math:`n_0 = n(n-1)/2` and :math:`n_2 = \sum t(t-1)/2`; time has no ties, so this is the
statistic of ``scipy.stats.kendalltau(range(n), y)`` and equals Mann's
:math:`\tau = S/n_0` when ``y`` has no ties.  Without the continuity correction the p-value is
scipy's asymptotic one; the tests check both.

*Autocorrelation.*  Successive RSS samples are positively autocorrelated (arenas, page reuse).
Then :math:`\mathrm{Var}\,S` is larger than :math:`\mathrm{Var}\,S_0` and the plain test finds
trends in flat series far more often than :math:`\alpha`.  Hamed and Rao [HamedRao1998]_
inflate the variance by

.. math:: \frac{n}{n^*_s} = 1 + \frac{2}{n(n-1)(n-2)}\sum_{k=1}^{n-1}(n-k)(n-k-1)(n-k-2)\,\rho_k

where :math:`\rho_k` is the lag-:math:`k` autocorrelation of the *ranks* of the *detrended*
series :math:`y_i - \hat\beta i` (:math:`\hat\beta` the Theil-Sen slope; detrending keeps a real
trend from being mistaken for autocorrelation), and only lags with
:math:`|\rho_k| > z_{0.975}/\sqrt n` (significant at 5 %, as in the paper and in
pyMannKendall's ``hamed_rao_modification_test``) enter the sum.  The autocorrelation function is
computed for all lags by FFT.  Two deliberate deviations:

* Only the *leading run* of significant lags counts (lags 1, 2, ... up to the first lag that is
  not significant).  The sample autocorrelations of a centred series sum to exactly -1/2 over
  all lags, so when the short lags are strongly positive the distant ones are biased negative,
  and some of them pass the significance bound by chance (many more than 5 % of them when the
  noise is autocorrelated, by Bartlett's formula).  Summing every significant lag, as the paper
  does, then cancels much of the real correction: on AR(1) noise with phi = 0.7 and n = 1000 it
  gave a median factor of 2.9 instead of about 5 and rejected 20 % of flat series at
  alpha = 5 %; the leading run brings that to 7 %.
* The factor is floored at 1.  Negative autocorrelation would shrink the variance and make the
  test *more* liberal than the plain one; a leak verdict should also hold under the
  independent-noise assumption.

The correction is approximate for short series, because short-lag autocorrelations are biased
low when n is small.  Measured on flat AR(1) series with occasional transient steps (the RSS
noise model of the tests), the corrected test still rejects at alpha = 5 % about 15 % of the
time for n = 30-60 and phi = 0.5 (plain test: about 35 %), and about 20 % for phi = 0.8.  This
is why the verdict also demands that the slope's lower bound clear a threshold.

*Large n.*  :math:`S` is computed exactly.  Up to :data:`DIRECT_S_MAX_N` points by the
:math:`O(n^2)` sign matrix; above it by a radix pass over the bits of the dense ranks (see
``_kendall_s``), :math:`O(n \log m)` for :math:`m` distinct values: about 30 ms for
:math:`10^5` distinct points, nothing for a constant counter.

*Block medians.*  On request (``max_points``; the verdict asks for :data:`MK_MAX_POINTS`), a
series of more than ``max_points`` points is tested on the medians of consecutive blocks of
:math:`b = \lceil n / \text{max\_points} \rceil` points (the first :math:`n \bmod b` points,
the oldest, are left out).  Under "no trend" the block medians are a stationary series, so the
test keeps its level; a monotone trend moves them monotonically too.  They are still
autocorrelated (less than the raw points), so the Hamed-Rao correction is applied to them as to
any series, detrended with the caller's Theil-Sen slope times :math:`b`.  Measured on AR(1)
noise (:math:`\phi = 0.6`, 100-200 series each): at :math:`n = 2\cdot 10^4` (:math:`b = 2`)
rejection of flat series 4 % vs 5 % for the test on every point, power 24 % vs 25 % and 75 % vs
75 % on two small trends; at :math:`n = 10^5` (:math:`b = 10`) 4 % vs 3 %, 23 % vs 25 % and 71 %
vs 75 %.  ``s``, ``tau`` and the variance factor are then those of the medians (``block`` says
so); the p-value answers the same question.  Left to its default the function tests every point.

References
----------
.. [Mann1945] H. B. Mann, "Nonparametric tests against trend", Econometrica 13, 245-259 (1945).
.. [Kendall1975] M. G. Kendall, *Rank Correlation Methods*, 4th ed., Griffin (1975).
.. [HamedRao1998] K. H. Hamed and A. R. Rao, "A modified Mann-Kendall trend test for
   autocorrelated data", Journal of Hydrology 204, 182-196 (1998).
   https://doi.org/10.1016/S0022-1694(97)00125-X
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from soak.analysis.series_math import ArrayLike, as_float, tie_sums, z_two_sided
from soak.analysis.slope import theil_sen

__all__ = ["DIRECT_S_MAX_N", "MK_MAX_POINTS", "TrendTest", "mann_kendall"]

#: Largest series for which Mann-Kendall S uses the n x n sign matrix.
DIRECT_S_MAX_N = 200
#: The verdict's Mann-Kendall test uses block medians above this many points.
MK_MAX_POINTS = 10_000
#: Hamed-Rao count a lag as significant at this level (as in the paper).
HAMED_RAO_LAG_ALPHA = 0.05


@dataclass(frozen=True)
class TrendTest:
    """Mann-Kendall test result.

    ``var_s`` already includes the autocorrelation correction when ``corrected`` is True;
    ``variance_factor`` is the factor applied (1 for the plain test). ``tau`` is tau-b. ``n``
    counts the points given (NaN dropped); when ``block`` > 1 the test ran on the medians of
    consecutive blocks of that many points, and ``s``, ``var_s``, ``tau`` and the factor are
    those of the block medians.
    """

    s: float
    var_s: float
    z: float
    p_value: float
    tau: float
    n: int
    corrected: bool
    variance_factor: float = 1.0
    block: int = 1


def _average_ranks(y: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (scipy.stats.rankdata's default)."""
    n = y.size
    sorter = np.argsort(y, kind="mergesort")
    inv = np.empty(n, dtype=np.intp)
    inv[sorter] = np.arange(n, dtype=np.intp)
    ys = y[sorter]
    first = np.r_[True, ys[1:] != ys[:-1]]
    dense = np.cumsum(first)[inv]
    bounds = np.r_[np.flatnonzero(first), n]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def _kendall_s(
    y: np.ndarray, rank: np.ndarray | None = None, counts: np.ndarray | None = None
) -> int:
    """S = sum over i < j of sign(y_j - y_i), exact.

    ``rank`` (dense ranks 0..m-1 of y) and ``counts`` (how many values have each rank) may be
    passed when the caller has them. Up to DIRECT_S_MAX_N points the sign matrix is summed.
    Above, a radix pass over the bits of the ranks, highest bit first: before the pass for
    bit b the points are grouped by their rank's bits above b, each group in time order. Two
    points of different rank share a group in every pass down to the one for the highest bit
    in which their ranks differ, and only in that pass do their bits differ: the point whose
    bit is 1 has the larger value. So in each pass every 1 gains one concordant pair per 0
    before it in its group and every 0 one discordant pair per 1 before it, and each pair is
    counted once; tied points never differ in a bit and never count.
    A stable split of each group into its 0s then its 1s prepares the next pass. Each pass is
    a few O(n) vectorised operations, O(n log m) in all.
    """
    n = y.size
    if n < 2:
        return 0
    if n <= DIRECT_S_MAX_N:
        signs = np.sign(y[None, :] - y[:, None])
        return int(np.triu(signs, 1).sum())
    if rank is None or counts is None:
        _, rank, counts = np.unique(y, return_inverse=True, return_counts=True)
    m = counts.size
    if m < 2:
        return 0
    # rank_start[r]: where the points of rank r begin once the points are sorted by rank.
    rank_start = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(counts, out=rank_start[1:])
    cur = np.asarray(rank, dtype=np.int64).ravel()
    nxt = np.empty_like(cur)
    pos = np.arange(n, dtype=np.int64)
    total = 0
    for level in range((m - 1).bit_length() - 1, -1, -1):
        bit = (cur >> level) & 1
        base = (cur >> (level + 1)) << (level + 1)  # smallest rank of the group
        start = rank_start[base]  # the group's first position
        half = rank_start[np.minimum(base + (1 << level), m)]  # where its 1s will begin
        ones_before = np.cumsum(bit)
        ones_before -= bit
        ones_in_group = ones_before - ones_before[start]
        offset = pos - start
        # 1s: offset - ones_in_group zeros before them; 0s: ones_in_group ones before them.
        total += int(bit @ offset) - int(ones_in_group.sum())
        target = np.where(bit == 1, half + ones_in_group, start + offset - ones_in_group)
        nxt[target] = cur
        cur, nxt = nxt, cur
    return total


def _acf(values: np.ndarray) -> np.ndarray:
    """Autocorrelation at lags 0..n-1 (biased estimator, as statsmodels' acf), by FFT."""
    n = values.size
    centred = values - values.mean()
    size = 1 << int(2 * n - 1).bit_length()
    spectrum = np.fft.rfft(centred, size)
    acov = np.fft.irfft(spectrum * np.conj(spectrum), size)[:n] / n
    if acov[0] <= 0:
        return np.zeros(n)
    return acov / acov[0]


def _hamed_rao_factor(y: np.ndarray, beta: float | None = None) -> float:
    """Hamed & Rao's n/n*_s from significant lags of the detrended ranks' autocorrelation.

    ``beta`` is the Theil-Sen slope of y against its position, computed here when not given.
    """
    n = y.size
    idx = np.arange(n, dtype=float)
    if beta is None:
        beta = theil_sen(idx, y).slope
    if not math.isfinite(beta):
        beta = 0.0
    ranks = _average_ranks(y - beta * idx)
    rho = _acf(ranks)[1:]
    bound = z_two_sided(HAMED_RAO_LAG_ALPHA) / math.sqrt(n)
    # The leading run of significant lags only: see the module docstring for why.
    insignificant = np.flatnonzero(np.abs(rho) <= bound)
    run = int(insignificant[0]) if insignificant.size else rho.size
    k = np.arange(1, run + 1, dtype=float)
    weights = (n - k) * (n - k - 1) * (n - k - 2)
    total = float(np.sum(weights * rho[:run]))
    return 1.0 + 2.0 * total / (n * (n - 1) * (n - 2))


def _block_medians(y: np.ndarray, block: int) -> np.ndarray:
    """Medians of consecutive blocks of ``block`` points, leaving out the first n mod block."""
    count = y.size // block
    return np.median(y[y.size - count * block :].reshape(count, block), axis=1)


def mann_kendall(
    y: ArrayLike,
    autocorrelation: Literal["hamed_rao"] | None = "hamed_rao",
    continuity: bool = True,
    *,
    max_points: int | None = None,
    trend_slope: float | None = None,
) -> TrendTest:
    """Two-sided Mann-Kendall trend test of y against its order; NaN and None are dropped.

    ``autocorrelation="hamed_rao"`` inflates the variance for autocorrelated noise (never
    deflates it); ``None`` gives the plain test. ``continuity=False`` drops the continuity
    correction, which makes the p-value scipy.stats.kendalltau's asymptotic one.

    ``max_points``: a longer series is tested on the medians of consecutive blocks of
    ``ceil(n / max_points)`` points (module docstring); ``None`` (the default) always tests
    every point. ``trend_slope``: the caller's Theil-Sen slope of y per position, used to
    detrend before the autocorrelation correction instead of computing it again.
    """
    if autocorrelation not in ("hamed_rao", None):
        raise ValueError(f"unknown autocorrelation correction {autocorrelation!r}")
    if max_points is not None and max_points < 3:
        raise ValueError(f"max_points must be at least 3, not {max_points}")
    ya = as_float(y)
    finite = np.isfinite(ya)
    if not finite.all():
        ya = ya[finite]
    n = int(ya.size)
    if n < 3:
        return TrendTest(math.nan, math.nan, math.nan, math.nan, math.nan, n, False)
    block = 1
    if max_points is not None and n > max_points:
        block = math.ceil(n / max_points)
        ya = _block_medians(ya, block)
    size = int(ya.size)
    _, rank, counts = np.unique(ya, return_inverse=True, return_counts=True)
    s = _kendall_s(ya, rank, counts)
    ties_var, tied_pairs = tie_sums(counts)
    var_s = (size * (size - 1) * (2 * size + 5) - ties_var) / 18.0
    pairs = size * (size - 1) / 2.0
    denominator = math.sqrt(pairs * (pairs - tied_pairs))
    tau = s / denominator if denominator > 0 else math.nan

    factor = 1.0
    corrected = False
    if autocorrelation == "hamed_rao" and var_s > 0:
        beta = None if trend_slope is None else trend_slope * block
        factor = max(1.0, _hamed_rao_factor(ya, beta))
        corrected = True
        var_s *= factor

    if var_s <= 0:
        return TrendTest(float(s), var_s, 0.0, 1.0, tau, n, corrected, factor, block)
    numerator = float(s)
    if continuity and s != 0:
        numerator -= math.copysign(1.0, s)
    z = numerator / math.sqrt(var_s)
    p_value = math.erfc(abs(z) / math.sqrt(2.0))
    return TrendTest(float(s), var_s, z, p_value, tau, n, corrected, factor, block)
