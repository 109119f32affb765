"""Which allocation sites grow: each site's live bytes per quiet point judged like a metric.

A site's series (bytes still live at each quiet point after the warm-up, from
``soak.sampling.memray_sites``) is judged with the very statistics of the memory metrics
(``verdict.judge``: Theil-Sen slope and interval, Hamed-Rao-corrected Mann-Kendall, automatic
warm-up cut) against ``slope_per_iteration`` bytes. A growing site must also hold more live
allocations every iteration (Theil-Sen slope of its count at least
``allocations_per_iteration``): a buffer that is reallocated larger is a high-water mark, not
a leak of allocations.

Two things no site can say are said here too: growth of the python-backend stubs (separate
processes, never traced), and growth of a memory metric that the traced live allocations do
not account for (allocator retention, fragmentation, mapped pages, or memory memray cannot
see). Pure: numpy and the standard library; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from soak.analysis.slope import theil_sen
from soak.analysis.verdict import Finding, MetricRule, Series, Verdict, judge
from soak.formatting import by_kind

__all__ = [
    "SiteFinding",
    "SiteRule",
    "SiteSeries",
    "judge_sites",
    "notes_with_total",
    "site_notes",
]

#: A memory metric's growth counts as held by live allocations when they grow at least this
#: share of it.
HELD_SHARE = 0.5
#: Metrics whose growth live allocations could explain (the worker's own memory).
EXPLAINED_METRICS = ("rss_bytes", "uss_bytes", "mallinfo_inuse_bytes")


@dataclass(frozen=True)
class SiteRule:
    """When a site grows: bytes (95% lower bound of the slope) and allocations per iteration."""

    slope_per_iteration: float = 1024.0
    allocations_per_iteration: float = 1.0


@dataclass(frozen=True, eq=False)
class SiteSeries:
    """One site's live bytes and allocation count at each quiet point."""

    site_id: int
    summary: str
    thread: str  # "python": reached from Python code; "native": Triton's own threads
    iterations: np.ndarray
    live_bytes: np.ndarray
    live_count: np.ndarray
    python_frame: str | None = None

    @property
    def metric(self) -> str:
        return f"site:{self.site_id}"


@dataclass(frozen=True)
class SiteFinding:
    """The judgement of one site: the bytes finding, the count slope and the overall verdict."""

    site_id: int
    summary: str
    thread: str
    python_frame: str | None
    verdict: Verdict
    bytes: Finding
    count_slope: float
    reason: str

    @property
    def metric(self) -> str:
        return f"site:{self.site_id}"


def judge_sites(
    series: list[SiteSeries], rule: SiteRule, warmup: int = 0, alpha: float = 0.05
) -> list[SiteFinding]:
    """Judge every site; growing sites first, the fastest first."""
    out = []
    memory_rule = lambda metric: MetricRule(metric, "memory", rule.slope_per_iteration)  # noqa: E731
    for s in series:
        finding = judge(
            Series(s.metric, s.iterations, s.live_bytes), memory_rule(s.metric), warmup, alpha
        )
        count_slope = math.nan
        verdict: Verdict = finding.verdict
        cut = finding.warmup_cut
        if finding.n_used >= 2:
            x = np.asarray(s.iterations, dtype=float)[cut:]
            count_slope = theil_sen(x, np.asarray(s.live_count, dtype=float)[cut:], alpha).slope
        where = f"{s.summary} [{s.thread}]"
        if verdict == "leak" and not count_slope >= rule.allocations_per_iteration:
            verdict = "pass"
            reason = (
                f"{where}: live bytes rise ({finding.reason}) but its live allocations grow "
                f"{count_slope:.3g}/iteration, below {rule.allocations_per_iteration:g}: a buffer "
                "that grows, not allocations that stay."
            )
        elif verdict == "leak":
            reason = (
                f"{where} keeps {_size(finding.slope)} and {count_slope:.3g} allocation(s) more "
                f"live per iteration: {finding.reason}"
            )
        else:
            reason = f"{where}: {finding.reason}"
        out.append(
            SiteFinding(
                s.site_id,
                s.summary,
                s.thread,
                s.python_frame,
                verdict,
                finding,
                count_slope,
                reason,
            )
        )
    order = {"leak": 0, "inconclusive": 1, "pass": 2, "no_data": 3}
    out.sort(
        key=lambda f: (
            order[f.verdict],
            -(f.bytes.slope if math.isfinite(f.bytes.slope) else -math.inf),
        )
    )
    return out


def site_notes(
    metrics: list[Finding], total: Finding | None, sites: list[SiteFinding]
) -> list[str]:
    """What the site table cannot show: stubs that grow, growth that no live allocation holds.

    ``metrics`` are the run's metric findings, ``total`` the judgement of the sum of every
    traced live allocation (None: nothing was traced).
    """
    notes = []
    by_metric = {f.metric: f for f in metrics}
    children = by_metric.get("children_rss_bytes")
    if children is not None and children.verdict in ("leak", "inconclusive"):
        notes.append(
            f"children_rss_bytes grows {_size(children.slope)}/iteration ({children.verdict}): "
            "the python-backend stubs are separate processes that memray does not trace, so no "
            "site below can account for it."
        )
    if total is None:
        return notes
    held = total.slope if math.isfinite(total.slope) else 0.0
    for name in EXPLAINED_METRICS:
        f = by_metric.get(name)
        if f is None or f.verdict not in ("leak", "inconclusive") or not f.slope > 0:
            continue
        if held < HELD_SHARE * f.slope:
            growing = sum(1 for s in sites if s.verdict == "leak")
            notes.append(
                f"{name} grows {_size(f.slope)}/iteration ({f.verdict}), but all traced live "
                f"allocations together grow {_size(held)}/iteration ({growing} growing "
                "site(s)): most of it is held by no live allocation (allocator retention, "
                "fragmentation, mapped pages) or by memory memray cannot see (malloc through a "
                "ctypes function pointer, mmap by the stubs); not blamed on a site."
            )
        break  # one metric says it; the others measure the same memory
    return notes


def notes_with_total(
    metrics: list[Finding], total: SiteSeries | None, sites: list[SiteFinding], rule: SiteRule
) -> list[str]:
    """:func:`site_notes`, the sum of every traced live allocation (``total``, site 0) judged
    under ``rule`` first: what `soak analyze` and `soak show` both say."""
    held = judge_sites([total], rule)[0].bytes if total is not None else None
    return site_notes(metrics, held, sites)


def _size(value: float) -> str:
    return by_kind(value, "memory")
