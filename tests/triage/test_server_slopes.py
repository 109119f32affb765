"""soak.triage.show.server_slopes: each server process's slopes from server_samples, after the
warm-up; nothing for a run without rows (in-process) or a database made before the table."""

from __future__ import annotations

import sqlite3

import pytest

from soak.store import Store
from soak.triage.show import SERVER_SLOPE_METRICS, server_slopes


def _rows(server: int, pid: int, rss_step: int, iterations: int = 6) -> list[dict]:
    return [
        {
            "server": server,
            "pid": pid,
            "rss_bytes": 100_000_000 + rss_step * i,
            "uss_bytes": 50_000_000,
            "fds": 60 + (i if server else 0),
            "threads": 30,
            "stubs_alive": 2,
            "children_rss_bytes": None,
        }
        for i in range(iterations)
    ]


def test_each_server_has_its_own_slopes_after_the_warm_up(tmp_path):
    store = Store(tmp_path / "r.db")
    run = store.create_run({"profile": "p", "status": "passed"})
    by_iteration: dict[int, list[dict]] = {}
    for row in _rows(0, 11, 4096) + _rows(1, 22, 0):
        by_iteration.setdefault(row["server"], []).append(row)
    for i in range(6):
        rows = [by_iteration[0][i], by_iteration[1][i]]
        store.write_iteration(run, {"iteration": i}, [], [], [], rows)
    first, second = server_slopes(store.db, run, warmup=1)
    assert (first.server, first.pids, first.iterations) == (0, [11], 5)
    assert first.slopes["rss_bytes"] == pytest.approx(4096) and first.slopes["fds"] == 0
    assert second.slopes["rss_bytes"] == 0 and second.slopes["fds"] == pytest.approx(1)
    assert second.slopes["children_rss_bytes"] is None  # never measured
    assert set(first.slopes) == set(SERVER_SLOPE_METRICS)
    store.close()


def test_no_rows_or_no_table_is_no_servers(tmp_path):
    store = Store(tmp_path / "r.db")
    run = store.create_run({"profile": "p", "status": "passed"})
    assert server_slopes(store.db, run, warmup=1) == []
    store.close()
    conn = sqlite3.connect(tmp_path / "r.db")
    conn.execute("DROP TABLE server_samples")  # as a database of an earlier soak
    conn.commit()
    conn.close()
    import sqlite_utils

    assert server_slopes(sqlite_utils.Database(tmp_path / "r.db"), run, warmup=1) == []
