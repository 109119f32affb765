"""Tests of soak.analysis.verdict: leaks found, realistic noise passes, edge cases are explicit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soak.analysis.verdict import Finding, MetricRule, Series, judge, overall, warmup_cut
from tests.analysis.noise import rss_noise

KiB = 1024.0
MiB = 1024.0 * KiB
FAST = settings(max_examples=25, deadline=None, derandomize=True)
RSS_RULE = MetricRule("rss_bytes", "memory", slope_per_iteration=64 * KiB, growth_budget=8 * MiB)
SLOPE_ONLY = MetricRule("rss_bytes", "memory", slope_per_iteration=64 * KiB)


def rss(values: np.ndarray, first_iteration: int = 1, **units: np.ndarray) -> Series:
    iterations = np.arange(first_iteration, first_iteration + values.size)
    return Series("rss_bytes", iterations, values, units)


def counter(values: list[float] | np.ndarray) -> Series:
    return Series("threads", np.arange(len(values)), np.asarray(values, dtype=float))


# --- memory ----------------------------------------------------------------------------------


@FAST
@given(
    n=st.integers(30, 200),
    phi=st.floats(0.5, 0.8),
    sd=st.floats(100 * KiB, 300 * KiB),
    level=st.floats(200 * MiB, 400 * MiB),
    family=st.integers(0, 1_000),
)
def test_flat_realistic_rss_noise_does_not_leak(
    n: int, phi: float, sd: float, level: float, family: int
) -> None:
    # A fixed family of 4 noise draws per example; at most one false alarm among them.
    verdicts = [
        judge(rss(level + rss_noise(family * 4 + k, n, phi, sd)), RSS_RULE, warmup=2).verdict
        for k in range(4)
    ]
    assert verdicts.count("leak") <= 1, verdicts
    assert "no_data" not in verdicts


def test_flat_false_alarm_rate_is_low() -> None:
    rng = np.random.default_rng(2024)
    leaks = passes = 0
    runs = 300
    for seed in range(runs):
        n = int(rng.integers(30, 201))
        y = rng.uniform(200, 400) * MiB + rss_noise(
            seed, n, rng.uniform(0.5, 0.8), rng.uniform(100, 300) * KiB
        )
        verdict = judge(rss(y), SLOPE_ONLY, warmup=0).verdict
        leaks += verdict == "leak"
        passes += verdict == "pass"
    assert leaks / runs < 0.05
    assert passes / runs > 0.9


@FAST
@given(
    n=st.integers(40, 200),
    phi=st.floats(0.5, 0.8),
    sd=st.floats(100 * KiB, 300 * KiB),
    seed=st.integers(0, 10_000),
)
def test_growth_at_four_times_threshold_is_a_leak(n: int, phi: float, sd: float, seed: int) -> None:
    y = 300 * MiB + rss_noise(seed, n, phi, sd) + 4 * 64 * KiB * np.arange(n)
    found = judge(rss(y), SLOPE_ONLY, warmup=2)
    assert found.verdict == "leak", found.reason
    assert found.slope_low > 64 * KiB
    assert found.p_value < 0.05 and found.tau > 0
    assert found.growth_started_at is not None
    assert "KiB/iteration" in found.reason


def test_leak_numbers_and_per_unit_slopes() -> None:
    n = 60
    y = 300 * MiB + rss_noise(1, n) + 512 * KiB * np.arange(n)
    found = judge(
        rss(y, server=np.full(n, 4), model_load=np.full(n, 8), inference=np.full(n, 160)),
        RSS_RULE,
        warmup=5,
    )
    assert found.verdict == "leak"
    assert found.metric == "rss_bytes" and found.kind == "memory"
    assert found.slope == pytest.approx(512 * KiB, rel=0.1)
    assert found.slope_low <= found.slope <= found.slope_high
    assert found.slopes_per_unit["server"] == pytest.approx(found.slope / 4)
    assert found.slopes_per_unit["model_load"] == pytest.approx(found.slope / 8)
    assert found.slopes_per_unit["inference"] == pytest.approx(found.slope / 160)
    assert found.warmup_cut >= 5 and found.n_used == n - found.warmup_cut
    assert found.total_growth == pytest.approx(found.final - found.baseline)
    assert found.total_growth > 8 * MiB  # both rules fire
    assert "budget" in found.reason and "threshold" in found.reason
    assert found.threshold == 64 * KiB and found.growth_budget == 8 * MiB


def test_step_over_budget_is_a_leak_and_says_where_it_started() -> None:
    n = 100
    y = 300 * MiB + rss_noise(3, n)
    y[60:] += 20 * MiB  # one big allocation that stays
    found = judge(rss(y, first_iteration=1), RSS_RULE, warmup=3)
    assert found.verdict == "leak"
    assert found.total_growth > 8 * MiB
    assert found.growth_started_at is not None
    assert abs(found.growth_started_at - 61) <= 2  # index 60 is iteration 61


def test_growth_within_budget_and_threshold_passes() -> None:
    n = 80
    y = 300 * MiB + rss_noise(4, n) + 16 * KiB * np.arange(n)
    found = judge(rss(y), RSS_RULE, warmup=2)
    assert found.verdict == "pass", found.reason
    assert found.growth_started_at is None
    assert "within" in found.reason


def test_warmup_ramp_is_cut_and_passes() -> None:
    n = 100
    idx = np.arange(n)
    y = 300 * MiB + rss_noise(5, n) - 30 * MiB * np.exp(-idx / 3.0)
    found = judge(rss(y), RSS_RULE, warmup=0)
    assert found.warmup_cut > 5
    assert found.verdict == "pass", found.reason


def test_warmup_cut_is_where_judge_cuts_without_the_rule() -> None:
    """soak compare cuts an unjudged run with warmup_cut: the very cut judge would make."""
    idx = np.arange(100)
    ramp = rss(300 * MiB + rss_noise(5, 100) - 30 * MiB * np.exp(-idx / 3.0))
    steps = counter([40] * 3 + [41] * 20)
    missing = rss(np.full(10, np.nan))
    short = rss(np.arange(4, dtype=float))
    threads = MetricRule("threads", "counter", None, None, 0.0)
    for series, rule, warmup in (
        (ramp, RSS_RULE, 0),
        (steps, threads, 2),
        (missing, RSS_RULE, 1),
        (short, RSS_RULE, 1),
    ):
        cut = judge(series, rule, warmup).warmup_cut
        assert warmup_cut(series, rule.kind, warmup) == cut
    assert warmup_cut(ramp, "memory", 0) > 5


def test_suggestive_but_unproven_growth_is_inconclusive() -> None:
    n = 12
    idx = np.arange(n)
    y = 300 * MiB + 96 * KiB * idx + np.where(idx % 2 == 0, 600, -600) * KiB
    found = judge(rss(y), SLOPE_ONLY, warmup=0)
    assert found.slope > 64 * KiB > found.slope_low
    assert found.verdict == "inconclusive"
    assert "more iterations" in found.reason


# --- counters --------------------------------------------------------------------------------


@FAST
@given(
    n=st.integers(12, 120),
    base=st.integers(0, 50),
    bumps=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 5)), max_size=5),
)
def test_counter_that_returns_to_baseline_passes(
    n: int, base: int, bumps: list[tuple[float, int]]
) -> None:
    values = np.full(n, float(base))
    for where, size in bumps:  # transient bumps during the run
        i = int(where * (n - 3))
        values[i : i + 2] += size
    values[-(n // 3) :] = base  # ... gone by the last third
    found = judge(counter(values), MetricRule("threads", "counter"), warmup=0)
    assert found.verdict == "pass", found.reason


@FAST
@given(
    n=st.integers(16, 120),
    base=st.integers(0, 50),
    where=st.floats(0.25, 0.6),  # after the few samples the baseline is taken from
    step=st.integers(1, 10),
)
def test_counter_that_steps_up_and_stays_leaks(n: int, base: int, where: float, step: int) -> None:
    values = np.full(n, float(base))
    at = int(where * n)
    values[at:] += step
    found = judge(counter(values), MetricRule("threads", "counter"), warmup=0)
    assert found.verdict == "leak", found.reason
    assert found.total_growth == step
    assert found.growth_started_at == at


def test_counter_within_tolerance_passes_and_above_leaks() -> None:
    values = [10.0] * 10 + [12.0] * 20
    assert (
        judge(counter(values), MetricRule("threads", "counter", tolerance=2), 0).verdict == "pass"
    )
    found = judge(counter(values), MetricRule("threads", "counter", tolerance=1), 0)
    assert found.verdict == "leak"
    assert "tolerance" in found.reason


def test_counter_that_dips_back_in_last_third_passes() -> None:
    values = [10.0] * 10 + [11.0] * 14 + [10.0] + [11.0] * 5
    assert judge(counter(values), MetricRule("threads", "counter"), 0).verdict == "pass"


def test_counter_budget_rule() -> None:
    values = [10.0] * 10 + [13.0] * 20
    rule = MetricRule("threads", "counter", tolerance=5, growth_budget=2)
    found = judge(counter(values), rule, 0)
    assert found.verdict == "leak" and "budget" in found.reason


def test_counter_warmup_is_never_extended() -> None:
    values = [1.0] * 5 + [9.0] * 40  # steps up early and stays: a leak, not a warm-up
    found = judge(counter(values), MetricRule("threads", "counter"), warmup=2)
    assert found.warmup_cut == 2
    assert found.verdict == "leak"


# --- missing data and small series -----------------------------------------------------------


def test_too_few_points_after_warmup_is_inconclusive() -> None:
    y = 300 * MiB + 1 * MiB * np.arange(9)
    found = judge(rss(y), SLOPE_ONLY, warmup=5)
    assert found.verdict == "inconclusive"
    assert found.n_used == 4 and found.warmup_cut == 5
    assert "only 4 samples" in found.reason
    assert judge(rss(y), SLOPE_ONLY, warmup=4).verdict == "leak"


def test_all_missing_is_no_data() -> None:
    values = np.array([None] * 20, dtype=object)
    found = judge(
        Series("gpu_bytes", np.arange(20), values), MetricRule("gpu_bytes", "memory", 1.0), 2
    )
    assert found.verdict == "no_data"
    assert math.isnan(found.slope) and found.n_used == 0
    empty = judge(Series("gpu_bytes", [], []), MetricRule("gpu_bytes", "memory", 1.0), 0)
    assert empty.verdict == "no_data"


def test_missing_samples_are_dropped() -> None:
    n = 80
    y = 300 * MiB + rss_noise(6, n) + 256 * KiB * np.arange(n)
    holey = y.astype(object)
    holey[[10, 11, 40]] = None
    holey[70] = math.nan
    found = judge(rss(holey), SLOPE_ONLY, warmup=2)
    assert found.verdict == "leak"
    assert found.n_used == n - found.warmup_cut - 4
    assert math.isfinite(found.baseline) and math.isfinite(found.final)

    flat = 300 * MiB + rss_noise(6, n)
    flat[::7] = np.nan
    assert judge(rss(flat), SLOPE_ONLY, warmup=2).verdict == "pass"


def test_unsorted_iterations_are_sorted() -> None:
    n = 50
    y = 300 * MiB + rss_noise(8, n) + 256 * KiB * np.arange(n)
    order = np.random.default_rng(0).permutation(n)
    shuffled = Series("rss_bytes", np.arange(n)[order], y[order])
    assert judge(shuffled, SLOPE_ONLY, 2) == judge(rss(y, first_iteration=0), SLOPE_ONLY, 2)


# --- validation and overall ------------------------------------------------------------------


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="slope_per_iteration or growth_budget"):
        MetricRule("rss_bytes", "memory")
    with pytest.raises(ValueError, match="kind"):
        MetricRule("rss_bytes", "bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tolerance"):
        MetricRule("threads", "counter", tolerance=-1)
    with pytest.raises(ValueError, match="iterations"):
        Series("rss_bytes", np.arange(3), np.zeros(4))
    with pytest.raises(ValueError, match="server"):
        Series("rss_bytes", np.arange(3), np.zeros(3), {"server": np.ones(2)})
    with pytest.raises(ValueError, match="rule for"):
        judge(counter([1.0] * 10), SLOPE_ONLY, 0)


def _finding(verdict: str) -> Finding:
    found = judge(counter([1.0] * 10), MetricRule("threads", "counter"), 0)
    return Finding(**{**found.__dict__, "verdict": verdict})


def test_overall() -> None:
    assert overall([]) == "pass"
    assert overall([_finding("pass"), _finding("no_data")]) == "pass"
    assert overall([_finding("no_data"), _finding("no_data")]) == "inconclusive"
    assert (
        overall([_finding("pass"), _finding("inconclusive"), _finding("no_data")]) == "inconclusive"
    )
    assert overall([_finding("inconclusive"), _finding("leak"), _finding("pass")]) == "leak"
    assert overall(iter([_finding("no_data")])) == "inconclusive"


# --- thresholds per unit ---------------------------------------------------------------------


def _per_request_leak(bytes_per_request: float, requests: int, n: int = 40) -> Series:
    """RSS growing by `bytes_per_request` for each of `requests` requests per iteration."""
    rng = np.random.default_rng(7)
    values = 300 * MiB + np.arange(n) * bytes_per_request * requests + rng.normal(0, 2 * KiB, n)
    return rss(values, inference=np.full(n, requests), server=np.zeros(n))


@pytest.mark.parametrize("requests", [40, 400])
def test_a_threshold_per_inference_judges_whatever_the_burst_size(requests):
    rule = MetricRule("rss_bytes", "memory", 256 * KiB, slope_per_unit={"inference": 256.0})
    leak = judge(_per_request_leak(600, requests), rule, warmup=2)
    assert leak.verdict == "leak"
    assert leak.threshold == pytest.approx(256 * requests)
    assert "256 B/inference x" in leak.reason
    assert leak.slopes_per_unit["inference"] == pytest.approx(600, rel=0.05)
    assert judge(_per_request_leak(100, requests), rule, warmup=2).verdict == "pass"


def test_a_unit_the_run_lacks_keeps_the_threshold_per_iteration():
    rule = MetricRule("rss_bytes", "memory", 64 * KiB, slope_per_unit={"server": 1.0})
    finding = judge(_per_request_leak(100, 40), rule, warmup=2)  # 4 KiB/iteration, no server
    assert finding.threshold == 64 * KiB
    assert finding.verdict == "pass"
