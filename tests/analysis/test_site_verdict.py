"""Judging allocation-site series: synthetic series with known growth, no Triton."""

from __future__ import annotations

import math

import numpy as np

from soak.analysis.site_verdict import SiteRule, SiteSeries, judge_sites, site_notes
from soak.analysis.verdict import Finding

N = 40
IT = np.arange(2, 2 + N)


def series(site_id: int, live_bytes, live_count, thread: str = "native") -> SiteSeries:
    return SiteSeries(site_id, f"site {site_id}", thread, IT, live_bytes, live_count)


def noise(seed: int, scale: float) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, scale, N)


def test_a_site_that_keeps_allocations_grows_and_a_steady_one_does_not():
    leak = series(1, 50_000 + 2048 * np.arange(N) + noise(1, 300), 10 + np.arange(N))
    steady = series(2, 80_000 + noise(2, 3000), np.full(N, 40))
    found = judge_sites([steady, leak], SiteRule())
    assert [f.site_id for f in found] == [1, 2]
    assert found[0].verdict == "leak"
    assert math.isclose(found[0].bytes.slope, 2048, rel_tol=0.05)
    assert found[0].count_slope == 1
    assert found[1].verdict == "pass"


def test_growth_below_the_byte_threshold_is_no_finding():
    small = series(1, 1000 + 512 * np.arange(N), np.arange(N))
    assert judge_sites([small], SiteRule())[0].verdict == "pass"
    assert judge_sites([small], SiteRule(slope_per_iteration=256))[0].verdict == "leak"


def test_a_buffer_that_grows_without_more_allocations_is_not_a_leak():
    buffer = series(1, 4096 + 4096 * np.arange(N), np.ones(N))
    (found,) = judge_sites([buffer], SiteRule())
    assert found.verdict == "pass"
    assert "a buffer that grows" in found.reason


def metric(name: str, verdict: str, slope: float) -> Finding:
    return Finding(
        name, "memory", verdict, slope, slope, slope, {}, 0.01, 0.5, N, 0, 0, 0, 0, 0, 0, None, ""
    )


def test_stub_growth_and_growth_no_allocation_holds_are_said():
    held = judge_sites([series(0, np.full(N, 1e6), np.full(N, 100))], SiteRule())[0].bytes
    metrics = [metric("rss_bytes", "leak", 300 * 1024), metric("children_rss_bytes", "leak", 1e6)]
    notes = site_notes(metrics, held, [])
    assert len(notes) == 2
    assert "stubs are separate processes" in notes[0]
    assert "held by no live allocation" in notes[1]


def test_growth_the_traced_allocations_account_for_needs_no_note():
    total = series(0, 1e6 + 300 * 1024 * np.arange(N), 100 + np.arange(N))
    held = judge_sites([total], SiteRule())[0].bytes
    assert site_notes([metric("rss_bytes", "leak", 300 * 1024)], held, []) == []
    assert site_notes([metric("rss_bytes", "pass", 1024)], held, []) == []
