r"""Detection power and false-alarm rate of the leak verdict on realistic noise; numpy only.

How long must a soak run be to catch a given leak, and how often does a clean run fail?  Both
depend on the noise of the metric (RSS is autocorrelated and steppy), on the rule and on the
statistics of :mod:`soak.analysis.verdict`, so they are measured by simulation, not derived:
synthetic runs are built from a real clean run's noise plus a known linear leak, and judged by
:func:`soak.analysis.verdict.judge` exactly as a real run would be.

Noise
-----
:func:`noise_residuals` turns a real run's quiet-point series into noise: it cuts the warm-up
(the profile's, extended by :func:`soak.analysis.warmup.cut_warmup`) and subtracts the Theil-Sen
line of the rest, so that whatever slow drift or leak the real run had is not counted twice.
Synthetic series are drawn from these residuals by the *circular block bootstrap*
[Kuensch1989]_ [PolitisRomano1992]_: blocks of ``b`` consecutive residuals (wrapping around the
end) starting at uniform random points are laid end to end.  Within a block the real
autocorrelation, allocator steps and all, is kept; independent blocks mean the simulated noise
forgets the source after ``b`` samples, so ``b`` must be long compared with the noise's memory.

The block length is the Politis-White automatic choice for the circular block bootstrap
[PolitisWhite2004]_ with the correction of [PattonPolitisWhite2009]_ (the choice of the ``arch``
package's ``optimal_block_length``):

.. math:: b = \Big(\frac{2 G^2}{D}\Big)^{1/3} n^{1/3}, \quad
          G = \sum_{|k| \le M} \lambda(k/M)\,|k|\,R(k), \quad
          D = \tfrac43 \Big(\sum_{|k| \le M} \lambda(k/M)\,R(k)\Big)^2,

with :math:`R` the sample autocovariance, :math:`\lambda` the flat-top kernel (1 up to 1/2,
falling linearly to 0 at 1) and :math:`M = 2\hat m`, where :math:`\hat m` is the first lag after
which :math:`K_n = \max(5, \lfloor\log_{10} n\rfloor)` autocorrelations in a row are below
:math:`2\sqrt{\log_{10} n / n}`.  It is clipped to :math:`[1, \min(3\sqrt n, n/3)]`.  For AR(1)
noise with :math:`\phi = 0.6` and :math:`n = 2000` it gives about 20, where the correlation has
fallen to :math:`0.6^{20} \approx 4\cdot 10^{-5}`.

Power
-----
:func:`detection_power` asks: after how many iterations past the warm-up do at least ``needed``
of ``reps`` synthetic runs with a leak of ``leak_per_iteration`` get the verdict "leak"?  Each
repetition draws one noise path as long as the longest run considered, and a run of length
``L`` is its first ``warmup + L`` points (common random numbers: lengths are compared on the
same noise, so the count of detections is nearly monotone in ``L``).  Lengths are searched by
doubling from :data:`FIRST_LENGTH` until enough repetitions detect the leak, then by bisection
between the last length that failed and the first that passed; each tested length costs
``reps`` verdicts.  The answer assumes that detections do not fall as runs get longer, which
holds in expectation; the counts of every tested length are returned so that it can be checked.

:func:`false_alarm_rate` judges ``series`` synthetic clean runs (same noise, no leak, same rule)
and returns the share of "leak" verdicts.

References
----------
.. [Kuensch1989] H. R. Kuensch, "The jackknife and the bootstrap for general stationary
   observations", Annals of Statistics 17, 1217-1241 (1989).
.. [PolitisRomano1992] D. N. Politis and J. P. Romano, "A circular block-resampling procedure for
   stationary data", in *Exploring the Limits of Bootstrap*, Wiley, 263-270 (1992).
.. [PolitisWhite2004] D. N. Politis and H. White, "Automatic block-length selection for the
   dependent bootstrap", Econometric Reviews 23, 53-70 (2004).
.. [PattonPolitisWhite2009] A. Patton, D. N. Politis and H. White, "Correction to 'Automatic
   block-length selection for the dependent bootstrap'", Econometric Reviews 28, 372-375 (2009).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from soak.analysis.slope import theil_sen
from soak.analysis.verdict import MetricRule, Series, judge
from soak.analysis.warmup import cut_warmup

__all__ = [
    "FIRST_LENGTH",
    "PowerResult",
    "ar1_noise",
    "block_bootstrap",
    "block_length",
    "detection_power",
    "false_alarm_rate",
    "noise_residuals",
]

#: The first run length (iterations after the warm-up) that the power search tries.
FIRST_LENGTH = 8
#: Level the synthetic series sit at; the verdict depends on differences only.
BASE_LEVEL = 1 << 30
#: Fewest noise samples from which a block bootstrap is drawn.
MIN_NOISE = 20


@dataclass(frozen=True)
class PowerResult:
    """How long a run must be to detect a leak.

    ``iterations`` is the shortest run length after the warm-up at which at least ``needed``
    of ``reps`` synthetic runs were judged "leak", or None if none up to ``max_iterations``
    was; ``detections`` maps each tested length to its count of "leak" verdicts.
    """

    iterations: int | None
    detections: dict[int, int]
    reps: int
    needed: int
    leak_per_iteration: float
    warmup: int
    block: int
    rule: MetricRule


def ar1_noise(
    n: int, phi: float = 0.6, sd: float = 150 * 1024.0, seed: int | np.random.Generator = 0
) -> np.ndarray:
    """n samples of stationary AR(1) noise with lag-1 correlation phi and standard deviation sd.

    ``seed`` may be a Generator, which then goes on from where this left it (tests add more
    structure to the same stream)."""
    if not -1 < phi < 1:
        raise ValueError(f"phi must be in (-1, 1), not {phi}")
    rng = np.random.default_rng(seed)
    innovations = rng.normal(0.0, sd * math.sqrt(1.0 - phi * phi), n)
    out = np.empty(n)
    if n:
        out[0] = rng.normal(0.0, sd)  # start in the stationary distribution
    for i in range(1, n):  # a first-order recursion; n is a few thousand at most here
        out[i] = phi * out[i - 1] + innovations[i]
    return out


def noise_residuals(
    values: Sequence[float | None] | np.ndarray,
    warmup: int,
    iterations: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """A clean run's noise: the series after its warm-up, less its Theil-Sen line.

    ``values`` are quiet-point samples (NaN or None for missing ones, which are dropped) in
    the order of ``iterations`` (default 0, 1, ...); the warm-up is the profile's, extended by
    :func:`~soak.analysis.warmup.cut_warmup` as the verdict extends it.
    """
    y = np.asarray(values, dtype=float).ravel()
    x = np.arange(y.size, dtype=float) if iterations is None else np.asarray(iterations, float)
    if x.size != y.size:
        raise ValueError(f"{x.size} iterations but {y.size} values")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    cut = cut_warmup(y, warmup)
    x, y = x[cut:], y[cut:]
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if y.size < MIN_NOISE:
        raise ValueError(f"only {y.size} samples after the warm-up; at least {MIN_NOISE} needed")
    line = theil_sen(x, y)
    return y - (line.intercept + line.slope * x)


def block_length(noise: np.ndarray) -> int:
    """Politis-White block length for the circular block bootstrap (module docstring)."""
    e = np.asarray(noise, dtype=float)
    n = e.size
    if n < MIN_NOISE:
        raise ValueError(f"{n} noise samples; at least {MIN_NOISE} are needed")
    e = e - e.mean()
    variance = float(e @ e) / n
    if variance <= 0:
        return 1
    kn = max(5, int(math.log10(n)))
    m_max = min(math.ceil(math.sqrt(n)) + kn, n - 1)
    acov = np.array([float(e[k:] @ e[: n - k]) / n for k in range(m_max + 1)])
    small = np.abs(acov[1:] / acov[0]) < 2.0 * math.sqrt(math.log10(n) / n)
    m_hat = None
    for m in range(0, m_max - kn + 1):
        if small[m : m + kn].all():  # lags m+1 .. m+kn are all insignificant
            m_hat = m
            break
    big_m = m_max if m_hat is None else min(2 * max(m_hat, 1), m_max)
    k = np.arange(1, big_m + 1, dtype=float)
    weight = np.where(k / big_m <= 0.5, 1.0, 2.0 * (1.0 - k / big_m))
    g = 2.0 * float(np.sum(weight * k * acov[1 : big_m + 1]))
    long_run = acov[0] + 2.0 * float(np.sum(weight * acov[1 : big_m + 1]))
    d = 4.0 / 3.0 * long_run**2
    if d <= 0 or g == 0:
        return 1
    b = (2.0 * g * g / d) ** (1.0 / 3.0) * n ** (1.0 / 3.0)
    b_max = math.ceil(min(3.0 * math.sqrt(n), n / 3.0))
    return int(min(max(1, round(b)), b_max))


def block_bootstrap(
    noise: np.ndarray, length: int, block: int, rng: np.random.Generator
) -> np.ndarray:
    """``length`` samples of circular block bootstrap of ``noise`` with blocks of ``block``."""
    n = noise.size
    count = -(-length // block)
    starts = rng.integers(0, n, count)
    index = (starts[:, None] + np.arange(block)[None, :]) % n
    return noise[index.ravel()[:length]]


def _prepared(noise: np.ndarray) -> np.ndarray:
    """Noise without any trend of its own (Theil-Sen) and centred; NaN dropped."""
    e = np.asarray(noise, dtype=float).ravel()
    e = e[np.isfinite(e)]
    if e.size < MIN_NOISE:
        raise ValueError(f"{e.size} noise samples; at least {MIN_NOISE} are needed")
    idx = np.arange(e.size, dtype=float)
    line = theil_sen(idx, e)
    if math.isfinite(line.slope):
        e = e - line.slope * idx
    return e - float(np.median(e))


def _detects(values: np.ndarray, rule: MetricRule, warmup: int) -> bool:
    series = Series(rule.metric, np.arange(values.size), values)
    return judge(series, rule, warmup).verdict == "leak"


def detection_power(
    noise: np.ndarray,
    leak_per_iteration: float,
    rule: MetricRule,
    warmup: int,
    reps: int = 20,
    needed: int = 19,
    max_iterations: int = 400,
    seed: int = 0,
) -> PowerResult:
    """Shortest run (iterations after ``warmup``) in which ``needed`` of ``reps`` runs leak.

    ``noise`` is a clean run's noise in the metric's units (:func:`noise_residuals`, or
    :func:`ar1_noise`); it is detrended and block-bootstrapped. Each synthetic run is
    ``BASE_LEVEL + noise + leak_per_iteration * iteration`` judged with ``rule`` and ``warmup``
    (module docstring for the search).
    """
    if not 0 < needed <= reps:
        raise ValueError(f"needed must be in 1..reps ({reps}), not {needed}")
    if max_iterations < 1 or warmup < 0:
        raise ValueError("max_iterations must be >= 1 and warmup >= 0")
    e = _prepared(noise)
    block = block_length(e)
    rng = np.random.default_rng(seed)
    total = warmup + max_iterations
    ramp = leak_per_iteration * np.arange(total, dtype=float)
    paths = [BASE_LEVEL + block_bootstrap(e, total, block, rng) + ramp for _ in range(reps)]
    detections: dict[int, int] = {}

    def passes(length: int) -> bool:
        if length not in detections:
            detections[length] = sum(_detects(p[: warmup + length], rule, warmup) for p in paths)
        return detections[length] >= needed

    failed, length = 0, min(FIRST_LENGTH, max_iterations)
    while not passes(length):
        if length >= max_iterations:
            return PowerResult(
                None, detections, reps, needed, leak_per_iteration, warmup, block, rule
            )
        failed, length = length, min(2 * length, max_iterations)
    passed = length
    while passed - failed > 1:
        middle = (failed + passed) // 2
        if passes(middle):
            passed = middle
        else:
            failed = middle
    return PowerResult(passed, detections, reps, needed, leak_per_iteration, warmup, block, rule)


def false_alarm_rate(
    noise: np.ndarray,
    rule: MetricRule,
    warmup: int,
    n_iterations: int,
    series: int = 100,
    seed: int = 0,
) -> float:
    """Share of clean synthetic runs (``n_iterations`` after ``warmup``) judged "leak"."""
    if series < 1 or n_iterations < 1 or warmup < 0:
        raise ValueError("series and n_iterations must be >= 1 and warmup >= 0")
    e = _prepared(noise)
    block = block_length(e)
    rng = np.random.default_rng(seed)
    total = warmup + n_iterations
    alarms = sum(
        _detects(BASE_LEVEL + block_bootstrap(e, total, block, rng), rule, warmup)
        for _ in range(series)
    )
    return alarms / series
