"""Matrix profiles: one run per cell in one database, tagged, exit code of the worst cell."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from soak.errors import ExitCode
from tests.e2e import soak

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_matrix_runs_each_cell_tagged_in_one_database(tmp_path):
    profile = tmp_path / "grid.toml"
    profile.write_text(
        "iterations = 2\nwarmup = 1\ninferences_per_model = 2\n"
        '[matrix]\nservers = [1, 2]\ndatatype = ["int32", "fp32"]\n'
    )
    db = tmp_path / "r.db"
    proc = soak("run", str(profile), "--db", str(db), "--no-progress")
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = conn.execute(
        "SELECT matrix, cell, servers, datatype, status, exit_code, iterations_done "
        "FROM runs ORDER BY id"
    ).fetchall()
    conn.close()
    assert [r[0] for r in rows] == ["grid"] * 4
    cells = [json.loads(r[1]) for r in rows]
    assert cells == [
        {"servers": 1, "datatype": "int32"},
        {"servers": 1, "datatype": "fp32"},
        {"servers": 2, "datatype": "int32"},
        {"servers": 2, "datatype": "fp32"},
    ]
    assert [(r[2], r[3]) for r in rows] == [(c["servers"], c["datatype"]) for c in cells]
    assert all(r[6] == 2 for r in rows)
    assert proc.returncode == ExitCode.worst([r[5] for r in rows]), proc.stdout + proc.stderr
    assert proc.stdout.count("soak: grid [") == 4


@pytest.mark.parametrize(
    "codes, worst",
    [([0, 0], 0), ([0, 3], 3), ([3, 1, 0], 1), ([1, 2, 3], 2), ([0, 2], 2), ([], 2)],
)
def test_worst_exit_ranks_failure_over_leak_over_inconclusive_over_pass(codes, worst):
    assert ExitCode.worst(codes) == worst
