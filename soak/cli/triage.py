"""The triage commands (runs, show, query, compare, browse): parse, call soak.triage, print.

Every command opens the database read-only and never changes it; tables are rendered by
soak.report, --json and --csv print the same data as plain values.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import click

from soak import triage
from soak.cli.common import (
    console,
    db_option,
    echo_csv,
    echo_formatted,
    echo_json,
    echo_json_records,
    format_options,
)
from soak.store import RUN_STATUSES

_RUN_CSV_COLUMNS = (
    "id",
    "started",
    "started_at",
    "profile",
    "matrix",
    "cell",
    "status",
    "stored_status",
    "verdict",
    "duration_s",
    "iterations_done",
    "iterations_planned",
    "worst_metric",
    "worst",
)


@click.command("runs")
@db_option()
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Show at most this many runs, newest first (0: all).",
)
@click.option("--profile", help="Only runs of this profile (or matrix).")
@click.option(
    "--status",
    type=click.Choice([*RUN_STATUSES, "abandoned"]),
    help="Only runs with this status as shown (abandoned included).",
)
@format_options()
def runs_command(
    db: str, limit: int, profile: str | None, status: str | None, fmt: str | None
) -> None:
    """List runs, newest first, with status, verdict and the metric that most needs a look.

    A run stored as running whose heartbeat is stale and whose supervisor is gone is shown
    as 'abandoned'.
    """
    from soak.report.runs import run_json, runs_table

    with triage.readonly(db) as ro:
        runs = triage.list_runs(ro, limit, profile, status)
    if echo_formatted(fmt, [run_json(r) for r in runs], _RUN_CSV_COLUMNS):
        return
    if not runs:
        click.echo("no runs match" if (profile or status) else "the database holds no runs yet")
        return
    console().print(runs_table(runs, db))


@click.command("show")
@click.argument("run", default="latest")
@db_option()
@format_options(csv_too=False)
def show_command(run: str, db: str, fmt: str | None) -> None:
    """Show RUN (an id, or 'latest'): header, findings, events by kind, phase timings."""
    from soak.report.show import detail_json, print_run_detail

    with triage.readonly(db) as ro:
        detail = triage.run_detail(ro, run)
    if echo_formatted(fmt, detail_json(detail)):
        return
    print_run_detail(console(), detail)


@click.command("query")
@click.argument("query", required=False)
@db_option()
@click.option("--list", "list_queries", is_flag=True, help="List the canned queries.")
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A query parameter (:NAME in SQL), e.g. --param run=12; repeatable.",
)
@click.option(
    "--max-rows",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Table output only: rows printed (--csv and --json print all).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0),
    default=triage.DEFAULT_TIMEOUT_S,
    show_default=True,
    metavar="SECONDS",
    help="Stop the query (and its printing) after this long; 0: no limit.",
)
@format_options()
def query_command(
    query: str | None,
    db: str,
    list_queries: bool,
    params: tuple[str, ...],
    max_rows: int,
    timeout_s: float,
    fmt: str | None,
) -> None:
    """Run a read-only SQL QUERY, or a canned query by name (see --list).

    Writes (INSERT, UPDATE, DELETE, DROP, CREATE, ATTACH, PRAGMA x = y, ...) are refused.
    Rows are streamed; Ctrl-C or --timeout ends a query that runs away.
    """
    from soak.report.query import canned_table, query_table

    if list_queries:
        if not echo_formatted(fmt, triage.canned_list()):
            console().print(canned_table())
        return
    if not query:
        raise click.UsageError("give an SQL query or a canned query name (soak query --list)")
    values = triage.parse_params(params)
    canned = triage.CANNED.get(query.strip())
    cancel = threading.Event()  # Ctrl-C: SQLite checks it between steps (see stream_query)
    previous = signal.signal(signal.SIGINT, lambda signum, frame: cancel.set())
    try:
        with triage.readonly(db) as ro:
            sql, values = (
                triage.canned_statement(ro, canned.name, values) if canned else (query, values)
            )
            if fmt in ("json", "csv"):
                with triage.stream_query(ro, sql, values, timeout_s, cancel) as stream:
                    echo = echo_json_records if fmt == "json" else echo_csv
                    echo(stream.columns, stream.rows)
                return
            result = triage.run_query(ro, sql, values, timeout_s, max_rows, cancel)
    finally:
        signal.signal(signal.SIGINT, previous)
    if not result.rows:
        note = f"; this query needs {canned.needs}" if canned and canned.needs else ""
        click.echo(f"no rows{note}")
        return
    console().print(query_table(result, canned, max_rows))
    if result.more:
        click.echo("... more rows (use --csv or --json for all)")


@click.command("compare")
@click.argument("base", required=False)
@click.argument("candidate", required=False)
@db_option()
@click.option("--force", is_flag=True, help="Compare runs of different profiles or cells.")
@click.option(
    "--upgrade",
    nargs=2,
    metavar="OLD NEW",
    help="One matrix run on two Triton versions (its triton axis): line up the cells that "
    "differ only in triton and judge NEW against OLD per metric and unit. BASE, if given, "
    "names the matrix (NAME or NAME@RUN; default: the newest with both). Exit 1: NEW "
    "regresses; 2: a side did not run.",
)
@format_options(csv_too=False)
def compare_command(
    base: str | None,
    candidate: str | None,
    db: str,
    force: bool,
    upgrade: tuple[str, str] | None,
    fmt: str | None,
) -> None:
    """Compare CANDIDATE with BASE metric by metric: two run ids, or two matrices.

    A matrix is NAME (each cell's latest run) or NAME@RUN (each cell's latest run up to run
    RUN), so `soak compare nightly@120 nightly` compares before and after an upgrade. A metric
    is 'worse' when the candidate's 95% slope interval (widened for autocorrelation) lies
    wholly above the base's, 'better' when wholly below, else 'same'.
    """
    from soak.report.compare import comparison_json, print_comparison

    if upgrade:
        _compare_upgrade(db, upgrade, base, candidate, fmt)
        return
    if base is None or candidate is None:
        raise click.UsageError(
            f"Missing argument '{'BASE' if base is None else 'CANDIDATE'}'"
            " (or give --upgrade OLD NEW)."
        )
    with triage.readonly(db) as ro:
        result = triage.compare(ro, base, candidate, force)
    if echo_formatted(fmt, comparison_json(result)):
        return
    print_comparison(console(), result)


def _compare_upgrade(
    db: str, versions: tuple[str, str], matrix: str | None, extra: str | None, fmt: str | None
) -> None:
    from soak.report.upgrade import print_upgrade
    from soak.triage.upgrade import upgrade

    if extra is not None:
        raise click.UsageError("--upgrade OLD NEW takes one matrix (NAME or NAME@RUN), not two")
    with triage.readonly(db) as ro:
        result = upgrade(ro, versions[0], versions[1], matrix)
    if fmt == "json":
        echo_json(result.as_dict())
    else:
        print_upgrade(console(), result)
    sys.exit(int(result.exit_code))


@click.command("browse")
@db_option()
@click.option("--port", type=click.IntRange(0, 65535), default=8001, show_default=True)
@click.option("--open", "open_browser", is_flag=True, help="Open a browser on the page.")
def browse_command(db: str, port: int, open_browser: bool) -> None:
    """Browse the database in Datasette on http://127.0.0.1:PORT (read-only, immutable)."""
    with triage.readonly(db):
        pass  # a clear error for a missing or foreign file, before Datasette starts
    cmd = triage.datasette_command(db, port, open_browser)
    click.echo(f"soak: serving {db} read-only on http://127.0.0.1:{port}/ (Ctrl-C to stop)")
    try:
        code = subprocess.run(cmd).returncode
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


COMMANDS = (runs_command, show_command, query_command, compare_command, browse_command)
