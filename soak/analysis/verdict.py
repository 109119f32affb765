"""Thresholds -> findings: judges one metric series with the statistics of ``trend``.

Inputs are plain data (a :class:`Series` and a :class:`MetricRule`), never database rows, and
nothing here does I/O; the report and the CLI turn :class:`Finding` objects into text, plots and
exit codes.  numpy and the standard library only.

Memory metrics (bytes: RSS, GPU memory, heap) leak when

* they grow faster than ``slope_per_iteration`` *with confidence*: the lower bound of the
  Theil-Sen interval is above the threshold **and** the Hamed-Rao-corrected Mann-Kendall test
  finds a rising trend at ``alpha``.  The two guard each other: Sen's interval assumes
  independent noise and is too narrow for autocorrelated RSS; the corrected trend test knows
  about autocorrelation but says nothing about the size of the growth; or
* they grew more than ``growth_budget`` from the post-warm-up baseline (median of the first few
  analysed samples) to the end (median of the last few).

A memory series whose point slope is above the threshold without the evidence for a leak is
"inconclusive": it may leak, and a longer run would tell.  The warm-up of a memory series is
extended automatically (``warmup.cut_warmup``) while its early level is still off the steady
state.

Counter metrics (threads, file descriptors, shm regions, live objects) must come back: they
leak when the end (median of the last few samples) is above baseline + ``tolerance`` and no
sample of the last third of the analysed series came back to baseline + ``tolerance``, or when
the growth budget is exceeded.  Their warm-up is exactly the profile's: a counter that steps up
early and stays up is a leak, not a late warm-up, so no automatic extension is applied.

Fewer than ``min_points`` samples after warm-up give "inconclusive"; a series with no sample at
all gives "no_data".  Where growth began (``change_point.change_point``) is reported for leaks only;
on a passing series it would describe noise.

Long runs: above ``trend_test.MK_MAX_POINTS`` analysed samples the Mann-Kendall test runs on block
medians (``trend_test`` module docstring: same level, a few per cent less power at 10^5 points), so
``p_value`` and ``tau`` are those of the block medians; the slope and its interval always use
every sample (pairs sampled above ``slope.EXACT_PAIRS_MAX_N``, the interval widened for it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from soak.analysis.change_point import change_point
from soak.analysis.slope import SlopeEstimate, theil_sen
from soak.analysis.trend_test import MK_MAX_POINTS, mann_kendall
from soak.analysis.warmup import MIN_POINTS, cut_warmup
from soak.formatting import by_kind

__all__ = [
    "Finding",
    "MetricKind",
    "MetricRule",
    "Series",
    "Verdict",
    "judge",
    "overall",
    "warmup_cut",
]

log = logging.getLogger(__name__)

MetricKind = Literal["memory", "counter"]
Verdict = Literal["pass", "leak", "inconclusive", "no_data"]

#: Bounds on how many samples the baseline and the end estimates take the median of.
END_POINTS_MIN = 3
END_POINTS_MAX = 25


@dataclass(frozen=True)
class MetricRule:
    """What counts as a leak for one metric.

    ``slope_per_iteration`` is in metric units (bytes for memory) per iteration;
    ``growth_budget`` is the total growth allowed from post-warm-up baseline to end;
    ``tolerance`` is how far above its baseline a counter may end; ``enabled`` False: a
    profile asked not to judge the metric (its callers skip it; :func:`judge` ignores it);
    ``slope_per_unit`` maps a unit of :attr:`Series.units` to the largest acceptable growth per
    unit: where the series counts that unit, it replaces ``slope_per_iteration`` (times the
    unit's mean count per analysed iteration; the smallest of several), so that a leak of a
    few hundred bytes per request is judged as such whatever the burst size.
    """

    metric: str
    kind: MetricKind
    slope_per_iteration: float | None = None
    growth_budget: float | None = None
    tolerance: float = 0.0
    enabled: bool = True
    slope_per_unit: Mapping[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in ("memory", "counter"):
            raise ValueError(
                f"{self.metric}: kind must be 'memory' or 'counter', not {self.kind!r}"
            )
        if (
            self.kind == "memory"
            and self.slope_per_iteration is None
            and self.growth_budget is None
            and not self.slope_per_unit
        ):
            raise ValueError(
                f"{self.metric}: a memory rule needs slope_per_iteration or growth_budget"
            )
        if self.tolerance < 0:
            raise ValueError(f"{self.metric}: tolerance must be >= 0, not {self.tolerance}")


@dataclass(frozen=True, eq=False)
class Series:
    """One metric sampled at the quiet point of each iteration.

    ``values`` may hold NaN (or None, converted to NaN) for missing samples. ``units`` maps a
    unit name ("server", "model_load", "inference") to its count in each iteration, so that a
    slope per iteration can also be stated per unit.
    """

    metric: str
    iterations: np.ndarray
    values: np.ndarray
    units: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Frozen, so normalise through object.__setattr__: callers may pass lists.
        iterations = np.asarray(self.iterations, dtype=np.int64).ravel()
        values = np.asarray(self.values, dtype=float).ravel()
        if iterations.size != values.size:
            raise ValueError(
                f"{self.metric}: {iterations.size} iterations but {values.size} values"
            )
        units = {}
        for name, counts in self.units.items():
            arr = np.asarray(counts, dtype=float).ravel()
            if arr.size != iterations.size:
                raise ValueError(
                    f"{self.metric}: unit {name!r} has {arr.size} counts for "
                    f"{iterations.size} iterations"
                )
            units[name] = arr
        object.__setattr__(self, "iterations", iterations)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "units", units)


@dataclass(frozen=True)
class Finding:
    """The judgement of one metric, with the numbers behind it.

    Slopes are per iteration and NaN where undefined; ``warmup_cut`` is the index of the first
    analysed sample; ``growth_started_at`` is an iteration number.
    """

    metric: str
    kind: MetricKind
    verdict: Verdict
    slope: float
    slope_low: float
    slope_high: float
    slopes_per_unit: dict[str, float]
    p_value: float
    tau: float
    n_used: int
    warmup_cut: int
    baseline: float
    final: float
    total_growth: float
    threshold: float | None
    growth_budget: float | None
    growth_started_at: int | None
    reason: str


def _end_points(n_used: int) -> int:
    """How many samples the baseline and end medians use: a few, more for long series."""
    k = min(max(END_POINTS_MIN, n_used // 10), END_POINTS_MAX)
    return max(1, min(k, n_used // 2))


@dataclass(frozen=True)
class _Prepared:
    """What both rules judge: the analysed samples and the statistics of their trend."""

    iterations: np.ndarray  # every sample, in iteration order
    values: np.ndarray
    cut: int  # index of the first analysed sample
    y: np.ndarray  # the analysed samples (after the warm-up, finite)
    numbers: dict[str, object]  # the Finding's numbers
    baseline: float
    final: float
    growth: float
    slope: SlopeEstimate
    rising: bool  # the corrected Mann-Kendall test finds a rising trend at alpha
    context: str
    slope_text: str
    over_budget: bool
    budget_text: str
    threshold: float | None  # slope_per_iteration, or the tightest per-unit limit scaled
    threshold_text: str  # how a per-unit threshold became this one ("" if it did not)


def judge(
    series: Series,
    rule: MetricRule,
    warmup: int,
    alpha: float = 0.05,
    min_points: int = MIN_POINTS,
) -> Finding:
    """Judge one series against its rule (see the module docstring for the rules)."""
    if series.metric != rule.metric:
        raise ValueError(f"series {series.metric!r} judged with the rule for {rule.metric!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")
    prepared = _prepare(series, rule, warmup, alpha, max(int(min_points), 3))
    if isinstance(prepared, Finding):
        return prepared
    if rule.kind == "memory":
        verdict, reason = _memory_rule(prepared, rule)
    else:
        verdict, reason = _counter_rule(prepared, rule)
    started = None
    if verdict == "leak":
        # Search from the profile's warm-up, not the extended cut: a leak that runs from the
        # start can look like an early level shift to the warm-up check.
        start = min(max(int(warmup), 0), prepared.cut)
        where = change_point(prepared.values[start:])
        if where is not None:
            started = int(prepared.iterations[start + where])
    log.debug("%s: %s: %s", rule.metric, verdict, reason)
    return _finding(
        rule,
        verdict,
        reason,
        growth_started_at=started,
        threshold=prepared.threshold,
        **prepared.numbers,
    )


def _finding(rule: MetricRule, verdict: Verdict, reason: str, **numbers: object) -> Finding:
    """A Finding of ``rule``; numbers not given are NaN (or empty, 0, None)."""
    nan = math.nan
    fields: dict[str, object] = {
        "threshold": rule.slope_per_iteration,
        "slope": nan,
        "slope_low": nan,
        "slope_high": nan,
        "slopes_per_unit": {},
        "p_value": nan,
        "tau": nan,
        "n_used": 0,
        "warmup_cut": 0,
        "baseline": nan,
        "final": nan,
        "total_growth": nan,
        "growth_started_at": None,
    }
    fields.update(numbers)
    return Finding(
        metric=rule.metric,
        kind=rule.kind,
        verdict=verdict,
        growth_budget=rule.growth_budget,
        reason=reason,
        **fields,  # type: ignore[arg-type]
    )


def warmup_cut(series: Series, kind: MetricKind, warmup: int, min_points: int = MIN_POINTS) -> int:
    """Where :func:`judge` starts a series (index into its samples in iteration order): the
    numbers before the rule, for `soak compare` on a run that has no stored findings yet.
    0 for a series with no sample at all, as judge's no-data finding says."""
    values = series.values[np.argsort(series.iterations, kind="stable")]
    if not np.isfinite(values).any():
        return 0
    return _cut(values, kind, warmup, max(int(min_points), 3))


def _cut(values: np.ndarray, kind: MetricKind, warmup: int, min_points: int) -> int:
    """Memory warm-ups are extended while the early level is off; counters' never are."""
    if kind == "memory":
        return cut_warmup(values, warmup, min_points)
    return min(max(int(warmup), 0), values.size)


def _prepare(
    series: Series, rule: MetricRule, warmup: int, alpha: float, min_points: int
) -> _Prepared | Finding:
    """Sort, cut the warm-up and estimate the trend; a Finding when there is too little data."""
    order = np.argsort(series.iterations, kind="stable")
    iterations = series.iterations[order]
    values = series.values[order]
    units = {name: counts[order] for name, counts in series.units.items()}
    finite = np.isfinite(values)
    if not finite.any():
        return _finding(
            rule,
            "no_data",
            f"{rule.metric}: no samples ({values.size} iterations, all missing).",
        )
    cut = _cut(values, rule.kind, warmup, min_points)
    keep = finite.copy()
    keep[:cut] = False
    n_used = int(keep.sum())
    x = iterations[keep].astype(float)
    y = values[keep]
    if n_used < min_points:
        return _finding(
            rule,
            "inconclusive",
            f"{rule.metric}: only {n_used} samples after the warm-up (index {cut}); "
            f"at least {min_points} are needed to judge.",
            n_used=n_used,
            warmup_cut=cut,
        )

    k = _end_points(n_used)
    baseline = float(np.median(y[:k]))
    final = float(np.median(y[-k:]))
    growth = final - baseline
    slope = theil_sen(x, y, alpha)
    # Hamed-Rao detrends by the Theil-Sen slope per position; with equally spaced iterations
    # that is this slope times the spacing, so it is not computed a second time.
    steps = np.diff(x)
    per_position = None
    if steps.size and steps[0] > 0 and np.all(steps == steps[0]):
        per_position = slope.slope * float(steps[0])
    trend = mann_kendall(
        y, autocorrelation="hamed_rao", max_points=MK_MAX_POINTS, trend_slope=per_position
    )
    per_unit = {}
    means = {}
    for name, counts in units.items():
        mean = float(np.nanmean(counts[keep])) if np.isfinite(counts[keep]).any() else math.nan
        means[name] = mean
        per_unit[name] = slope.slope / mean if mean > 0 else math.nan
    threshold = rule.slope_per_iteration
    threshold_text = ""
    scaled = [
        (limit * means[name], name, limit)
        for name, limit in rule.slope_per_unit.items()
        if means.get(name, math.nan) > 0
    ]
    if scaled:
        threshold, name, limit = min(scaled)
        unit = name.replace("_", " ")
        threshold_text = (
            f" ({by_kind(limit, rule.kind)}/{unit} x {means[name]:.4g} {unit}s per iteration)"
        )
    level = f"{100 * (1 - alpha):.0f}%"
    f = lambda v: by_kind(v, rule.kind)  # noqa: E731
    budget = rule.growth_budget
    over_budget = budget is not None and growth > budget
    return _Prepared(
        iterations=iterations,
        values=values,
        cut=cut,
        y=y,
        numbers={
            "slope": slope.slope,
            "slope_low": slope.low,
            "slope_high": slope.high,
            "slopes_per_unit": per_unit,
            "p_value": trend.p_value,
            "tau": trend.tau,
            "n_used": n_used,
            "warmup_cut": cut,
            "baseline": baseline,
            "final": final,
            "total_growth": growth,
        },
        baseline=baseline,
        final=final,
        growth=growth,
        slope=slope,
        rising=trend.s > 0 and trend.p_value < alpha,
        context=f"{n_used} samples from index {cut}",
        slope_text=(
            f"{f(slope.slope)}/iteration ({level} CI {f(slope.low)} to {f(slope.high)}, "
            f"Mann-Kendall p={trend.p_value:.2g})"
        ),
        over_budget=over_budget,
        budget_text=(
            f"grew {f(growth)} from baseline {f(baseline)} to {f(final)}, "
            f"{'over' if over_budget else 'within'} the {f(budget)} budget"
        ),
        threshold=threshold,
        threshold_text=threshold_text,
    )


def _memory_rule(p: _Prepared, rule: MetricRule) -> tuple[Verdict, str]:
    """Leak: growing faster than the threshold with confidence, or over the growth budget."""
    f = lambda v: by_kind(v, rule.kind)  # noqa: E731
    threshold, how = p.threshold, p.threshold_text
    too_fast = threshold is not None and p.slope.low > threshold and p.rising
    maybe_fast = threshold is not None and p.slope.slope > threshold and not too_fast
    reasons = []
    if too_fast:
        reasons.append(f"grows {p.slope_text}, above the {f(threshold)}/iteration threshold{how}")
    if p.over_budget:
        reasons.append(p.budget_text)
    if reasons:
        return "leak", f"{rule.metric} " + "; ".join(reasons) + f" ({p.context})."
    if maybe_fast:
        return "inconclusive", (
            f"{rule.metric} grows about {p.slope_text}, above the {f(threshold)}/iteration "
            f"threshold{how}, but the evidence is not conclusive ({p.context}); "
            "run more iterations."
        )
    parts = []
    if threshold is not None:
        parts.append(f"slope {p.slope_text} is within the {f(threshold)}/iteration threshold{how}")
    if rule.growth_budget is not None:
        parts.append(p.budget_text)
    return "pass", f"{rule.metric} " + "; ".join(parts) + f" ({p.context})."


def _counter_rule(p: _Prepared, rule: MetricRule) -> tuple[Verdict, str]:
    """Leak: ending above baseline + tolerance without coming back late, or over budget."""
    f = lambda v: by_kind(v, rule.kind)  # noqa: E731
    limit = p.baseline + rule.tolerance
    tail = p.y[-max(1, math.ceil(p.y.size / 3)) :]
    came_back = bool(np.any(tail <= limit))
    stuck_high = p.final > limit and not came_back
    reasons = []
    if stuck_high:
        reasons.append(
            f"ended at {f(p.final)}, {f(p.growth)} above its baseline {f(p.baseline)} "
            f"(tolerance {f(rule.tolerance)}), and none of the last {tail.size} samples "
            f"came back to {f(limit)}"
        )
    if p.over_budget:
        reasons.append(p.budget_text)
    if reasons:
        return "leak", f"{rule.metric} " + "; ".join(reasons) + f" ({p.context})."
    if p.final <= limit:
        what = f"ended at {f(p.final)}, within {f(rule.tolerance)} of its baseline {f(p.baseline)}"
    else:
        what = (
            f"ended at {f(p.final)} but came back to within {f(rule.tolerance)} of its "
            f"baseline {f(p.baseline)} in the last {tail.size} samples"
        )
    if rule.growth_budget is not None:
        what += f"; {p.budget_text}"
    return "pass", f"{rule.metric} {what} ({p.context})."


def overall(findings: Iterable[Finding]) -> str:
    """The run's verdict: "leak" if any leak, else "inconclusive" if any, else "pass".

    "no_data" findings are ignored: a metric the machine cannot measure (no GPU) says nothing
    about leaks. When every finding is "no_data" nothing was measured: "inconclusive".
    """
    verdicts = {finding.verdict for finding in findings}
    if "leak" in verdicts:
        return "leak"
    if "inconclusive" in verdicts:
        return "inconclusive"
    if verdicts and verdicts <= {"no_data"}:
        return "inconclusive"  # nothing was measured: no evidence either way
    return "pass"
