r"""Where the steady state begins: the warm-up cut (:func:`cut_warmup`).

The series conventions are those of :mod:`soak.analysis.series_math`.

The first iterations fill caches, arenas and lazily created pools; their level shift is not a
leak.  The profile names a warm-up (a count of samples to skip); :func:`cut_warmup` extends it
while the early part is still visibly off the steady state:

* the extension may take at most the first third of the :math:`m` points after the warm-up,
  and must leave ``min_points``;
* the steady state is the Theil-Sen line fitted to the other two thirds, which the extension
  can never take (above :data:`EXACT_PAIRS_MAX_N` points from :data:`WARMUP_PAIRS` sampled
  pairs: only the line is used, and its sampling error is of the order of its own statistical
  error), and its noise scale is :math:`\hat s = 1.4826\,\mathrm{MAD}` of their residuals;
* walking from the warm-up in blocks of :math:`\lceil m/20 \rceil` points, a block still
  belongs to the warm-up while the median of its residuals from the steady-state line is more
  than :data:`WARMUP_K` :math:`\hat s` away;
* if the shift is not over within the first third, the early rise is not a warm-up but part of
  what is to be judged, and the profile's warm-up index is returned unchanged.

Measuring against the extrapolated line rather than against the later level means a steady
leak, which sits on its own line from the start, is not mistaken for a warm-up.  Extrapolation
error still extends it now and then: on the tests' RSS noise model (AR(1), phi 0.5-0.8, 30-200
points) about 6 % of flat or steadily leaking series lose a few extra points, which costs power,
not correctness; a 10 MB warm-up decaying over ~10 iterations is found in 98 % of them (the
rest are too short for the first-third limit).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from soak.analysis.series_math import ArrayLike, as_float
from soak.analysis.slope import theil_sen

__all__ = ["MIN_POINTS", "WARMUP_K", "cut_warmup"]

log = logging.getLogger(__name__)

#: Pairs drawn for the steady-state line of :func:`cut_warmup` (only its point estimate is used).
WARMUP_PAIRS = 100_000
#: A warm-up block is still warming up while its median residual exceeds this many robust sigmas.
WARMUP_K = 3.0
#: Samples after the warm-up a series needs before it is judged or given a slope at all
#: (verdict.judge, soak compare, the warm-up cut's floor).
MIN_POINTS = 5

_MAD_TO_SIGMA = 1.4826


def cut_warmup(y: ArrayLike, warmup: int, min_points: int = MIN_POINTS) -> int:
    """Index where the analysed part of y begins: at least ``warmup``, later while it still shifts.

    See the module docstring for the rule. Returns ``warmup`` (clipped to the series) when the
    series is too short to check, when nothing shifts, or when the shift never settles.
    """
    ya = as_float(y)
    n = ya.size
    start = min(max(int(warmup), 0), n)
    valid = np.flatnonzero(np.isfinite(ya))
    post = valid[valid >= start]
    m = int(post.size)
    if m < max(2 * min_points, 10):
        return start
    if ya[post].min() == ya[post].max():
        return start  # nothing shifts
    # The steady state is fitted to the part the extension can never take (the last 2/3).
    limit = min(m // 3, m - min_points)
    later = post[m // 3 :]
    line = theil_sen(later.astype(float), ya[later], 0.05, pairs=WARMUP_PAIRS)
    if not math.isfinite(line.slope):
        return start
    resid = ya[post] - (line.intercept + line.slope * post)
    later_resid = resid[m // 3 :]
    scale = _MAD_TO_SIGMA * float(np.median(np.abs(later_resid - np.median(later_resid))))
    block = max(1, math.ceil(m / 20))
    k = 0
    while k < limit and abs(float(np.median(resid[k : k + block]))) > WARMUP_K * scale:
        k += block
    if k == 0:
        return start
    if k >= limit:
        log.debug("level shift after warm-up index %d never settles; not extending it", start)
        return start
    return int(post[k])
