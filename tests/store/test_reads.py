"""soak.store.load_series (chunked, constant columns filled in) returns what a plain load did."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from soak.analysis.verdict import Series
from soak.bench.analysis import bench_run_analysis, write_synthetic_run
from soak.run_analysis import analyze_run
from soak.run_settings import rules_for
from soak.store import LATER_UNITS, LOAD_CHUNK, UNIT_COLUMNS, Store, load_series, run_row
from soak.store import reads as store_module


def reference_load(db, run_id: int, metrics: list[str]) -> dict[str, Series]:
    """The straightforward load: every row, every column, None -> NaN value by value."""
    cols = ", ".join(f"s.{m}" for m in metrics)
    units = ", ".join(f"i.{c}" for c in UNIT_COLUMNS.values())
    rows = db.execute(
        f"SELECT s.iteration, {cols}, {units} FROM samples s "
        "LEFT JOIN iterations i ON i.run_id = s.run_id AND i.iteration = s.iteration "
        "WHERE s.run_id = ? AND s.kind = 'quiet' ORDER BY s.iteration",
        [run_id],
    ).fetchall()
    if rows:
        data = np.array([[math.nan if v is None else v for v in row] for row in rows], float)
    else:
        data = np.empty((0, 1 + len(metrics) + len(UNIT_COLUMNS)))
    iterations = data[:, 0].astype(int)
    unit_data = {name: data[:, 1 + len(metrics) + k] for k, name in enumerate(UNIT_COLUMNS)}
    # Units added with the scenarios that a run never counted are not units of that run.
    for name in LATER_UNITS:
        if np.isnan(unit_data[name]).all():
            del unit_data[name]
    return {m: Series(m, iterations, data[:, 1 + k], unit_data) for k, m in enumerate(metrics)}


def assert_same(got: dict[str, Series], want: dict[str, Series]) -> None:
    assert got.keys() == want.keys()
    for metric, series in want.items():
        np.testing.assert_array_equal(got[metric].iterations, series.iterations)
        np.testing.assert_array_equal(got[metric].values, series.values, err_msg=metric)
        assert got[metric].units.keys() == series.units.keys()
        for name, counts in series.units.items():
            np.testing.assert_array_equal(got[metric].units[name], counts, err_msg=name)


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "soak.db")
    yield s
    s.close()


def metrics_of(store: Store, run_id: int) -> list[str]:
    rules, _ = rules_for(run_row(store.db, run_id))
    return [r.metric for r in rules]


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records what each check of the constant columns answered."""
    answers: list[bool] = []
    real = store_module._still_constant

    def recording(*args, **kwargs):
        answers.append(real(*args, **kwargs))
        return answers[-1]

    monkeypatch.setattr(store_module, "_still_constant", recording)
    return answers


def test_constant_and_null_columns_are_filled_in(store: Store, spy: list[bool]) -> None:
    run_id = write_synthetic_run(store, LOAD_CHUNK + 900, seed=1)
    metrics = metrics_of(store, run_id)
    got = load_series(store.db, run_id, metrics)
    assert spy == [True]  # constant counters and NULL GPU columns were not fetched row by row
    assert_same(got, reference_load(store.db, run_id, metrics))
    assert np.isnan(got["gpu_used_bytes"].values).all()
    assert (got["threads"].values == 23).all()
    assert (got["rss_bytes"].units["server"] == 4).all()


def test_columns_that_change_after_the_first_chunk(store: Store, spy: list[bool]) -> None:
    n = 2 * LOAD_CHUNK + 10
    run_id = write_synthetic_run(store, n, seed=2)
    last = n - 3
    with store.transaction():
        store.conn.execute(
            "UPDATE samples SET fds = 58, gpu_used_bytes = 123 WHERE iteration = ?", [last]
        )
        store.conn.execute("UPDATE samples SET threads = 23.0 WHERE iteration > 100")
        store.conn.execute("DELETE FROM iterations WHERE iteration IN (7, ?)", [last])
        # Not a quiet point: never part of a series.
        store.conn.execute(
            "INSERT INTO samples (run_id, iteration, kind, rss_bytes, fds) "
            "VALUES (?, 5, 'interval', 1, 99)",
            [run_id],
        )
    metrics = metrics_of(store, run_id)
    got = load_series(store.db, run_id, metrics)
    assert spy == [False]  # a column moved: everything was fetched
    assert_same(got, reference_load(store.db, run_id, metrics))
    assert got["fds"].values[last] == 58 and np.isnan(got["fds"].units["server"][last])
    assert got["gpu_used_bytes"].values[last] == 123


def test_small_empty_and_duplicated_runs(store: Store, spy: list[bool]) -> None:
    small = write_synthetic_run(store, 50, seed=3)
    empty = write_synthetic_run(store, 0, seed=4)
    with store.transaction():  # a second quiet point for one iteration of the small run
        store.conn.execute(
            "INSERT INTO samples (run_id, iteration, kind, rss_bytes) VALUES (?, 20, 'quiet', 7)",
            [small],
        )
    for run_id in (small, empty):
        metrics = metrics_of(store, run_id)
        assert_same(
            load_series(store.db, run_id, metrics), reference_load(store.db, run_id, metrics)
        )
    assert load_series(store.db, empty, ["rss_bytes"])["rss_bytes"].values.shape == (0,)
    assert spy == []  # one chunk held everything


def test_synthetic_clean_run_passes_and_bench_reports_seconds(store: Store) -> None:
    run_id = write_synthetic_run(store, 600, seed=5)
    result = analyze_run(store.db, run_id)
    assert result.verdict == "pass", [f.reason for f in result.findings if f.verdict != "pass"]
    assert {f.metric for f in result.findings if f.verdict == "no_data"} == {
        "gpu_process_bytes",
        "gpu_used_bytes",
    }
    seconds = bench_run_analysis(600)
    assert math.isfinite(seconds) and seconds > 0


def test_units_of_the_scenarios_are_units_only_of_runs_that_counted_them(store: Store) -> None:
    counted = write_synthetic_run(store, 40, seed=6)
    older = write_synthetic_run(store, 40, seed=7)  # failed_loads and errors NULL throughout
    with store.transaction():
        store.conn.execute(
            "UPDATE iterations SET failed_loads = 0, errors = iteration % 3, responses = 0, "
            "cache_hits = 0, cache_insertions = 0 WHERE run_id = ?",
            [counted],
        )
    units = load_series(store.db, counted, ["rss_bytes"])["rss_bytes"].units
    assert set(units) == set(UNIT_COLUMNS)
    assert (units["failed_load"] == 0).all() and units["error"][:4].tolist() == [0, 1, 2, 0]
    assert set(load_series(store.db, older, ["rss_bytes"])["rss_bytes"].units) == {
        "server",
        "model_load",
        "inference",
    }
