"""soak.run_analysis's one line about an inconclusive verdict, and the machinery purpose."""

from __future__ import annotations

import json

import numpy as np

from soak.analysis.run_verdict import verdict_note
from soak.analysis.verdict import MetricRule, Series, judge
from soak.analysis.warmup import MIN_POINTS
from soak.errors import ExitCode
from soak.run_analysis import analyze_run
from soak.run_settings import purpose_of
from soak.store import Store

RULE = MetricRule("fds", "counter", None, None, 0.0)


def finding(values: list[float], warmup: int = 1):
    n = len(values)
    series = Series("fds", np.arange(n), np.array(values, dtype=float))
    return judge(series, RULE, warmup, min_points=MIN_POINTS)


def test_a_short_run_says_how_many_iterations_a_verdict_needs():
    short = finding([7.0, 7.0, 7.0])
    assert short.verdict == "inconclusive"
    note = verdict_note([short], "inconclusive", "leaks", 3, 1)
    assert note == (
        f"inconclusive: 3 iterations: a verdict needs at least {MIN_POINTS} after the "
        "warm-up (1); run the cpu profile for one"
    )
    assert verdict_note([short], "inconclusive", "machinery", 3, 1).startswith(
        "machinery check: 3 iterations"
    )
    assert verdict_note([finding([7.0] * 12)], "pass", "leaks", 12, 1) == ""


def test_purpose_defaults_to_leaks_for_runs_stored_before_the_key():
    assert purpose_of({"config": None}) == "leaks"
    assert purpose_of({"config": json.dumps({"run": {"purpose": "machinery"}})}) == "machinery"


def test_a_machinery_run_that_completed_passes_and_a_leaks_run_is_inconclusive(tmp_path):
    store = Store(tmp_path / "r.db")
    try:
        for purpose in ("machinery", "leaks"):
            run_id = store.create_run(
                {
                    "profile": "smoke",
                    "iterations_planned": 3,
                    "config": {"run": {"warmup": 1, "purpose": purpose}},
                }
            )
            store.update_run(run_id, status="passed", iterations_done=3)
        machinery, leaks = analyze_run(store.db, 1), analyze_run(store.db, 2)
    finally:
        store.close()
    assert (machinery.status, machinery.verdict, machinery.exit_code) == (
        "passed",
        "inconclusive",
        ExitCode.PASSED,
    )
    assert machinery.note.startswith("machinery check: 3 iterations")
    assert (leaks.status, leaks.exit_code) == ("inconclusive", ExitCode.INCONCLUSIVE)
    assert leaks.note.startswith("inconclusive: 3 iterations")


def test_a_run_that_failed_before_its_first_iteration_ends_with_its_reason(tmp_path):
    """Not "inconclusive: 0 iterations ... run the cpu profile": the failure is the news."""
    store = Store(tmp_path / "r.db")
    reason = "model 'm' does not load: boom"
    try:
        for status in ("failed", "hung", "crashed"):
            run_id = store.create_run(
                {"profile": "p", "iterations_planned": 5, "config": {"run": {"warmup": 1}}}
            )
            store.update_run(run_id, status=status, reason=reason, iterations_done=0)
        analyses = [analyze_run(store.db, i) for i in (1, 2, 3)]
    finally:
        store.close()
    for analysis, status in zip(analyses, ("failed", "hung", "crashed"), strict=True):
        assert analysis.exit_code == ExitCode.FAILED
        assert analysis.note == f"{status}: {reason}"
        assert "cpu profile" not in analysis.note
