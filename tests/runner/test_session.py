"""soak.runner.session.run: a soak run as one library call, on real Triton (CPU)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from soak import profile as profiles
from soak.errors import ExitCode
from soak.runner import session

GRID = (
    "iterations = 3\nwarmup = 1\ninferences_per_model = 2\nservers = 1\n"
    '[matrix]\ndatatype = ["int32", "fp32"]\n'
)


def stored(db: Path) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT r.id, r.status, r.verdict, r.exit_code, COUNT(f.metric) "
            "FROM runs r LEFT JOIN findings f ON f.run_id = r.id GROUP BY r.id ORDER BY r.id"
        ).fetchall()
    finally:
        conn.close()


@pytest.mark.e2e
def test_run_judges_and_stores_every_cell(tmp_path: Path) -> None:
    prof = profiles.parse(GRID, str(tmp_path / "grid.toml"), "grid")
    db = tmp_path / "r.db"
    store = session.prepare(prof, db)
    cells, iterations, done = [], [], []
    analyses = session.run(
        prof,
        store,
        on_cell=lambda cell: cells.append(cell.cell),
        on_iteration=lambda view: iterations.append(view.iteration),
        on_done=lambda outcome, analysis: done.append((outcome.run_id, analysis.run_id)),
    )
    store.close()
    assert cells == [{"datatype": "int32"}, {"datatype": "fp32"}]
    assert iterations == [0, 1, 2, 0, 1, 2]
    assert [a.run_id for a in analyses] == [1, 2] and done == [(1, 1), (2, 2)]
    rows = stored(db)
    assert [(r[1], r[2], r[3]) for r in rows] == [
        (a.status, a.verdict, int(a.exit_code)) for a in analyses
    ]
    assert all(r[4] == len(a.findings) > 0 for r, a in zip(rows, analyses, strict=True))


@pytest.mark.e2e
def test_a_stop_ends_the_cell_after_its_iteration_and_starts_no_other(tmp_path: Path) -> None:
    prof = profiles.parse(GRID, str(tmp_path / "grid.toml"), "grid")
    store = session.prepare(prof, tmp_path / "r.db")
    stopper = session.Stopper()
    analyses = session.run(prof, store, on_iteration=lambda view: stopper.stop(), stopper=stopper)
    store.close()
    assert len(analyses) == 1
    assert analyses[0].status == "interrupted"
    assert analyses[0].exit_code in (ExitCode.LEAK, ExitCode.INCONCLUSIVE)
    assert stored(tmp_path / "r.db")[0][1] == "interrupted"


def test_a_stop_before_the_run_starts_nothing(tmp_path: Path) -> None:
    prof = profiles.parse(GRID, str(tmp_path / "grid.toml"), "grid")
    stopper = session.Stopper()
    stopper.stop()
    store = session.prepare(prof, tmp_path / "r.db")
    assert session.run(prof, store, stopper=stopper) == []
    store.close()
    assert stored(tmp_path / "r.db") == []


def test_the_package_offers_the_run_without_importing_it_up_front() -> None:
    import subprocess
    import sys

    code = (
        "import sys, soak; assert 'soak.runner.session' not in sys.modules; "
        "from soak.runner import session; "
        "assert soak.run is session.run and soak.prepare is session.prepare; "
        "assert soak.load_profile is __import__('soak.profile').profile.load"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
