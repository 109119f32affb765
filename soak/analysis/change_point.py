r"""Where growth began: one change point by an AR(1)-aware Schwarz criterion (:func:`change_point`).

The series conventions are those of :mod:`soak.analysis.series_math`.

:func:`change_point` compares four least-squares models of the series: constant; a line; a
step (two levels, break at :math:`\tau`); and a hinge (constant until :math:`\tau`, then a
line).  For each break model the best :math:`\tau` (each side at least ``min_size`` points) is
found for all candidates at once from prefix sums in :math:`O(n)`.  The models are then ranked
by a Schwarz (BIC) criterion [Yao1988]_ whose likelihood, as in asv's ``step_detect.py``, models
AR(1) noise: with residuals :math:`e`, :math:`\hat\rho` their lag-1 correlation and innovations
:math:`u_i = e_i - \hat\rho e_{i-1}`,

.. math:: \mathrm{SC} = (n-1)\ln\overline{u^2} + p \ln n,

where a break location counts as two parameters (the modified BIC of [ZhangSiegmund2007]_ is
similarly stricter about locations than about levels), so ``p`` is 1, 2, 4 and 4.  Modelling the
autocorrelation keeps wandering AR(1) noise from being read as a step.  Growth began at
:math:`\tau` if the step goes up or the hinge's slope is positive, at the first point if the line
wins with a positive slope, and nowhere (``None``) if the constant wins or the change is
downward.  Unlike asv we fit at most one change: a leak verdict needs its onset, not a full
segmentation.

References
----------
.. [Yao1988] Y.-C. Yao, "Estimating the number of change-points via Schwarz criterion",
   Statistics & Probability Letters 6, 181-189 (1988).
.. [ZhangSiegmund2007] N. R. Zhang and D. O. Siegmund, "A modified Bayes information criterion
   with applications to the analysis of comparative genomic hybridization data",
   Biometrics 63, 22-32 (2007).
.. asv: https://github.com/airspeed-velocity/asv/blob/main/asv/step_detect.py (piecewise fits
   with an information criterion and AR(1) noise for benchmark series).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from soak.analysis.series_math import ArrayLike, as_float

__all__ = ["change_point"]

log = logging.getLogger(__name__)


def _ar1_bic(resid: np.ndarray, n_params: int, floor: float) -> float:
    """Schwarz criterion of a fit whose residuals are AR(1) noise (see module docstring)."""
    n = resid.size
    energy = float(resid @ resid)
    rho = float(resid[1:] @ resid[:-1]) / energy if energy > 0 else 0.0
    rho = min(max(rho, -0.99), 0.99)
    innovations = resid[1:] - rho * resid[:-1]
    variance = max(float(innovations @ innovations) / (n - 1), floor)
    return (n - 1) * math.log(variance) + n_params * math.log(n)


def _line_fit(t: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """Least-squares intercept and slope."""
    tc = t - t.mean()
    denom = float(tc @ tc)
    slope = float(tc @ (v - v.mean())) / denom if denom > 0 else 0.0
    return float(v.mean() - slope * t.mean()), slope


def change_point(y: ArrayLike, min_size: int = 3) -> int | None:
    """Index (into y as given) where growth began, or None when no convincing growth starts.

    Chooses among constant, line, step and hinge by an AR(1)-aware Schwarz criterion (module
    docstring); 0-th valid index when the whole series grows along a line.
    """
    ya = as_float(y)
    valid = np.flatnonzero(np.isfinite(ya))
    n = int(valid.size)
    min_size = max(int(min_size), 2)
    if n < 2 * min_size + 2:
        return None
    v = ya[valid]
    v = v - np.median(v)
    spread = float(np.std(v))
    if spread == 0:
        return None
    v = v / spread  # sums of squares stay O(n) whatever the units
    t = valid.astype(float) / max(float(valid[-1]), 1.0)
    floor = 1e-12

    candidates: dict[str, tuple[float, int | None, float]] = {}

    resid_const = v - v.mean()
    candidates["constant"] = (_ar1_bic(resid_const, 1, floor), None, 0.0)

    a, b = _line_fit(t, v)
    candidates["line"] = (_ar1_bic(v - (a + b * t), 2, floor), 0, b)

    # Step: break tau is the first index of the right segment.
    c1 = np.cumsum(v)
    c2 = np.cumsum(v * v)
    taus = np.arange(min_size, n - min_size + 1)
    left_n = taus.astype(float)
    right_n = n - left_n
    left_sum = c1[taus - 1]
    right_sum = c1[-1] - left_sum
    rss_step = c2[-1] - left_sum**2 / left_n - right_sum**2 / right_n
    tau = int(taus[int(np.argmin(rss_step))])
    level_left = float(v[:tau].mean())
    level_right = float(v[tau:].mean())
    fitted = np.where(np.arange(n) < tau, level_left, level_right)
    candidates["step"] = (_ar1_bic(v - fitted, 4, floor), tau, level_right - level_left)

    # Hinge: constant up to t[tau], then a line; regressor h = max(0, t - t[tau]).
    taus_h = np.arange(1, n - min_size + 1)
    suffix = lambda arr: np.cumsum(arr[::-1])[::-1]  # noqa: E731
    s_t, s_tt, s_v, s_tv = suffix(t), suffix(t * t), suffix(v), suffix(t * v)
    corner = t[taus_h]
    count = (n - taus_h).astype(float)
    sh = s_t[taus_h] - corner * count
    shh = s_tt[taus_h] - 2 * corner * s_t[taus_h] + corner**2 * count
    shv = s_tv[taus_h] - corner * s_v[taus_h]
    total_v = float(c1[-1])
    sxx = shh - sh**2 / n
    sxy = shv - sh * total_v / n
    with np.errstate(divide="ignore", invalid="ignore"):
        explained = np.where(sxx > 1e-12, sxy**2 / sxx, -np.inf)
    tau_h = int(taus_h[int(np.argmax(explained))])
    h = np.maximum(0.0, t - t[tau_h])
    a_h, b_h = _line_fit(h, v)
    candidates["hinge"] = (_ar1_bic(v - (a_h + b_h * h), 4, floor), tau_h, b_h)

    best = min(candidates, key=lambda name: candidates[name][0])
    _, where, direction = candidates[best]
    log.debug(
        "change_point: %s wins (%s)",
        best,
        ", ".join(f"{k}={c[0]:.1f}" for k, c in candidates.items()),
    )
    if where is None or direction <= 0:
        return None
    return int(valid[where])
