"""The console summary of a run's findings: leaking metrics first, numbers with units."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from soak.analysis.site_verdict import EXPLAINED_METRICS, SiteFinding
from soak.analysis.verdict import Finding
from soak.formatting import cell_label, human

if TYPE_CHECKING:
    from soak.run_analysis import RunAnalysis

STATUS_STYLE = {
    "passed": "green",
    "leaked": "bold red",
    "failed": "red",
    "crashed": "red",
    "hung": "red",
    "abandoned": "magenta",
    "running": "cyan",
    "interrupted": "yellow",
    "inconclusive": "yellow",
}
_STYLE = {"leak": "bold red", "inconclusive": "yellow", "pass": "green", "no_data": "dim"}


#: The unit the per-unit column shows: the first one the run has (servers have every unit,
#: reload has no server lifecycle per iteration, traffic only inferences and errors).
UNIT_ORDER = (
    "server",
    "model_load",
    "failed_load",
    "inference",
    "error",
    "response",
    "cache_hit",
    "cache_insertion",
)


def table_unit(findings: list[Finding]) -> str:
    """The unit of the per-unit column: the first of UNIT_ORDER with a slope in any finding."""
    for unit in UNIT_ORDER:
        for f in findings:
            value = f.slopes_per_unit.get(unit)
            if value is not None and math.isfinite(value):
                return unit
    return "server"


#: Site rows shown under a metric in the console table; `soak show` and the reports have all.
SITES_SHOWN = 10


def _site_anchor(findings: list[Finding]) -> str | None:
    """The metric site rows go under: the first growing memory metric live allocations can
    explain, else rss_bytes."""
    for f in findings:
        if f.metric in EXPLAINED_METRICS and f.verdict in ("leak", "inconclusive"):
            return f.metric
    return "rss_bytes"


def findings_table(
    findings: list[Finding], title: str = "", sites: list[SiteFinding] | None = None
) -> Table:
    unit = table_unit(findings)
    table = Table(title=title or None, show_lines=False)
    for col in (
        "metric",
        "verdict",
        "slope/iter",
        "95% interval",
        "growth",
        "threshold/iter",
        "budget",
        "growth began",
        f"per {unit.replace('_', ' ')}",
    ):
        table.add_column(col, justify="left" if col in ("metric", "verdict") else "right")
    for f in findings:
        table.add_row(
            f.metric,
            f"[{_STYLE.get(f.verdict, '')}]{f.verdict}[/]",
            human(f.slope, f.metric),
            f"[{human(f.slope_low, f.metric)}, {human(f.slope_high, f.metric)}]",
            human(f.total_growth, f.metric),
            human(f.threshold, f.metric),
            human(f.growth_budget, f.metric),
            "-" if f.growth_started_at is None else f"iteration {f.growth_started_at + 1}",
            human(f.slopes_per_unit.get(unit), f.metric),
        )
        if sites and f.metric == _site_anchor(findings):
            for site in [s for s in sites if s.verdict != "pass"][:SITES_SHOWN]:
                b = site.bytes
                table.add_row(
                    escape(f"  site {site.site_id}: {site.summary} [{site.thread}]"),
                    f"[{_STYLE.get(site.verdict, '')}]{site.verdict}[/]",
                    human(b.slope, "live_bytes"),
                    f"[{human(b.slope_low, 'live_bytes')}, {human(b.slope_high, 'live_bytes')}]",
                    human(b.total_growth, "live_bytes"),
                    human(b.threshold, "live_bytes"),
                    "-",
                    "-",
                    human(b.slopes_per_unit.get("server"), "live_bytes"),
                )
    return table


def wide_console() -> Console:
    """Rich wraps to 80 columns off a terminal; a CI log deserves the whole table."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def print_summary(
    findings: list[Finding],
    verdict: str,
    status: str,
    run_id: int,
    console: Console | None = None,
    sites: list[SiteFinding] | None = None,
    site_notes: list[str] | None = None,
    note: str = "",
) -> None:
    console = console or wide_console()
    console.print(findings_table(findings, title=f"run {run_id}: findings", sites=sites))
    for f in findings:
        if f.verdict == "leak":
            console.print(f"[bold red]LEAK[/] {f.reason}")
    for site in sites or []:
        if site.verdict == "leak":
            console.print(f"[bold red]GROWING SITE {site.site_id}[/] {escape(site.reason)}")
    for site_note in site_notes or []:
        console.print(f"[yellow]NOTE[/] {escape(site_note)}")
    if sites and not any(s.verdict == "leak" for s in sites):
        console.print(f"allocation sites: none grows ({len(sites)} traced site(s) judged)")
    console.print(f"run {run_id}: status [bold]{status}[/], verdict [bold]{verdict}[/]")
    if note:
        console.print(Text(f"run {run_id}: {note}"), soft_wrap=True)  # one line, for grep


def print_analysis(analysis: RunAnalysis, console: Console | None = None) -> None:
    """The summary of one judged run, as `soak run` and `soak analyze` print it."""
    print_summary(
        analysis.findings,
        analysis.verdict,
        analysis.status,
        analysis.run_id,
        console,
        sites=analysis.sites,
        site_notes=analysis.site_notes,
        note=analysis.note,
    )


def cell_heading(name: str, cell: dict[str, Any], run: dict[str, Any], db: str) -> str:
    """The line `soak run` prints before a cell (or a plain profile) starts."""
    label = cell_label(cell, empty="")
    return (
        f"soak: {name}{' [' + label + ']' if label else ''}: "
        f"{run['servers']} servers x {run['iterations']} iterations, "
        f"{run['memory_type']} memory, {run['instance_kind']} instances -> {db}"
    )
