"""The triage commands through click's CliRunner: exit codes, printed content, an unchanged DB."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from soak import triage
from soak.cli import main
from soak.cli.common import SoakGroup
from soak.cli.triage import COMMANDS as TRIAGE_COMMANDS
from tests.e2e import SOAK_CLI
from tests.synthetic import N_ITER, TRITON_WARNING, dead_pid
from tests.test_triage import fingerprint

COMMANDS = {"runs", "show", "query", "compare", "browse"}


@pytest.fixture
def soak(soak_db):
    """Runs `soak ARGS --db <the test database>` and checks the file did not change at all."""
    path = soak_db[0]
    group = SoakGroup(name="soak", commands=TRIAGE_COMMANDS)
    runner = CliRunner(env={"COLUMNS": "250"})
    before = fingerprint(path)

    def invoke(*args: str, db: Path | None = path) -> Result:
        extra = ["--db", str(db)] if db is not None else []
        return runner.invoke(group, [*args, *extra], catch_exceptions=False)

    yield invoke
    assert fingerprint(path) == before


def one_line_error(result: Result, text: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("soak: error: ") and text in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_the_triage_module_holds_the_triage_commands_of_soak():
    assert {c.name for c in TRIAGE_COMMANDS} == COMMANDS
    assert COMMANDS <= set(main.commands)


# -- runs -------------------------------------------------------------------------------------


def test_runs_table(soak, ids):
    result = soak("runs", "--limit", "0")
    assert result.exit_code == 0, result.output
    lines = {
        int(line.split()[1]): line
        for line in result.output.splitlines()
        if line.startswith("│") and line.split()[1].isdigit()
    }
    assert list(lines) == sorted(ids.values(), reverse=True)
    assert "abandoned" in lines[ids["abandoned"]] and "4/4" in lines[ids["abandoned"]]
    assert "running" in lines[ids["running"]] and "abandoned" not in lines[ids["running"]]
    assert "rss_bytes leak +25" in lines[ids["leaky"]] and "x budget" in lines[ids["leaky"]]
    assert "threads leak +8" in lines[ids["hung"]] and " hung " in lines[ids["hung"]]
    assert "servers=4 memory_type=gpu" in lines[ids["grid1_3"]]
    assert f"{N_ITER}/{N_ITER}" in lines[ids["flat"]] and "passed" in lines[ids["flat"]]


def test_runs_json_limit_and_filters(soak, ids):
    rows = json.loads(soak("runs", "--json").output)
    assert len(rows) == 15 if len(ids) >= 15 else len(ids)
    assert [r["id"] for r in rows] == sorted(ids.values(), reverse=True)[:20]
    two = json.loads(soak("runs", "--json", "--limit", "2").output)
    assert [r["id"] for r in two] == [ids["running"], ids["abandoned"]]
    abandoned = json.loads(soak("runs", "--json", "--status", "abandoned").output)
    assert [(r["id"], r["status"], r["stored_status"]) for r in abandoned] == [
        (ids["abandoned"], "abandoned", "running")
    ]
    grid = json.loads(soak("runs", "--json", "--profile", "grid").output)
    assert len(grid) == 8 and {r["matrix"] for r in grid} == {"grid"}
    leaky = next(r for r in rows if r["id"] == ids["leaky"])
    assert (leaky["worst_metric"], leaky["verdict"], leaky["status"]) == (
        "rss_bytes",
        "leak",
        "leaked",
    )


def test_runs_csv(soak, ids):
    rows = list(csv.DictReader(io.StringIO(soak("runs", "--csv", "--limit", "0").output)))
    assert [int(r["id"]) for r in rows] == sorted(ids.values(), reverse=True)
    assert next(r for r in rows if int(r["id"]) == ids["abandoned"])["status"] == "abandoned"


def test_runs_rejects_unknown_status(soak):
    result = soak("runs", "--status", "sleeping")
    assert result.exit_code == 2 and "sleeping" in result.output


# -- show -------------------------------------------------------------------------------------


def test_show_leaky_run(soak, ids):
    result = soak("show", str(ids["leaky"]))
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"run {ids['leaky']}" in out and "2.51.0" in out and "leaked" in out
    rss = next(line for line in out.splitlines() if line.startswith("│ rss_bytes"))
    assert "leak" in rss and "1023" in rss and "8.00 MiB" in rss and "iteration 3" in rss
    assert "LEAK rss_bytes grows" in out and "Growth began at iteration 3." in out
    assert "no data (not measured here): children" in out
    assert "failure: 3, 1 distinct" in out
    assert (
        "3x output OUTPUT0 is wrong: expected [3 3], got [3 4] [iteration 6, instance 1, "
        "phase infer]" in out
    )
    assert f"triton_warning: {N_ITER}, 1 distinct" in out and f"{N_ITER}x {TRITON_WARNING}" in out
    assert "leftover_shm: 2" in out and "triton_python_backend_shm_region_2" in out
    load = next(line for line in out.splitlines() if line.startswith("│ load"))
    assert "0.645 s" in load and "0.790 s" in load


def test_show_prints_stack_dumps_in_full(soak, ids):
    out = soak("show", str(ids["hung"])).output
    assert "stack_dump: 1" in out
    assert (
        'Thread 0x01 (most recent call first):\n  File "lifecycle.py", line 88 in unload\n'
        '  File "iteration.py", line 12 in run' in out
    )
    assert "hang: 1" in out and "exceeded its timeout" in out


def test_show_abandoned_and_latest(soak, ids):
    out = soak("show", str(ids["abandoned"])).output
    assert "abandoned (stored as running, but the last heartbeat was 1h00m ago" in out
    assert f"supervisor pid {dead_pid()} is not alive" in out
    assert "no findings" in out
    latest = soak("show", "latest")
    assert latest.exit_code == 0 and f"run {ids['running']}" in latest.output


def test_show_json(soak, ids):
    data = json.loads(soak("show", str(ids["leaky"]), "--json").output)
    assert data["run"]["id"] == ids["leaky"] and data["run"]["status"] == "leaked"
    assert data["findings"][0]["verdict"] == "leak"
    assert data["findings"][0]["slopes_per_unit"]["server"] > 0
    assert {e["kind"] for e in data["events"]} >= {"failure", "leftover_stub", "triton_warning"}
    assert [p["phase"] for p in data["phases"]] == ["load", "unload"]


def test_show_missing_run(soak):
    one_line_error(soak("show", "999"), "no run 999 in this database (runs go up to")
    one_line_error(soak("show", "first"), "'first' is not a run id")


# -- query ------------------------------------------------------------------------------------


def test_query_table_csv_json(soak, ids):
    sql = "SELECT id, profile, status FROM runs WHERE id IN (:a, :b) ORDER BY id"
    args = ("-p", f"a={ids['flat']}", "-p", f"b={ids['leaky']}")
    table = soak("query", sql, *args)
    assert table.exit_code == 0 and "leaked" in table.output and "passed" in table.output
    rows = list(csv.reader(io.StringIO(soak("query", sql, *args, "--csv").output)))
    assert rows == [
        ["id", "profile", "status"],
        [str(ids["flat"]), "cpu", "passed"],
        [str(ids["leaky"]), "cpu", "leaked"],
    ]
    data = json.loads(soak("query", sql, *args, "--json").output)
    assert data == [
        {"id": ids["flat"], "profile": "cpu", "status": "passed"},
        {"id": ids["leaky"], "profile": "cpu", "status": "leaked"},
    ]


def test_query_json_streams_the_same_text_as_a_whole_list(soak):
    sql = "SELECT id, profile FROM runs ORDER BY id LIMIT 3"
    streamed = soak("query", sql, "--json").output
    assert streamed == json.dumps(json.loads(streamed), indent=2) + "\n"
    assert soak("query", "SELECT 1 WHERE 0", "--json").output == "[]\n"


def test_query_timeout_is_one_line(soak):
    runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"
    one_line_error(soak("query", runaway, "--timeout", "0.2"), "query stopped after 0.2 s")
    one_line_error(soak("query", runaway, "--csv", "--timeout", "0.2"), "query stopped after")


def test_query_table_shows_bytes_in_units_and_caps_rows(soak):
    out = soak("query", "phase-memory").output
    assert "50.00 MiB" in out and "80.00 MiB" in out
    capped = soak("query", "SELECT id FROM samples", "--max-rows", "5")
    assert "more rows (use --csv or --json for all)" in capped.output


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM runs",
        "INSERT INTO meta VALUES ('k', 'v')",
        "UPDATE runs SET status = 'passed'",
        "DROP TABLE runs",
        "CREATE TABLE x(a)",
        "ATTACH DATABASE ':memory:' AS other",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA user_version = 3",
        "WITH gone AS (SELECT 1) DELETE FROM findings",
    ],
)
def test_query_refuses_writes(soak, sql):
    result = soak("query", sql)
    one_line_error(result, "query refused: ")
    assert result.stderr.rstrip().endswith("writes are not allowed")


def test_query_syntax_error_names_the_problem(soak):
    one_line_error(soak("query", "SELEC * FROM runs"), 'query failed: near "SELEC": syntax error')
    one_line_error(soak("query", "SELECT nope FROM runs"), "no such column: nope")


def test_query_list(soak):
    out = soak("query", "--list", db=None).output
    for name in (
        "growth",
        "phase-memory",
        "matrix-factors",
        "leftovers",
        "failures",
        "triton-warnings",
    ):
        assert name in out
    listed = json.loads(soak("query", "--list", "--json", db=None).output)
    assert [q["name"] for q in listed] == list(triage.CANNED)


def test_query_canned_by_name(soak, ids):
    rows = json.loads(soak("query", "leftovers", "--json").output)
    assert [(r["run"], r["leftover_stubs"], r["leftover_shm"]) for r in rows] == [
        (ids["leaky"], 1, 2)
    ]
    growth = json.loads(
        soak(
            "query", "growth", "--param", f"run={ids['leaky']}", "-p", "metric=rss_bytes", "--json"
        ).output
    )
    assert growth[0]["verdict"] == "leak" and growth[0]["growth_per_iteration"] > 1_000_000
    factors = json.loads(soak("query", "matrix-factors", "-p", "metric=rss_bytes", "--json").output)
    assert len(factors) == 4 and all(f["per_server"] > 90_000 for f in factors)


def test_query_canned_missing_run_and_bad_param(soak):
    one_line_error(soak("query", "failures", "-p", "run=424242"), "no run 424242 in this database")
    one_line_error(soak("query", "failures", "-p", "runid=1"), "takes no parameter runid")
    one_line_error(soak("query", "failures", "-p", "run"), "give NAME=VALUE")


def test_query_empty_result_says_what_the_query_needs(soak, ids):
    out = soak("query", "phase-memory", "-p", f"run={ids['flat']}").output
    assert out.startswith("no rows; this query needs interval samples")


def test_query_without_sql_is_a_usage_error(soak):
    result = soak("query")
    assert result.exit_code == 2 and "soak query --list" in result.output


# -- compare ----------------------------------------------------------------------------------


def test_compare_reports_the_leaking_candidate_worse(soak, ids):
    result = soak("compare", str(ids["flat"]), str(ids["leaky"]))
    assert result.exit_code == 0, result.output
    rss = next(line for line in result.output.splitlines() if line.startswith("│ rss_bytes"))
    assert "worse" in rss and "yes" in rss and "1023.12 KiB" in rss
    assert "rss_bytes: worse: +10" in result.output and "KiB/iteration" in result.output
    assert "2 worse, 2 same" in result.output
    back = soak("compare", str(ids["leaky"]), str(ids["flat"]))
    assert "rss_bytes: better: -10" in back.output


def test_compare_json(soak, ids):
    data = json.loads(soak("compare", str(ids["flat"]), str(ids["leaky"]), "--json").output)
    (cell,) = data["cells"]
    rss = next(m for m in cell["metrics"] if m["metric"] == "rss_bytes")
    assert rss["verdict"] == "worse" and rss["significant"] is True
    assert rss["candidate"]["low"] > rss["base"]["high"]
    assert rss["candidate"]["slope"] == pytest.approx(1024 * 1024, rel=0.05)


def test_compare_refuses_different_profiles_unless_forced(soak, ids):
    refused = soak("compare", str(ids["flat"]), str(ids["other_profile"]))
    one_line_error(refused, "ran different profiles (cpu, gpu); pass --force")
    forced = soak("compare", str(ids["flat"]), str(ids["other_profile"]), "--force")
    assert forced.exit_code == 0 and "rss_bytes" in forced.output


def test_compare_matrices(soak, ids):
    result = soak("compare", f"grid@{ids['grid1_3']}", "grid")
    assert result.exit_code == 0, result.output
    assert result.output.count("grid@") == 4  # one table per matched cell
    assert "[servers=4 memory_type=gpu]: run " in result.output
    assert result.output.count("rss_bytes: better") == 2


def test_compare_missing_run(soak, ids):
    one_line_error(soak("compare", str(ids["flat"]), "31337"), "no run 31337")


# -- browse, missing and foreign databases -----------------------------------------------------


def test_browse_without_datasette_says_how_to_install(soak, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    one_line_error(soak("browse"), "pip install 'soak[browse]'")


@pytest.mark.parametrize(
    "args",
    [
        ("runs",),
        ("show", "1"),
        ("query", "SELECT 1"),
        ("query", "growth"),
        ("compare", "1", "2"),
        ("browse",),
    ],
)
def test_missing_database(soak, tmp_path, args):
    one_line_error(soak(*args, db=tmp_path / "absent.db"), "no results database here")


@pytest.mark.parametrize("args", [("runs",), ("show", "latest"), ("query", "SELECT 1")])
def test_file_that_is_not_a_database(soak, tmp_path, args):
    junk = tmp_path / "notes.db"
    junk.write_text("these are notes, not a database\n" * 20)
    before = junk.read_bytes()
    one_line_error(soak(*args, db=junk), "not a soak results database")
    assert junk.read_bytes() == before


def test_database_without_runs(soak, tmp_path):
    from soak.store import Store

    empty = tmp_path / "empty.db"
    Store(empty).close()
    assert soak("runs", db=empty).output.strip() == "the database holds no runs yet"
    one_line_error(soak("show", db=empty), "the database holds no runs yet")


def test_a_reader_that_stops_early_is_not_an_error(soak_db):
    """`soak query ... --csv | head -1`: no traceback, no 'Broken pipe', exit 0."""
    import subprocess

    rows = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 200000) "
    proc = subprocess.Popen(
        [*SOAK_CLI, "query", rows + "SELECT x FROM c", "--csv"] + ["--db", str(soak_db[0])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.readline() == b"x\n"
    proc.stdout.close()  # as head does once it has its lines
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0 and stderr == b"", stderr
