"""soak.bench.store_growth: the slope of database bytes over iterations, what the table says
of it, and one real cell run end to end."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from soak import profile as profiles
from soak.bench import store_growth as g


def test_slope_is_the_least_squares_slope():
    assert g.slope([0, 1, 2, 3], [10, 12, 14, 16]) == pytest.approx(2.0)
    assert g.slope([1, 2, 3], [4096, 4096, 8192]) == pytest.approx(2048.0)
    assert g.slope([5, 5], [1, 2]) is None  # one distinct x: no slope
    with pytest.raises(ValueError):
        g.slope([1, 2], [1])


def test_growth_leaves_out_the_first_iterations_and_the_fixed_size():
    shots = [
        g.Snapshot(0, 100_000, {"samples": 50_000, "runs": 4096}, 9_000),  # first: skipped
        g.Snapshot(1, 200_000, {"samples": 60_000, "runs": 4096}, 10_000),
        g.Snapshot(2, 200_500, {"samples": 60_500, "runs": 4096}, 10_300),
        g.Snapshot(3, 201_000, {"samples": 61_000, "runs": 4096}, 10_600),
    ]
    out = g.growth(shots, skip=1)
    assert out["iterations_used"] == 3
    assert out["file_bytes_per_iteration"] == pytest.approx(500.0)
    assert out["payload_bytes_per_iteration"] == pytest.approx(300.0)
    assert out["table_bytes_per_iteration"] == {"samples": pytest.approx(500.0)}  # runs: flat


def test_snapshot_reads_pages_and_tables_indexes_included(tmp_path: Path):
    conn = sqlite3.connect(tmp_path / "t.db")
    conn.execute("CREATE TABLE events (run_id, iteration, message)")
    conn.execute("CREATE INDEX events_it ON events (iteration)")
    before = g.snapshot(conn, 0)
    conn.executemany("INSERT INTO events VALUES (1, ?, ?)", [(i, "x" * 300) for i in range(100)])
    conn.commit()
    after = g.snapshot(conn, 1)
    assert after.file_bytes > before.file_bytes
    assert after.payload_bytes >= 100 * 300
    assert set(after.table_bytes) == {"events"}  # its index is counted with it
    assert after.table_bytes["events"] >= 3 * 4096  # table and index pages


def _cell(file_b: float, status: str = "passed") -> dict:
    return {
        "iterations_used": 7,
        "file_bytes_per_iteration": file_b,
        "payload_bytes_per_iteration": file_b * 0.9,
        "table_bytes_per_iteration": {"events": file_b * 0.8, "samples": file_b * 0.2},
        "status": status,
        "rows_per_iteration": {
            "tables": {"events": 6.0, "samples": 1.0},
            "events": {"triton_error": {"rows": 3.0, "message_bytes": 360.0}},
            "samples": {"quiet": 1.0},
        },
    }


def test_table_marks_the_goal_and_says_what_makes_a_cell_over_it():
    result = {
        "cells": {
            "smoke": _cell(900.0),
            "traffic": {**_cell(0.0), "payload_bytes_per_iteration": 1100.0},
            "cpu": _cell(4500.0, "failed"),
            "gpu (memory_type=gpu)": {"skipped": "needs an NVIDIA GPU"},
        }
    }
    rows = g.table_rows(result)
    assert rows[0] == ("db bytes/iteration, smoke", "900 (payload 810; goal <= 1,024: ok)")
    assert rows[1] == ("db bytes/iteration, traffic", "0 (payload 1,100; goal <= 1,024: over)")
    assert rows[2][0] == "  made of"  # whole pages did not grow, the rows did
    rows = rows[:1] + rows[3:]
    assert rows[1] == (
        "db bytes/iteration, cpu",
        "4,500 (payload 4,050; goal <= 1,024: over) [failed]",
    )
    assert rows[2][0] == "  made of"
    assert rows[2][1].startswith("events 3,600 B; samples 900 B; samples/iteration: quiet 1.0")
    assert rows[2][1].endswith("events/iteration: triton_error 3.0")
    assert rows[3] == ("db bytes/iteration, gpu (memory_type=gpu)", "skipped: needs an NVIDIA GPU")


def test_cells_take_every_profile_and_every_traffic_behaviour():
    labels = [label for label, _ in g.cells()]
    assert len(labels) == len(profiles.shipped_names()) + 2  # errors: its 3 behaviour cells
    for behaviour in ("correct", "execute_raises", "error_response"):
        assert f"errors (behaviour={behaviour})" in labels
    assert len(g.cells(all_cells=True)) > len(labels)


def test_a_real_cell_grows_by_a_positive_measured_amount():
    out = g.measure_cell(profiles.load("smoke"), iterations=4)
    assert out["status"] == "passed" and out["iterations_used"] == 3
    assert out["payload_bytes_per_iteration"] > 0
    rows = out["rows_per_iteration"]
    assert rows["tables"]["iterations"] == 1.0  # one iteration row per iteration
    assert rows["samples"]["quiet"] == 1.0
