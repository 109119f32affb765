"""`soak compare --upgrade` on the console: per cell, each version's run, then one table of
metrics by unit with the newer version's verdict; what regressed spelled out; the rule."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from soak.analysis.upgrade import UPGRADE_RULE, UnitSlope
from soak.formatting import cell_label, human
from soak.profile.schema import MATRIX_KEYS
from soak.report.compare import VERDICT_STYLE
from soak.triage.upgrade import CellUpgrade, Side, Upgrade


def print_upgrade(console: Console, result: Upgrade) -> None:
    """One table per cell pair, the newer version's new problems, the verdict line."""
    console.print(f"matrix {result.matrix}: Triton {result.old} -> {result.new}")
    for cell in result.cells:
        label = cell_label(cell.cell, MATRIX_KEYS)
        console.print()
        console.print(Text(f"[{label}]", style="bold"))
        console.print(f"  {result.old}: {_side(cell.old)}")
        console.print(f"  {result.new}: {_side(cell.new)}")
        for problem in cell.new_problems:
            console.print(Text(f"  new in {result.new}: {problem}", style="bold red"))
        if not (cell.old.ran and cell.new.ran):
            who = result.old if not cell.old.ran else result.new
            console.print(Text(f"  not compared: no iteration ran on {who}", style="bold red"))
            continue
        _table(console, cell, result)
    if result.ignored:
        cells = "; ".join(cell_label(c, MATRIX_KEYS) for c in result.ignored)
        console.print(f"\nother Triton versions in the matrix (not compared): {cells}")
    worse = [(c, m) for c in result.cells for m in c.metrics if m.verdict == "worse"]
    console.print()
    for cell, m in worse:
        console.print(
            Text(
                f"worse: [{cell_label(cell.cell, MATRIX_KEYS)}] {m.metric} per {m.unit}: ",
                style="bold red",
            )
            + Text(
                f"{_signed(m.difference, m.metric)} ({result.old} {_slope(m.old, m.metric)}, "
                f"{result.new} {_slope(m.new, m.metric)}; threshold {human(m.threshold, m.metric)})"
            )
        )
    code = int(result.exit_code)
    summary = {0: "no regression", 1: f"Triton {result.new} regresses", 2: "a side did not run"}
    console.print(Text(f"upgrade {result.old} -> {result.new}: {summary[code]}", style="bold"))
    console.print(Text(UPGRADE_RULE, style="dim"))


def _side(side: Side) -> str:
    if side.run_id is None:
        return "no run"
    version = side.triton_version or "version unknown"
    return (
        f"run {side.run_id} {side.status}, {side.iterations_done} iterations, "
        f"{side.failures} failures (Triton {version})"
    )


def _table(console: Console, cell: CellUpgrade, result: Upgrade) -> None:
    table = Table(box=None, padding=(0, 1), pad_edge=False)
    for col in ("metric", "per", result.old, result.new, "difference", "threshold", "verdict"):
        table.add_column(col, justify="left" if col in ("metric", "per", "verdict") else "right")
    flat = _flat_metrics(cell)
    for m in cell.metrics:
        if m.verdict == "no data" or m.metric in flat:
            continue
        table.add_row(
            m.metric,
            m.unit,
            _slope(m.old, m.metric),
            _slope(m.new, m.metric),
            _signed(m.difference, m.metric),
            human(m.threshold, m.metric),
            Text(m.verdict, style=VERDICT_STYLE.get(m.verdict, "")),
        )
    console.print(table)
    if flat:
        console.print(f"  flat on both versions (slope 0 per every unit): {', '.join(flat)}")
    counts = {v: sum(m.verdict == v for m in cell.metrics) for v in VERDICT_STYLE}
    console.print("  " + ", ".join(f"{n} {v}" for v, n in counts.items() if n))


def _flat_metrics(cell: CellUpgrade) -> list[str]:
    """Metrics whose every slope and bound is exactly 0 on both sides: one line, not rows."""
    rows: dict[str, list[bool]] = {}
    for m in cell.metrics:
        zero = all(v == 0 for u in (m.old, m.new) for v in (u.slope, u.low, u.high))
        rows.setdefault(m.metric, []).append(zero)
    return [metric for metric, zeros in rows.items() if all(zeros)]


def _slope(side: UnitSlope, metric: str) -> str:
    if not side.usable:
        return "-"
    return f"{human(side.slope, metric)} [{human(side.low, metric)}, {human(side.high, metric)}]"


def _signed(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    shown = human(abs(value), metric)
    if shown.strip("0. ").startswith(("B", "KiB", "MiB")) or shown.strip("0.") == "":
        return shown  # rounds to zero: no sign
    return ("+" if value > 0 else "-") + shown
