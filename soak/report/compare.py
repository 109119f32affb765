"""`soak compare` on the console: a table per matched cell, what changed, and the rule."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from soak.formatting import cell_label, finite, human
from soak.profile.schema import MATRIX_KEYS
from soak.triage.compare import SIGNIFICANCE_RULE, Comparison, SlopeSide, is_run_spec

VERDICT_STYLE = {"worse": "bold red", "better": "green", "same": "", "no data": "dim"}


def comparison_json(result: Comparison) -> dict[str, Any]:
    """`soak compare --json`: every compared cell's metrics with both sides' slopes, the
    unmatched cells, and the rule the verdicts follow."""

    def side(s: SlopeSide | None) -> dict[str, Any] | None:
        if s is None:
            return None
        return {
            "run": s.run_id,
            "n": s.n,
            "slope": finite(s.slope),
            "low": finite(s.low),
            "high": finite(s.high),
            "variance_factor": finite(s.variance_factor),
            "warmup_cut": s.warmup_cut,
        }

    return {
        "base": result.base,
        "candidate": result.candidate,
        "rule": SIGNIFICANCE_RULE,
        "cells": [
            {
                "cell": c.cell or None,
                "base_run": c.base_run,
                "candidate_run": c.candidate_run,
                "metrics": [
                    {
                        "metric": m.metric,
                        "kind": m.kind,
                        "base": side(m.base),
                        "candidate": side(m.candidate),
                        "difference": finite(m.difference),
                        "significant": m.significant,
                        "verdict": m.verdict,
                    }
                    for m in c.metrics
                ],
            }
            for c in result.cells
        ],
        "base_only": result.base_only,
        "candidate_only": result.candidate_only,
    }


def print_comparison(console: Console, result: Comparison) -> None:
    """Each compared cell as a table with its verdicts, then unmatched cells and the rule."""
    for cell in result.cells:
        title = f"{result.base} -> {result.candidate}"
        if cell.cell:
            title += f" [{cell_label(cell.cell, MATRIX_KEYS)}]"
        if not is_run_spec(result.base):
            title += f": run {cell.base_run} -> run {cell.candidate_run}"
        shown = [m for m in cell.metrics if m.verdict != "no data"]
        table = Table(title=Text(title))
        for col in (
            "metric",
            "base slope/iter [95%]",
            "candidate slope/iter [95%]",
            "difference",
            "significant",
            "verdict",
        ):
            table.add_column(col, justify="left" if col in ("metric", "verdict") else "right")
        for m in shown:
            table.add_row(
                m.metric,
                _slope(m.base, m.metric),
                _slope(m.candidate, m.metric),
                _signed(m.difference, m.metric),
                "yes" if m.significant else "no",
                Text(m.verdict, style=VERDICT_STYLE.get(m.verdict, "")),
            )
        console.print(table)
        for m in shown:
            if m.verdict != "same":
                console.print(
                    Text(f"{m.metric}: {m.verdict}: ", style=VERDICT_STYLE[m.verdict])
                    + Text(
                        f"{_signed(m.difference, m.metric)}/iteration (base "
                        f"{_slope(m.base, m.metric)}, candidate "
                        f"{_slope(m.candidate, m.metric)})"
                    )
                )
        counts = {v: sum(m.verdict == v for m in cell.metrics) for v in VERDICT_STYLE}
        console.print(", ".join(f"{n} {v}" for v, n in counts.items() if n))
        console.print()
    for label, cells in (
        (result.base, result.base_only),
        (result.candidate, result.candidate_only),
    ):
        for cell in cells:
            console.print(f"only in {label}: {cell_label(cell, MATRIX_KEYS)} (not compared)")
    console.print(Text(SIGNIFICANCE_RULE, style="dim"))


def _slope(side: SlopeSide | None, metric: str) -> str:
    if side is None or not side.usable:
        return "-"
    return f"{human(side.slope, metric)} [{human(side.low, metric)}, {human(side.high, metric)}]"


def _signed(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    return ("+" if value > 0 else "") + human(value, metric)
