"""The console summary of a run's findings: leaking metrics first, numbers with units."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from soak.analysis.verdict import Finding

_STYLE = {"leak": "bold red", "inconclusive": "yellow", "pass": "green", "no_data": "dim"}


def human(value: float | None, metric: str) -> str:
    """Bytes as KiB/MiB, counters as plain numbers; NaN and None as a dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if metric.endswith("_bytes"):
        size = abs(value)
        for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if size >= scale:
                return f"{value / scale:.2f} {unit}"
        return f"{value:.0f} B"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


#: The unit the per-unit column shows: the first one the run has (servers have every unit,
#: reload has no server lifecycle per iteration, traffic only inferences and errors).
UNIT_ORDER = ("server", "model_load", "failed_load", "inference", "error")


def table_unit(findings: list[Finding]) -> str:
    """The unit of the per-unit column: the first of UNIT_ORDER with a slope in any finding."""
    for unit in UNIT_ORDER:
        for f in findings:
            value = f.slopes_per_unit.get(unit)
            if value is not None and math.isfinite(value):
                return unit
    return "server"


def findings_table(findings: list[Finding], title: str = "") -> Table:
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
    return table


def wide_console() -> Console:
    """Rich wraps to 80 columns off a terminal; a CI log deserves the whole table."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def print_summary(
    findings: list[Finding], verdict: str, status: str, run_id: int, console: Console | None = None
) -> None:
    console = console or wide_console()
    console.print(findings_table(findings, title=f"run {run_id}: findings"))
    for f in findings:
        if f.verdict == "leak":
            console.print(f"[bold red]LEAK[/] {f.reason}")
    console.print(f"run {run_id}: status [bold]{status}[/], verdict [bold]{verdict}[/]")
