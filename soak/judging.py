"""Judging a stored run: read its quiet-point series, judge every metric, build findings rows.

Between the store and the analysis: the statistics live in `soak.analysis` and never see SQL;
this module never sees Triton. Thresholds come from the profile text stored with the run, so
`soak analyze` re-judges a run exactly as `soak run` did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from soak import profile as profiles
from soak.analysis.sites import SiteFinding, SiteRule, judge_sites, site_notes
from soak.analysis.verdict import Finding, MetricRule, judge, overall
from soak.errors import ExitCode, SoakError
from soak.store import Store, latest_run_id, load_series, load_site_series, open_readonly, run_row
from soak.store.rows import finding_row

EXIT_OF_VERDICT = {
    "pass": ExitCode.PASSED,
    "leak": ExitCode.LEAK,
    "inconclusive": ExitCode.INCONCLUSIVE,
}
VERDICT_STATUS = {"pass": "passed", "leak": "leaked", "inconclusive": "inconclusive"}
#: How findings are listed everywhere: leaks first, then inconclusive, pass, no data.
VERDICT_ORDER = {"leak": 0, "inconclusive": 1, "pass": 2, "no_data": 3}
#: Samples after the warm-up a metric needs before it is judged at all.
MIN_POINTS = 5


def verdict_rank(verdict: str | None) -> int:
    """A finding's place in listings (:data:`VERDICT_ORDER`; unknown verdicts last)."""
    return VERDICT_ORDER.get(verdict or "", len(VERDICT_ORDER))


@dataclass(frozen=True)
class RunAnalysis:
    run_id: int
    status: str  # the run's status after the analysis
    verdict: str  # "pass" | "leak" | "inconclusive"
    exit_code: ExitCode
    findings: list[Finding]
    warmup: int
    # Allocation sites (attribution): they say where metric growth comes from; they never
    # change the verdict.
    sites: list[SiteFinding] = field(default_factory=list)
    site_notes: list[str] = field(default_factory=list)
    note: str = ""  # why an inconclusive verdict (see verdict_note); '' otherwise


def purpose_of(run: dict[str, Any]) -> str:
    """The run's profile `purpose` as stored in its config ('leaks' for runs made before the
    key existed)."""
    config = json.loads(run.get("config") or "{}")
    return str(config.get("run", {}).get("purpose") or "leaks")


def verdict_note(
    findings: list[Finding], verdict: str, purpose: str, iterations: int, warmup: int
) -> str:
    """One line saying why a verdict is inconclusive ('' for any other verdict), so that a
    newcomer's short run does not read as a failure; for a machinery check, that it passed."""
    if verdict != "inconclusive":
        return ""
    open_ = [f for f in findings if f.verdict in ("inconclusive", "no_data")]
    if open_ and all(f.n_used < MIN_POINTS for f in open_):
        why = (
            f"{iterations} iterations: a verdict needs at least {MIN_POINTS} after the "
            f"warm-up ({warmup}); run the cpu profile for one"
        )
    else:
        first = next((f for f in open_ if f.verdict == "inconclusive"), open_[0] if open_ else None)
        why = f"{len(open_)} of {len(findings)} metrics undecided" + (
            f"; first: {first.reason}" if first else ""
        )
    if purpose == "machinery":
        return f"machinery check: {why}"
    return f"inconclusive: {why}"


def rules_for(run: dict[str, Any]) -> tuple[list[MetricRule], int]:
    """Rules and warm-up from the profile stored with the run."""
    try:
        prof = profiles.parse(run["profile_text"] or "", run["profile_source"] or "<stored>")
        thresholds = prof.thresholds
    except SoakError:
        thresholds = profiles.default_thresholds()
    config = json.loads(run["config"] or "{}")
    warmup = int(config.get("run", {}).get("warmup", 1))
    rules = [rule for rule in thresholds.values() if rule.enabled]
    return rules, warmup


def measured_rules(rules: list[MetricRule], series: dict[str, Any]) -> list[MetricRule]:
    """The rules a run is judged on: the client metrics only where the client was sampled
    apart from the servers (target tritonserver); in-process they are NULL and not judged."""
    return [
        r
        for r in rules
        if r.metric not in profiles.CLIENT_METRICS or np.isfinite(series[r.metric].values).any()
    ]


def analyze_run(db: sqlite_utils.Database, run_id: int) -> RunAnalysis:
    """Judge every metric of a run; decides the status of a run that ran to its end."""
    run = run_row(db, run_id)
    rules, warmup = rules_for(run)
    series = load_series(db, run_id, [r.metric for r in rules])
    rules = measured_rules(rules, series)
    findings = [judge(series[r.metric], r, warmup, min_points=MIN_POINTS) for r in rules]
    findings.sort(key=lambda f: (verdict_rank(f.verdict), f.metric))
    verdict = overall(findings)
    status = run["status"]
    purpose = purpose_of(run)
    if status in ("passed", "leaked", "inconclusive"):
        status = VERDICT_STATUS[verdict]
        code = EXIT_OF_VERDICT[verdict]
        if purpose == "machinery" and verdict == "inconclusive":
            # Every check passed in a run that was never meant to judge leaks: a success.
            status, code = "passed", ExitCode.PASSED
    elif status == "interrupted":
        # Cut short: a leak is still a leak, but a pass proves nothing.
        code = ExitCode.LEAK if verdict == "leak" else ExitCode.INCONCLUSIVE
    elif status == "running":  # still going, or abandoned by a killed supervisor
        code = EXIT_OF_VERDICT[verdict]
    else:
        code = ExitCode.FAILED
    sites, notes = analyze_sites(db, run, findings)
    done = int(run.get("iterations_done") or 0)
    note = verdict_note(findings, verdict, purpose if status == "passed" else "leaks", done, warmup)
    return RunAnalysis(run_id, status, verdict, code, findings, warmup, sites, notes, note)


def analyze_and_store(store: Store, run_id: int) -> RunAnalysis:
    """Judge a run and store its findings, status, verdict and exit code (`soak analyze`,
    and `soak run` after each cell)."""
    analysis = analyze_run(store.db, run_id)
    store.write_findings(
        run_id,
        [finding_row(f) for f in analysis.findings] + [site_finding_row(f) for f in analysis.sites],
    )
    store.update_run(
        run_id,
        status=analysis.status,
        verdict=analysis.verdict,
        exit_code=int(analysis.exit_code),
    )
    return analysis


def reanalyze(path: str | Path, run_id: int | None = None) -> RunAnalysis:
    """`soak analyze`: judge a stored run (default: the latest) again and store the result.

    A missing or foreign file, or a run that is not there, is refused before anything is
    written.
    """
    ro = open_readonly(path)
    try:
        rid = run_id if run_id is not None else latest_run_id(ro)
        run_row(ro, rid)
    finally:
        ro.conn.close()
    store = Store(path)
    try:
        return analyze_and_store(store, rid)
    finally:
        store.close()


# -- allocation sites (attribution) ---------------------------------------------------------
def site_rule_for(run: dict[str, Any]) -> SiteRule:
    """The [attribution] thresholds stored with the run (defaults when absent)."""
    config = json.loads(run["config"] or "{}").get("attribution") or {}
    default = SiteRule()
    return SiteRule(
        float(config.get("slope_per_iteration", default.slope_per_iteration)),
        float(config.get("allocations_per_iteration", default.allocations_per_iteration)),
    )


def analyze_sites(
    db: sqlite_utils.Database, run: dict[str, Any], findings: list[Finding]
) -> tuple[list[SiteFinding], list[str]]:
    """Judge the run's stored allocation sites; ([], []) for a run without attribution."""
    series = load_site_series(db, run["id"])
    if not series:
        return [], []
    rule = site_rule_for(run)
    total = series.pop(0, None)
    judged = judge_sites(list(series.values()), rule)
    total_finding = judge_sites([total], rule)[0].bytes if total is not None else None
    return judged, site_notes(findings, total_finding, judged)


def site_finding_row(f: SiteFinding) -> dict[str, Any]:
    """A site finding as a row of `findings`: metric `site:<id>`, kind `site`."""
    row = finding_row(f.bytes)
    row.update(metric=f.metric, kind="site", verdict=f.verdict, reason=f.reason)
    return row
