"""The console's findings table: its per-unit column names the first unit the run has."""

from __future__ import annotations

import io
import math

from rich.console import Console

from soak.analysis.verdict import Finding
from soak.report.analyze import findings_table


def finding(per_unit: dict[str, float]) -> Finding:
    return Finding(
        metric="rss_bytes",
        kind="memory",
        verdict="pass",
        slope=1024.0,
        slope_low=0.0,
        slope_high=2048.0,
        slopes_per_unit=per_unit,
        p_value=0.5,
        tau=0.0,
        n_used=10,
        warmup_cut=1,
        baseline=0.0,
        final=0.0,
        total_growth=0.0,
        threshold=65536.0,
        growth_budget=None,
        growth_started_at=None,
        reason="",
    )


def header(per_unit: dict[str, float]) -> str:
    out = io.StringIO()
    Console(file=out, width=200).print(findings_table([finding(per_unit)]))
    return out.getvalue().splitlines()[1]


def test_servers_keep_the_per_server_column():
    units = {"server": 512.0, "model_load": 256.0, "inference": 8.0, "error": math.nan}
    assert "per server" in header(units)


def test_traffic_names_its_unit_and_reload_its_first():
    nan = math.nan
    traffic = {"server": nan, "model_load": nan, "failed_load": nan, "inference": 8.0}
    assert "per inference" in header(traffic) and "per server" not in header(traffic)
    reload = {"server": nan, "model_load": 256.0, "inference": 8.0}
    assert "per model load" in header(reload)
