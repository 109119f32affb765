"""The statistics of an upgrade check: one metric's slope per unit on the older and on the
newer Triton, and whether the newer one is worse by more than the metric's threshold.

Pure numbers. A slope per unit is the per-iteration slope of `soak compare` (Theil-Sen on the
quiet samples after the warm-up cut, Sen's 95 % interval widened by the Hamed-Rao factor:
:mod:`soak.analysis.compare`) divided by the unit's mean count per analysed iteration, as
the verdict states per-unit slopes; the interval scales with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: The unit every run has: one iteration.
ITERATION = "iteration"

UPGRADE_RULE = (
    "Per metric and unit: the Theil-Sen slope of the quiet samples after each run's warm-up "
    "cut, its 95% interval widened by the Hamed-Rao autocorrelation factor, divided by the "
    "unit's mean count per iteration. 'worse' when the newer version's slope exceeds the "
    "older's by more than the threshold and its interval lies wholly above the older's; "
    "'better' when below by more than the threshold and wholly below; else 'same'."
)


@dataclass(frozen=True)
class UnitSlope:
    """A slope per one unit (an iteration, an inference, ...) with its widened interval."""

    slope: float
    low: float
    high: float

    @property
    def usable(self) -> bool:
        return all(math.isfinite(v) for v in (self.slope, self.low, self.high))


def mean_count(counts: np.ndarray | None, cut: int) -> float:
    """A unit's mean count per iteration from index ``cut`` on (NaN: not counted)."""
    if counts is None:
        return math.nan
    kept = np.asarray(counts, dtype=float)[cut:]
    kept = kept[np.isfinite(kept)]
    return float(kept.mean()) if kept.size else math.nan


def per_unit(slope: float, low: float, high: float, count: float) -> UnitSlope:
    """A per-iteration slope and interval stated per unit (NaN where the unit has no count)."""
    if not (math.isfinite(count) and count > 0):
        return UnitSlope(math.nan, math.nan, math.nan)
    return UnitSlope(slope / count, low / count, high / count)


def unit_threshold(
    unit: str,
    slope_per_iteration: float | None,
    slope_per_unit: dict[str, float],
    count: float,
) -> float:
    """How much steeper per unit the newer version may be: the profile's `slope_per_<unit>`
    where it set one, else its per-iteration threshold over the unit's count; 0 for a metric
    without a slope threshold (a counter)."""
    if unit != ITERATION and unit in slope_per_unit:
        return float(slope_per_unit[unit])
    if slope_per_iteration is None:
        return 0.0
    if unit == ITERATION:
        return float(slope_per_iteration)
    return float(slope_per_iteration) / count if count > 0 else math.nan


def upgrade_verdict(old: UnitSlope, new: UnitSlope, threshold: float) -> str:
    """worse, better, same or 'no data', under :data:`UPGRADE_RULE`."""
    if not (old.usable and new.usable and math.isfinite(threshold)):
        return "no data"
    difference = new.slope - old.slope
    if difference > threshold and new.low > old.high:
        return "worse"
    if difference < -threshold and new.high < old.low:
        return "better"
    return "same"
