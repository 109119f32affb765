"""Judging a stored run: read its quiet-point series, judge every metric, build findings rows.

Between the store and the analysis: the statistics live in `soak.analysis` and never see SQL;
this module never sees Triton. Thresholds come from the profile text stored with the run, so
`soak analyze` re-judges a run exactly as `soak run` did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from soak.analysis.run_verdict import verdict_note, verdict_rank
from soak.analysis.site_verdict import SiteFinding, judge_sites, notes_with_total
from soak.analysis.verdict import Finding, judge, overall
from soak.errors import ExitCode
from soak.run_settings import measured_rules, purpose_of, rules_for, site_rule_for
from soak.store import Store, latest_run_id, load_series, load_site_series, open_readonly, run_row
from soak.store.rows import finding_row

EXIT_OF_VERDICT = {
    "pass": ExitCode.PASSED,
    "leak": ExitCode.LEAK,
    "inconclusive": ExitCode.INCONCLUSIVE,
}
VERDICT_STATUS = {"pass": "passed", "leak": "leaked", "inconclusive": "inconclusive"}


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


def analyze_run(db: sqlite_utils.Database, run_id: int) -> RunAnalysis:
    """Judge every metric of a run; decides the status of a run that ran to its end."""
    run = run_row(db, run_id)
    rules, warmup = rules_for(run)
    series = load_series(db, run_id, [r.metric for r in rules])
    rules = measured_rules(rules, series)
    findings = [judge(series[r.metric], r, warmup) for r in rules]
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
    if code == ExitCode.FAILED:  # failed, hung, crashed: why it failed is the last word
        note = f"{status}: {run.get('reason') or 'no reason recorded'}"
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
    return judged, notes_with_total(findings, total, judged, rule)


def site_finding_row(f: SiteFinding) -> dict[str, Any]:
    """A site finding as a row of `findings`: metric `site:<id>`, kind `site`."""
    row = finding_row(f.bytes)
    row.update(metric=f.metric, kind="site", verdict=f.verdict, reason=f.reason)
    return row
