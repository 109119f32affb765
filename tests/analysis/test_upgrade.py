"""soak.analysis.upgrade: per-unit slopes, thresholds and the newer version's verdict."""

from __future__ import annotations

import math

import numpy as np

from soak.analysis.upgrade import (
    ITERATION,
    UnitSlope,
    mean_count,
    per_unit,
    unit_threshold,
    upgrade_verdict,
)


def test_a_slope_per_unit_is_the_slope_over_the_mean_count_after_the_cut():
    counts = np.array([0, 0, 100, 100, 300])
    assert mean_count(counts, 2) == 500 / 3
    assert per_unit(1000.0, 900.0, 1100.0, 100.0) == UnitSlope(10.0, 9.0, 11.0)
    assert not per_unit(1.0, 0.0, 2.0, 0.0).usable
    assert math.isnan(mean_count(None, 0))


def test_the_threshold_is_the_profiles_per_unit_limit_else_per_iteration_over_the_count():
    assert unit_threshold("inference", 262144.0, {"inference": 256.0}, 1000.0) == 256.0
    assert unit_threshold("inference", 262144.0, {}, 1000.0) == 262.144
    assert unit_threshold(ITERATION, 262144.0, {"inference": 256.0}, 1.0) == 262144.0
    assert unit_threshold("error", None, {}, 10.0) == 0.0  # counters


def test_worse_needs_both_the_threshold_and_disjoint_intervals():
    old = UnitSlope(10.0, 8.0, 12.0)
    assert upgrade_verdict(old, UnitSlope(300.0, 290.0, 310.0), 256.0) == "worse"
    assert upgrade_verdict(old, UnitSlope(200.0, 190.0, 210.0), 256.0) == "same"  # < threshold
    assert upgrade_verdict(old, UnitSlope(300.0, 5.0, 600.0), 256.0) == "same"  # overlaps
    assert upgrade_verdict(UnitSlope(300.0, 290.0, 310.0), old, 256.0) == "better"
    assert upgrade_verdict(old, old, 0.0) == "same"
    assert upgrade_verdict(old, UnitSlope(math.nan, 0, 1), 1.0) == "no data"
