"""Tests of soak.triage on a synthetic results database written through soak.store.Store.

The triage commands only read the database, so synthetic runs are enough: quiet series with
known slopes, interval samples with known per-phase additions, events, and findings produced
by the real analysis (built by ``tests.synthetic``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from soak import triage
from soak.errors import SoakError, StoreError
from soak.report.compare import comparison_json
from soak.report.runs import run_json
from tests.synthetic import (
    N_ITER,
    PHASE_ADDS,
    TRITON_WARNING,
    WARMUP,
    KiB,
    MiB,
    dead_pid,
)


def fingerprint(path: Path) -> tuple[str, int, int]:
    """The database file's content hash, mtime and size: must never change."""
    st = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_size


@pytest.fixture
def db(soak_db):
    """The database opened read-only; asserts after each test that its file is unchanged."""
    path, _ = soak_db
    before = fingerprint(path)
    with triage.readonly(path) as ro:
        yield ro
    assert fingerprint(path) == before


# -- the data is what the tests think it is ---------------------------------------------------


def test_synthetic_runs_were_judged_as_designed(db, ids):
    status = {r["id"]: (r["status"], r["verdict"]) for r in db.query("SELECT * FROM runs")}
    assert status[ids["flat"]] == ("passed", "pass")
    assert status[ids["flat2"]] == ("passed", "pass")
    assert status[ids["leaky"]] == ("leaked", "leak")
    assert status[ids["hung"]] == ("hung", "leak")
    assert status[ids["abandoned"]] == ("running", None)


# -- runs -------------------------------------------------------------------------------------


def test_list_runs_newest_first_with_limit(db, ids):
    runs = triage.list_runs(db, limit=3)
    assert [r.id for r in runs] == [ids["running"], ids["abandoned"], ids["grid2_3"]]
    everything = triage.list_runs(db, limit=0)
    assert [r.id for r in everything] == sorted(ids.values(), reverse=True)


def test_list_runs_marks_abandoned_but_not_fresh_running(db, ids):
    shown = {r.id: r for r in triage.list_runs(db, limit=0)}
    assert shown[ids["abandoned"]].status == "abandoned"
    assert shown[ids["abandoned"]].stored_status == "running"
    # the database is built once per session: on a loaded machine this test can run minutes later
    assert re.search(r"heartbeat was 1h\d\dm ago", shown[ids["abandoned"]].abandoned_reason)
    assert f"supervisor pid {dead_pid()} is not alive" in shown[ids["abandoned"]].abandoned_reason
    assert shown[ids["running"]].status == "running"
    assert shown[ids["running"]].abandoned_reason == ""
    # `soak runs --json` and --csv carry the reason too.
    rows = {r.id: run_json(r) for r in triage.list_runs(db)}
    assert rows[ids["abandoned"]]["abandoned_reason"] == shown[ids["abandoned"]].abandoned_reason
    assert rows[ids["running"]]["abandoned_reason"] is None
    assert [r.id for r in triage.list_runs(db, status="abandoned")] == [ids["abandoned"]]
    assert [r.id for r in triage.list_runs(db, status="running")] == [ids["running"]]


def test_list_runs_filters_by_profile_and_status(db, ids):
    cpu = triage.list_runs(db, limit=0, profile="cpu")
    assert {r.id for r in cpu} == {
        ids[k] for k in ("flat", "leaky", "hung", "flat2", "abandoned", "running")
    }
    leaked = triage.list_runs(db, status="leaked")
    assert ids["leaky"] in {r.id for r in leaked}
    assert all(r.status == "leaked" for r in leaked)
    assert triage.list_runs(db, profile="no-such-profile") == []


def test_list_runs_row_content(db, ids):
    row = run_json({r.id: r for r in triage.list_runs(db, limit=0)}[ids["leaky"]])
    assert row["profile"] == "cpu" and row["verdict"] == "leak" and row["status"] == "leaked"
    assert (row["iterations_done"], row["iterations_planned"]) == (N_ITER, N_ITER)
    assert row["duration_s"] == pytest.approx(N_ITER + 1)
    cell = run_json({r.id: r for r in triage.list_runs(db, limit=0)}[ids["grid1_3"]])["cell"]
    assert cell == "servers=4 memory_type=gpu"


def test_worst_metric_is_the_leak_furthest_over_its_budget(db, ids):
    runs = {r.id: r for r in triage.list_runs(db, limit=0)}
    worst = runs[ids["leaky"]].worst
    # rss grows ~25 MiB (median of the last 3 minus the first 3) against an 8 MiB budget,
    # uss half that against the same budget.
    assert worst.metric == "rss_bytes" and worst.verdict == "leak" and worst.basis == "budget"
    growth = db.execute(
        "SELECT total_growth FROM findings WHERE run_id = ? AND metric = 'rss_bytes'",
        [ids["leaky"]],
    ).fetchone()[0]
    assert growth == pytest.approx(25 * MiB, rel=0.05)
    assert worst.ratio == growth / (8 * MiB)
    assert worst.describe().startswith("rss_bytes leak +2") and "x budget" in worst.describe()
    # A counter that never comes back has no allowance at all: it ranks first.
    assert runs[ids["hung"]].worst.metric == "threads"
    # Without a leak: the largest slope/threshold ratio, which grid's 400 KiB/iteration has.
    assert runs[ids["flat"]].worst.verdict == "pass"
    assert runs[ids["abandoned"]].worst is None


def test_worst_metric_rules():
    rows = [
        {"metric": "a", "verdict": "leak", "total_growth": 30.0, "growth_budget": 10.0},
        {
            "metric": "b",
            "verdict": "leak",
            "total_growth": 50.0,
            "growth_budget": 100.0,
            "slope": 9.0,
            "threshold": 1.0,
        },
        {"metric": "c", "verdict": "pass", "slope": 5.0, "threshold": 1.0},
    ]
    worst = triage.worst_metric(rows)
    assert (worst.metric, worst.ratio, worst.basis) == ("a", 3.0, "budget")
    calm = triage.worst_metric(
        [
            {"metric": "c", "verdict": "pass", "slope": 0.5, "threshold": 1.0},
            {"metric": "d", "verdict": "inconclusive", "slope": 2.0, "threshold": 1.0},
            {"metric": "e", "verdict": "no_data", "slope": None, "threshold": 1.0},
        ]
    )
    assert (calm.metric, calm.ratio, calm.describe()) == ("d", 2.0, "d 2.00x threshold")
    assert triage.worst_metric([]) is None


# -- abandoned --------------------------------------------------------------------------------


def test_staleness_limit_is_ten_iterations_and_at_least_five_minutes():
    assert triage.staleness_limit(None) == 300.0
    assert triage.staleness_limit(2.0) == 300.0
    assert triage.staleness_limit(100.0) == 1000.0


def test_display_status_rules():
    now = time.time()
    here = socket.gethostname()
    base = {
        "status": "running",
        "host": here,
        "started_at": now - 7200,
        "supervisor_pid": dead_pid(),
    }
    stale = {**base, "heartbeat_at": now - 3600}
    assert triage.display_status(stale, 2.0, now, here)[0] == "abandoned"
    # On this host a provably dead supervisor is abandoned at once, with a fresh heartbeat.
    status, why = triage.display_status({**base, "heartbeat_at": now - 1}, 2.0, now, here)
    assert status == "abandoned" and f"pid {base['supervisor_pid']} is not alive" in why
    # Another host's run: long iterations stretch the limit (600 s < 10 x 100 s).
    elsewhere = {**base, "host": "elsewhere", "heartbeat_at": now - 600}
    assert triage.display_status(elsewhere, 100.0, now, here) == ("running", "")
    # No pid stored: nothing is provable, so the heartbeat rule holds here too.
    unknown = {**base, "supervisor_pid": None, "heartbeat_at": now - 10}
    assert triage.display_status(unknown, 2.0, now, here) == ("running", "")
    assert triage.display_status({**unknown, "heartbeat_at": now - 3600}, 2.0, now, here)[0] == (
        "abandoned"
    )
    # A live supervisor (this very process, started before the run) keeps it running.
    live = {**stale, "supervisor_pid": os.getpid(), "started_at": time.time()}
    assert triage.display_status(live, 2.0, now + 3600, here)[0] == "running"
    # The same pid for a process younger than the run is a reused pid: abandoned.
    reused = {**stale, "supervisor_pid": os.getpid(), "started_at": now - 86400}
    assert triage.display_status(reused, 2.0, now, here)[0] == "abandoned"
    # Another host's pid cannot be checked: the stale heartbeat decides.
    status, why = triage.display_status({**stale, "host": "elsewhere"}, 2.0, now, here)
    assert status == "abandoned" and "ran on elsewhere" in why
    # Only 'running' is ever reinterpreted.
    assert triage.display_status({**stale, "status": "crashed"}, 2.0, now, here) == ("crashed", "")


def test_supervisor_alive():
    assert triage.supervisor_alive(os.getpid(), time.time())
    assert not triage.supervisor_alive(dead_pid(), time.time())
    assert not triage.supervisor_alive(None, time.time())
    assert not triage.supervisor_alive(os.getpid(), time.time() - 10 * 86400)


# -- show -------------------------------------------------------------------------------------


def test_run_detail_findings_events_phases(db, ids):
    detail = triage.run_detail(db, ids["leaky"])
    assert detail.run["id"] == ids["leaky"] and detail.status == "leaked"
    verdicts = [f["verdict"] for f in detail.findings]
    assert verdicts[:2] == ["leak", "leak"]  # leaks first
    rss = next(f for f in detail.findings if f["metric"] == "rss_bytes")
    assert rss["slope"] == pytest.approx(MiB, rel=0.05)
    assert rss["growth_started_at"] is not None and rss["growth_started_at"] <= WARMUP + 3
    groups = {g.kind: g for g in detail.events}
    assert [g.kind for g in detail.events][:3] == ["failure", "leftover_stub", "leftover_shm"]
    assert groups["triton_warning"].count == N_ITER
    # The glog prefix differs on every line; stripped, the warning is one message.
    assert groups["triton_warning"].distinct == 1
    assert groups["triton_warning"].messages[0].text == TRITON_WARNING
    assert groups["triton_warning"].messages[0].count == N_ITER
    assert groups["failure"].count == 3 and groups["failure"].messages[0].iteration == 5
    assert groups["leftover_shm"].count == 2 and groups["leftover_shm"].distinct == 2
    phases = {p.phase: p for p in detail.phases}
    assert set(phases) == {"load", "unload"}
    assert phases["load"].max_s == pytest.approx(0.5 + 0.01 * (N_ITER - 1))
    assert phases["load"].median_s == pytest.approx(0.5 + 0.01 * (N_ITER - 1) / 2)
    assert phases["unload"].median_s == 0.25 and phases["load"].iterations == N_ITER


def test_run_detail_keeps_stack_dumps_whole(db, ids):
    detail = triage.run_detail(db, ids["hung"])
    dump = next(g for g in detail.events if g.kind == "stack_dump")
    assert dump.messages[0].text.count("\n") == 3 and "line 88 in unload" in dump.messages[0].text
    assert detail.status == "hung"


def test_run_detail_latest_and_missing(db, ids):
    assert triage.run_detail(db, "latest").run["id"] == max(ids.values())
    with pytest.raises(StoreError, match=r"no run 999 in this database \(runs go up to"):
        triage.run_detail(db, 999)
    with pytest.raises(StoreError, match="'abc' is not a run id"):
        triage.run_detail(db, "abc")


def test_triton_message_strips_glog_prefix():
    assert triage.triton_message("W1125 14:03:22.123456 12 a.cc:7] text [x]") == "text [x]"
    assert triage.triton_message("Warning: no prefix] here") == "Warning: no prefix] here"


# -- query ------------------------------------------------------------------------------------


def test_run_query_reads(db, ids):
    result = triage.run_query(
        db, "SELECT id, profile FROM runs WHERE id = :run", {"run": ids["flat"]}
    )
    assert result.columns == ["id", "profile"] and result.rows == [(ids["flat"], "cpu")]
    pragma = triage.run_query(db, "PRAGMA table_info(runs)")
    assert "profile" in [r[1] for r in pragma.rows]
    cte = triage.run_query(db, "-- a comment\nWITH x AS (SELECT 1 AS a) SELECT a FROM x;")
    assert cte.rows == [(1,)]


@pytest.mark.parametrize(
    "sql, column",
    [
        ("SELECT * FROM pragma_table_info('runs')", "profile"),
        ("SELECT * FROM pragma_table_xinfo('runs')", "profile"),
        ("SELECT * FROM pragma_index_list('samples')", None),
        ("SELECT \"table\" FROM pragma_foreign_key_list('samples')", None),
        (
            "SELECT i.name FROM pragma_index_list('samples') AS l, pragma_index_info(l.name) AS i",
            "run_id",
        ),
    ],
)
def test_schema_pragmas_read_as_tables(db, sql, column):
    """The first use of a pragma's table-valued function looks like an UPDATE of
    sqlite_master to the authorizer: a read all the same."""
    rows = triage.run_query(db, sql).rows
    assert column is None or column in [value for row in rows for value in row]


RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


def test_a_runaway_query_stops_at_its_timeout(db):
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"^query stopped after 0.3 s \(--timeout"):
        triage.run_query(db, RUNAWAY, timeout_s=0.3)
    assert time.monotonic() - started < 30  # it ended (the bound is loose: a shared machine)
    assert triage.run_query(db, "SELECT 1", timeout_s=0.3).rows == [(1,)]  # usable after


def test_a_cancelled_query_is_interrupted(db):
    cancel = threading.Event()
    timer = threading.Timer(0.3, cancel.set)  # as the CLI's Ctrl-C handler does
    timer.start()
    try:
        with pytest.raises(StoreError, match="^query interrupted$"):
            triage.run_query(db, RUNAWAY, cancel=cancel)
    finally:
        timer.cancel()


def test_rows_are_streamed_and_limited(db):
    count = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10) SELECT x FROM c"
    )
    cut = triage.run_query(db, count, limit=3)
    assert (cut.rows, cut.more) == ([(1,), (2,), (3,)], True)
    assert triage.run_query(db, count, limit=10).more is False
    with triage.stream_query(db, count) as stream:
        assert stream.columns == ["x"] and next(stream.rows) == (1,)
        assert sum(1 for _ in stream.rows) == 9


@pytest.mark.parametrize(
    "sql, what",
    [
        ("DELETE FROM runs", "DELETE statement"),
        (
            "  insert into runs(profile, status, started_at) values ('x', 'passed', 1)",
            "INSERT statement",
        ),
        ("UPDATE runs SET status = 'passed'", "UPDATE statement"),
        ("DROP TABLE findings", "DROP statement"),
        ("CREATE TABLE t(a)", "CREATE statement"),
        ("CREATE TEMP VIEW v AS SELECT 1", "CREATE statement"),
        ("ATTACH DATABASE '/tmp/x.db' AS x", "ATTACH statement"),
        ("PRAGMA journal_mode = DELETE", "PRAGMA journal_mode sets a value"),
        ("pragma query_only=OFF", "PRAGMA query_only sets a value"),
        ("PRAGMA user_version(7)", "PRAGMA user_version sets a value"),
        ("VACUUM INTO '/tmp/soak-copy.db'", "VACUUM statement"),
        ("/* hidden */ REPLACE INTO meta VALUES ('k', 'v')", "REPLACE statement"),
        ("SELECT 1; DELETE FROM runs", "DELETE statement"),
        ("WITH x AS (SELECT 1) DELETE FROM runs", "DELETE from runs"),
        ("PRAGMA wal_checkpoint", "PRAGMA wal_checkpoint"),
        ("PRAGMA optimize", "PRAGMA optimize"),
    ],
)
def test_run_query_refuses_writes(db, sql, what):
    with pytest.raises(triage.QueryRefused) as info:
        triage.run_query(db, sql)
    message = str(info.value)
    assert message.startswith("query refused: ") and message.endswith("writes are not allowed")
    assert what in message and "\n" not in message
    assert db.execute("SELECT count(*) FROM runs").fetchone()[0] > 0


def test_refused_write_leaves_no_file_behind(db, tmp_path):
    target = tmp_path / "copy.db"
    with pytest.raises(triage.QueryRefused):
        triage.run_query(db, f"VACUUM INTO '{target}'")
    with pytest.raises(triage.QueryRefused):
        triage.run_query(db, f"WITH x AS (SELECT 1) SELECT * FROM x; ATTACH '{target}' AS y")
    assert not target.exists()


def test_the_connection_itself_refuses_writes(db):
    with pytest.raises(sqlite3.OperationalError):
        db.conn.execute("DELETE FROM runs")


def test_run_query_errors_are_one_line(db):
    with pytest.raises(StoreError, match=r'^query failed: near "SELEC": syntax error$'):
        triage.run_query(db, "SELEC * FROM runs")
    with pytest.raises(StoreError, match="no such table: nope"):
        triage.run_query(db, "SELECT * FROM nope")
    with pytest.raises(StoreError, match="2 statements given"):
        triage.run_query(db, "SELECT 1; SELECT 2")
    with pytest.raises(StoreError, match="the query is empty"):
        triage.run_query(db, "  -- nothing\n ;")


def test_split_statements_respects_strings_and_comments():
    assert triage.split_statements("SELECT ';' AS a; -- c;\n") == ["SELECT ';' AS a;"]
    assert len(triage.split_statements("SELECT 1; SELECT 2")) == 2


def test_parse_params():
    assert triage.parse_params(["run=12", "metric=rss_bytes", "x=0.5"]) == {
        "run": 12,
        "metric": "rss_bytes",
        "x": 0.5,
    }
    with pytest.raises(StoreError, match="give NAME=VALUE"):
        triage.parse_params(["run"])


def test_canned_growth(db, ids):
    result = triage.run_canned(db, "growth", {"run": ids["leaky"], "metric": "rss_bytes"})
    (row,) = result.as_dicts()
    assert (row["run"], row["metric"]) == (ids["leaky"], "rss_bytes")
    assert (row["first_iteration"], row["last_iteration"]) == (WARMUP, N_ITER - 1)
    assert row["growth"] == pytest.approx((N_ITER - 1 - WARMUP) * MiB, abs=300 * KiB)
    assert row["growth_per_iteration"] == pytest.approx(MiB, rel=0.02)
    assert row["verdict"] == "leak" and row["finding_growth"] > 20 * MiB
    every = triage.run_canned(db, "growth", {"run": ids["leaky"]}).as_dicts()
    assert {r["metric"] for r in every} == {"rss_bytes", "uss_bytes", "threads", "fds"}


def test_canned_phase_memory(db, ids):
    rows = triage.run_canned(db, "phase-memory", {"run": ids["leaky"]}).as_dicts()
    assert [r["phase"] for r in rows] == ["load", "infer", "unload"]  # lifecycle order
    by_phase = {r["phase"]: r for r in rows}
    for phase, added in PHASE_ADDS.items():
        assert by_phase[phase]["added_bytes"] == added
        assert by_phase[phase]["iterations"] == N_ITER - 1  # iteration 0 has no quiet before
        assert by_phase[phase]["samples"] == 3 * (N_ITER - 1)
        # What the quiet point kept: the 1 MiB per iteration the run leaks.
        assert by_phase[phase]["kept_bytes"] == pytest.approx(MiB, rel=0.05)
    assert by_phase["load"]["step_bytes"] == 50 * MiB
    assert by_phase["infer"]["step_bytes"] == 30 * MiB
    assert by_phase["unload"]["step_bytes"] == -60 * MiB
    assert by_phase["load"]["kept_pct"] == pytest.approx(2.0, abs=0.1)
    # A run without interval samples has no rows (and the query says what it needs).
    assert triage.run_canned(db, "phase-memory", {"run": ids["flat"]}).rows == []
    assert "sample_interval_ms > 0" in triage.CANNED["phase-memory"].needs


def test_phase_memory_reads_interval_rows_stored_by_earlier_soaks(tmp_path):
    """Before phase_samples, every interval sample was a samples row (kind 'interval'), some
    without their iteration: phase-memory still takes their median per phase."""
    from soak.store import Store

    store = Store(tmp_path / "old.db")
    run = store.create_run({"profile": "p", "status": "passed"})
    for i, rss in enumerate((100 * MiB, 101 * MiB)):
        quiet = {"iteration": i, "kind": "quiet", "t": float(i), "rss_bytes": rss}
        store.write_iteration(run, {"iteration": i, "wall_s": 1.0}, [quiet], [], [])
        if i == 0:
            for k, added in enumerate((9, 10, 30)):  # median 10 MiB over the quiet point
                store.conn.execute(
                    "INSERT INTO samples (run_id, iteration, kind, phase, t, rss_bytes) "
                    "VALUES (?, ?, 'interval', 'load', ?, ?)",
                    [run, None if k else 1, 0.5, 100 * MiB + added * MiB],
                )
            store.conn.commit()
    (row,) = triage.run_canned(store.db, "phase-memory", {"run": run}).as_dicts()
    assert (row["phase"], row["samples"], row["added_bytes"]) == ("load", 3, 10 * MiB)
    assert row["kept_bytes"] == MiB
    store.close()


def test_canned_matrix_factors(db, ids):
    rows = triage.run_canned(db, "matrix-factors", {"metric": "rss_bytes"}).as_dicts()
    # Only the latest run of each cell: the second session.
    assert sorted(r["run"] for r in rows) == sorted(ids[f"grid2_{k}"] for k in range(4))
    assert all(r["matrix"] == "grid" and r["instance_kind"] == "cpu" for r in rows)
    for r in rows:
        assert r["per_iteration"] == pytest.approx(100 * KiB * r["servers"], rel=0.1)
        assert r["per_server"] == pytest.approx(100 * KiB, rel=0.1)
        assert r["per_model_load"] == pytest.approx(50 * KiB, rel=0.1)
        assert r["per_inference"] == pytest.approx(100 * KiB / 20, rel=0.1)
    assert [r["servers"] for r in rows][:2] == [4, 4]  # steepest first


def test_canned_matrix_factors_reads_missing_unit_slopes(db, ids):
    # Session 1's gpu/2 cell made no inferences: its per-inference slope is stored as null.
    stored = db.execute(
        "SELECT slopes_per_unit FROM findings WHERE run_id = ? AND metric = 'rss_bytes'",
        [ids["grid1_2"]],
    ).fetchone()[0]
    assert '"inference": null' in stored
    rows = triage.run_canned(
        db, "matrix-factors", {"metric": "rss_bytes", "upto": ids["grid1_3"]}
    ).as_dicts()
    assert sorted(r["run"] for r in rows) == sorted(ids[f"grid1_{k}"] for k in range(4))
    rows = [r for r in rows if r["run"] == ids["grid1_2"]]
    (row,) = rows
    assert row["per_inference"] is None
    assert row["per_server"] == pytest.approx(300 * KiB, rel=0.1)  # 3x on GPU in session 1
    assert (row["memory_type"], row["servers"]) == ("gpu", 2)


def test_canned_leftovers_failures_warnings(db, ids):
    (left,) = triage.run_canned(db, "leftovers").as_dicts()
    assert (left["run"], left["leftover_stubs"], left["leftover_shm"]) == (ids["leaky"], 1, 2)
    assert "stub process 4242" in left["first_message"]
    (fail,) = triage.run_canned(db, "failures").as_dicts()
    assert (fail["run"], fail["phase"], fail["instance"], fail["failures"]) == (
        ids["leaky"],
        "infer",
        1,
        3,
    )
    assert (fail["first_iteration"], fail["last_iteration"]) == (5, 17)
    warnings = triage.run_canned(db, "triton-warnings").as_dicts()
    assert [(w["level"], w["message"], w["count"]) for w in warnings] == [
        ("error", "failed to stop", 1),
        ("warning", TRITON_WARNING, N_ITER),
    ]
    assert warnings[1]["runs"] == 1 and warnings[1]["first_run"] == ids["leaky"]


def test_canned_queries_check_their_parameters(db, ids):
    with pytest.raises(StoreError, match=r"no run 999 in this database"):
        triage.run_canned(db, "growth", {"run": 999})
    with pytest.raises(StoreError, match="no matrix named 'nope'.*matrices: grid"):
        triage.run_canned(db, "matrix-factors", {"matrix": "nope"})
    with pytest.raises(StoreError, match=r"takes no parameter bogus \(it takes: run\)"):
        triage.run_canned(db, "leftovers", {"bogus": 1})
    latest = triage.run_canned(db, "growth", {"run": "latest"}).as_dicts()
    assert {r["run"] for r in latest} == {ids["running"]}


def test_every_canned_query_runs(db):
    for name in triage.CANNED:
        triage.run_canned(db, name)


# -- compare ----------------------------------------------------------------------------------


def test_compare_leaking_candidate_is_worse(db, ids):
    result = triage.compare(db, str(ids["flat"]), str(ids["leaky"]))
    (cell,) = result.cells
    metrics = {m.metric: m for m in cell.metrics}
    rss = metrics["rss_bytes"]
    assert rss.verdict == "worse" and rss.significant
    assert rss.candidate.slope == pytest.approx(MiB, rel=0.05)
    assert abs(rss.base.slope) < 30 * KiB
    assert rss.difference == pytest.approx(rss.candidate.slope - rss.base.slope)
    assert rss.candidate.low > rss.base.high
    assert metrics["uss_bytes"].verdict == "worse"
    assert metrics["fds"].verdict == "same" and not metrics["fds"].significant
    assert metrics["gpu_used_bytes"].verdict == "no data"
    back = {
        m.metric: m
        for m in triage.compare(db, str(ids["leaky"]), str(ids["flat"])).cells[0].metrics
    }
    assert back["rss_bytes"].verdict == "better"


def test_compare_two_flat_runs_is_same(db, ids):
    result = triage.compare(db, str(ids["flat"]), str(ids["flat2"]))
    verdicts = {m.metric: m.verdict for m in result.cells[0].metrics}
    assert verdicts["rss_bytes"] == "same" and verdicts["uss_bytes"] == "same"


def test_compare_refuses_different_profiles_unless_forced(db, ids):
    with pytest.raises(StoreError, match=r"ran different profiles \(cpu, gpu\); pass --force"):
        triage.compare(db, str(ids["flat"]), str(ids["other_profile"]))
    forced = triage.compare(db, str(ids["flat"]), str(ids["other_profile"]), force=True)
    assert forced.cells[0].candidate_run == ids["other_profile"]
    with pytest.raises(StoreError, match="different cells"):
        triage.compare(db, str(ids["grid1_0"]), str(ids["grid1_1"]))
    with pytest.raises(StoreError, match="same run"):
        triage.compare(db, str(ids["flat"]), str(ids["flat"]))
    with pytest.raises(StoreError, match="no run 999"):
        triage.compare(db, str(ids["flat"]), "999")
    with pytest.raises(StoreError, match="not a run and a matrix"):
        triage.compare(db, str(ids["flat"]), "grid")


@pytest.mark.parametrize(
    "key, base, candidate",
    [
        ("scenario", {"scenario": "servers"}, {"scenario": "traffic"}),
        ("behaviour", {"behaviour": "correct"}, {"behaviour": "error_response"}),
        ("target", {"config": {"run": {"target": "in-process"}}}, {"config": {"run": {}}}),
    ],
)
def test_compare_refuses_a_same_name_profile_that_changed_its_setup(tmp_path, key, base, candidate):
    from soak.store import Store

    store = Store(tmp_path / "c.db")
    try:
        for extra in (base, candidate):
            store.create_run({"profile": "p", "iterations_planned": 3, **extra})
        with pytest.raises(StoreError, match=rf"runs 1 and 2 ran different {key}s .*--force"):
            triage.compare(store.db, "1", "2")
        forced = triage.compare(store.db, "1", "2", force=True)
    finally:
        store.close()
    assert forced.cells[0].candidate_run == 2


def test_compare_matrices_matches_cells(db, ids):
    result = triage.compare(db, f"grid@{ids['grid1_3']}", "grid")
    assert len(result.cells) == 4 and not result.base_only and not result.candidate_only
    verdicts = {
        (c.cell["memory_type"], c.cell["servers"]): {m.metric: m for m in c.metrics}["rss_bytes"]
        for c in result.cells
    }
    # Session 2 fixed the GPU factor: GPU cells are better, system cells unchanged.
    assert verdicts[("gpu", 2)].verdict == "better"
    assert verdicts[("gpu", 4)].verdict == "better"
    assert verdicts[("system", 2)].verdict == "same"
    assert verdicts[("system", 4)].verdict == "same"
    pairs = {(c.base_run, c.candidate_run) for c in result.cells}
    assert pairs == {(ids[f"grid1_{k}"], ids[f"grid2_{k}"]) for k in range(4)}
    with pytest.raises(StoreError, match="same runs"):
        triage.compare(db, "grid", "grid")
    with pytest.raises(StoreError, match="no matrix named 'nope'"):
        triage.compare(db, "grid", "nope")


def test_compare_widens_intervals_for_autocorrelation(db, ids):
    slopes, kinds = triage.run_slopes(db, ids["flat"])
    rss = slopes["rss_bytes"]
    assert kinds["rss_bytes"] == "memory" and kinds["threads"] == "counter"
    assert rss.variance_factor >= 1.0 and rss.low <= rss.slope <= rss.high
    assert rss.n == N_ITER - WARMUP  # the stored finding's warm-up cut


def test_compare_as_dict_is_json(db, ids):
    data = comparison_json(triage.compare(db, str(ids["flat"]), str(ids["leaky"])))
    text = json.dumps(data, allow_nan=False)
    assert "worse" in text and data["rule"] == triage.SIGNIFICANCE_RULE


# -- browse, errors ---------------------------------------------------------------------------


def test_datasette_missing_says_how_to_install(monkeypatch, soak_db):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SoakError, match=r"pip install 'soak\[browse\]'"):
        triage.datasette_command(soak_db[0])


def test_datasette_command_binds_localhost_immutable(monkeypatch, soak_db):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    cmd = triage.datasette_command(soak_db[0], 8123)
    assert cmd[1:4] == ["-m", "datasette", "serve"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--immutable") + 1] == str(soak_db[0])


def test_missing_and_foreign_files_are_one_line_errors(tmp_path):
    with pytest.raises(StoreError, match="no results database here") as missing:
        triage.readonly(tmp_path / "absent.db").__enter__()
    assert "\n" not in str(missing.value)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database, " * 64)
    with pytest.raises(StoreError, match="not a soak results database") as foreign:
        triage.readonly(junk).__enter__()
    assert "\n" not in str(foreign.value)
