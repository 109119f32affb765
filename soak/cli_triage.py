"""The triage commands (runs, show, query, compare, browse): parse, call soak.triage, print.

Every command opens the database read-only and never changes it. Errors are SoakErrors,
which the main group prints as one line (`soak: error: ...`) with exit status 2.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from soak import triage
from soak.report.console import findings_table, human
from soak.store import RUN_STATUSES

DEFAULT_DB = "results/soak.db"
_STATUS_STYLE = {
    "passed": "green",
    "leaked": "bold red",
    "failed": "red",
    "crashed": "red",
    "hung": "red",
    "abandoned": "magenta",
    "running": "cyan",
    "interrupted": "yellow",
    "inconclusive": "yellow",
}
_VERDICT_STYLE = {"worse": "bold red", "better": "green", "same": "", "no data": "dim"}


def db_option(fn: Callable) -> Callable:
    return click.option(
        "--db",
        type=click.Path(dir_okay=False),
        default=DEFAULT_DB,
        show_default=True,
        help="Results database (opened read-only).",
    )(fn)


def format_options(csv_too: bool = True) -> Callable[[Callable], Callable]:
    """--json (and --csv) behave the same in every triage command; the default is a table."""

    def decorate(fn: Callable) -> Callable:
        if csv_too:
            fn = click.option("--csv", "fmt", flag_value="csv", help="Print CSV.")(fn)
        return click.option("--json", "fmt", flag_value="json", help="Print JSON.")(fn)

    return decorate


def _console() -> Console:
    return Console(highlight=False)


def _plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null, containers are walked."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(_plain(value), indent=2, default=str))


def _echo_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else v for v in _plain(list(row))])


def _cell(value: Any) -> Text:
    """Table cells as Text, so brackets in stored messages are never read as markup."""
    if value is None:
        return Text("NULL", style="dim")
    if isinstance(value, float):
        return Text(f"{value:.6g}")
    return Text(str(value))


# -- soak runs ------------------------------------------------------------------------------


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
@db_option
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
    with triage.readonly(db) as ro:
        runs = triage.list_runs(ro, limit, profile, status)
    rows = [r.as_dict() for r in runs]
    if fmt == "json":
        _echo_json(rows)
        return
    if fmt == "csv":
        columns = list(rows[0]) if rows else list(_RUN_CSV_COLUMNS)
        _echo_csv(columns, [list(r.values()) for r in rows])
        return
    if not runs:
        click.echo("no runs match" if (profile or status) else "the database holds no runs yet")
        return
    table = Table(title=Text(f"runs in {db}"))
    for col in (
        "id",
        "started",
        "profile",
        "cell",
        "status",
        "verdict",
        "duration",
        "iterations",
        "worst metric",
    ):
        table.add_column(
            col, justify="right" if col in ("id", "duration", "iterations") else "left"
        )
    for r in runs:
        table.add_row(
            str(r.id),
            triage.local_time(r.started_at),
            Text(r.profile),
            Text(triage.cell_label(r.cell)),
            Text(r.status, style=_STATUS_STYLE.get(r.status, "")),
            Text(r.verdict or "-"),
            triage.duration(r.duration_s),
            f"{r.iterations_done if r.iterations_done is not None else '-'}/"
            f"{r.iterations_planned if r.iterations_planned is not None else '-'}",
            Text(r.worst.describe() if r.worst else "-"),
        )
    _console().print(table)


# -- soak show ------------------------------------------------------------------------------


@click.command("show")
@click.argument("run", default="latest")
@db_option
@format_options(csv_too=False)
def show_command(run: str, db: str, fmt: str | None) -> None:
    """Show RUN (an id, or 'latest'): header, findings, events by kind, phase timings."""
    with triage.readonly(db) as ro:
        detail = triage.run_detail(ro, run)
    if fmt == "json":
        _echo_json(detail.as_dict())
        return
    console = _console()
    _print_header(console, detail)
    _print_findings(console, detail)
    _print_events(console, detail)
    _print_phases(console, detail)


def _print_header(console: Console, detail: triage.RunDetail) -> None:
    run = detail.run
    cell = triage.parse_cell(run.get("cell"))
    status = Text(detail.status, style=_STATUS_STYLE.get(detail.status, ""))
    if detail.abandoned_reason:
        status.append(f" ({detail.abandoned_reason})")
    elif run.get("reason"):
        status.append(f" ({run['reason']})")
    lines: list[tuple[str, Text | str]] = [
        ("profile", Text(run["profile"] + (f" [{triage.cell_label(cell)}]" if cell else ""))),
        ("status", status),
        ("verdict", Text(run.get("verdict") or "- (not analysed)")),
        (
            "host",
            Text(
                f"{run.get('host') or '-'} ({run.get('cpu_count') or '?'} CPUs"
                + (f", {run['gpu_name']}" if run.get("gpu_name") else "")
                + ")"
            ),
        ),
        ("triton", Text(run.get("triton_version") or "-")),
        (
            "workload",
            Text(
                f"{run.get('servers')} servers, {run.get('memory_type')} memory, "
                f"{run.get('instance_kind')} instances, "
                f"{run.get('inferences_per_model')} inferences per model, "
                f"{run.get('datatype')}"
            ),
        ),
        ("iterations", Text(f"{run.get('iterations_done')}/{run.get('iterations_planned')}")),
        ("started", Text(triage.local_time(run.get("started_at")))),
        ("ended", Text(triage.local_time(run.get("ended_at")))),
        ("heartbeat", Text(triage.local_time(run.get("heartbeat_at")))),
        ("duration", Text(triage.duration(triage.run_duration(run)))),
    ]
    console.print(Text(f"run {run['id']}", style="bold"))
    for key, value in lines:
        console.print(Text(f"  {key:<11}") + (value if isinstance(value, Text) else Text(value)))


def _print_findings(console: Console, detail: triage.RunDetail) -> None:
    console.print()
    if not detail.findings:
        console.print(f"no findings (run `soak analyze {detail.run['id']}` to judge this run)")
        return
    findings = [triage.finding_from_row(row) for row in detail.findings]
    measured = [f for f in findings if f.verdict != "no_data"]
    sites = [triage.site_finding_from_row(row) for row in detail.sites]
    if measured:
        console.print(findings_table(measured, title="findings", sites=sites))
    unmeasured = [f.metric for f in findings if f.verdict == "no_data"]
    if unmeasured:
        console.print(Text(f"no data (not measured here): {', '.join(unmeasured)}", style="dim"))
    for f in findings:
        if f.verdict == "leak":
            line = Text("LEAK ", style="bold red")
            line.append(f.reason)
            if f.growth_started_at is not None:
                line.append(f" Growth began at iteration {f.growth_started_at + 1}.")
            console.print(line, soft_wrap=True)
    for site in sites:  # allocation sites (attribution): where the growth is held
        if site.verdict == "leak":
            line = Text(f"GROWING SITE {site.site_id} ", style="bold red") + Text(site.reason)
            console.print(line, soft_wrap=True)
    if sites and not any(s.verdict == "leak" for s in sites):
        console.print(f"allocation sites: none grows ({len(sites)} traced site(s) judged)")


def _print_events(console: Console, detail: triage.RunDetail) -> None:
    console.print()
    if not detail.events:
        console.print("no events")
        return
    console.print(Text("events", style="bold"))
    for group in detail.events:
        more = f", {group.distinct} distinct" if group.distinct != group.count else ""
        console.print(Text(f"  {group.kind}: {group.count}{more}", style="bold"))
        for m in group.messages:
            where = ", ".join(
                part
                for part in (
                    f"iteration {m.iteration + 1}" if m.iteration is not None else "",
                    f"instance {m.instance}" if m.instance is not None and m.instance >= 0 else "",
                    f"phase {m.phase}" if m.phase else "",
                )
                if part
            )
            prefix = f"{m.count}x " if m.count > 1 else ""
            if group.kind in ("stack_dump", "crash", "signal", "error") and "\n" in m.text:
                console.print(Text(f"    {prefix}" + (f"[{where}]" if where else "")))
                console.print(Text(m.text.rstrip("\n")), soft_wrap=True)
            else:
                console.print(
                    Text(f"    {prefix}{m.text}" + (f" [{where}]" if where else "")),
                    soft_wrap=True,
                )
        if group.distinct > len(group.messages):
            console.print(
                Text(
                    f"    ... {group.distinct - len(group.messages)} more distinct message(s); "
                    "see soak query",
                    style="dim",
                )
            )


def _print_phases(console: Console, detail: triage.RunDetail) -> None:
    console.print()
    if not detail.phases:
        console.print("no phase timings (no iteration completed)")
        return
    table = Table(title="phase timings (slowest instance)")
    for col in ("phase", "iterations", "median", "max"):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for p in detail.phases:
        table.add_row(p.phase, str(p.iterations), f"{p.median_s:.3f} s", f"{p.max_s:.3f} s")
    console.print(table)


# -- soak query -----------------------------------------------------------------------------


@click.command("query")
@click.argument("query", required=False)
@db_option
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
@format_options()
def query_command(
    query: str | None,
    db: str,
    list_queries: bool,
    params: tuple[str, ...],
    max_rows: int,
    fmt: str | None,
) -> None:
    """Run a read-only SQL QUERY, or a canned query by name (see --list).

    Writes (INSERT, UPDATE, DELETE, DROP, CREATE, ATTACH, PRAGMA x = y, ...) are refused.
    """
    if list_queries:
        _list_canned(fmt)
        return
    if not query:
        raise click.UsageError("give an SQL query or a canned query name (soak query --list)")
    values = triage.parse_params(params)
    canned = triage.CANNED.get(query.strip())
    with triage.readonly(db) as ro:
        if canned:
            result = triage.run_canned(ro, canned.name, values)
        else:
            result = triage.run_query(ro, query, values)
    if fmt == "json":
        _echo_json(result.as_dicts())
        return
    if fmt == "csv":
        _echo_csv(result.columns, result.rows)
        return
    console = _console()
    if not result.rows:
        note = f"; this query needs {canned.needs}" if canned and canned.needs else ""
        click.echo(f"no rows{note}")
        return
    table = Table(title=Text(f"{canned.name}: {canned.description}") if canned else None)
    for col in result.columns:
        table.add_column(col, overflow="fold")
    # Byte columns read better in KiB/MiB; --csv and --json keep the exact numbers.
    in_bytes = [col.endswith("_bytes") for col in result.columns]
    for row in result.rows[:max_rows]:
        table.add_row(
            *(
                Text(human(v, "x_bytes")) if b and isinstance(v, (int, float)) else _cell(v)
                for v, b in zip(row, in_bytes, strict=True)
            )
        )
    console.print(table)
    if len(result.rows) > max_rows:
        click.echo(f"... {len(result.rows) - max_rows} more rows (use --csv or --json for all)")


def _list_canned(fmt: str | None) -> None:
    rows = [
        {
            "name": q.name,
            "description": q.description,
            "params": ", ".join(q.params) or None,
            "needs": q.needs or None,
        }
        for q in triage.CANNED.values()
    ]
    if fmt == "json":
        _echo_json(rows)
        return
    if fmt == "csv":
        _echo_csv(list(rows[0]), [list(r.values()) for r in rows])
        return
    table = Table(title=Text("canned queries: soak query NAME [--param NAME=VALUE ...]"))
    for col in ("name", "description", "parameters"):
        table.add_column(col, overflow="fold")
    for q in triage.CANNED.values():
        description = q.description + (f" Needs {q.needs}." if q.needs else "")
        table.add_row(q.name, Text(description), ", ".join(q.params) or "-")
    _console().print(table)


# -- soak compare ---------------------------------------------------------------------------


@click.command("compare")
@click.argument("base")
@click.argument("candidate")
@db_option
@click.option("--force", is_flag=True, help="Compare runs of different profiles or cells.")
@format_options(csv_too=False)
def compare_command(base: str, candidate: str, db: str, force: bool, fmt: str | None) -> None:
    """Compare CANDIDATE with BASE metric by metric: two run ids, or two matrices.

    A matrix is NAME (each cell's latest run) or NAME@RUN (each cell's latest run up to run
    RUN), so `soak compare nightly@120 nightly` compares before and after an upgrade. A metric
    is 'worse' when the candidate's 95% slope interval (widened for autocorrelation) lies
    wholly above the base's, 'better' when wholly below, else 'same'.
    """
    with triage.readonly(db) as ro:
        result = triage.compare(ro, base, candidate, force)
    if fmt == "json":
        _echo_json(result.as_dict())
        return
    console = _console()
    for cell in result.cells:
        title = f"{result.base} -> {result.candidate}"
        if cell.cell:
            title += f" [{triage.cell_label(cell.cell)}]"
        if not triage.is_run_spec(result.base):
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
                Text(m.verdict, style=_VERDICT_STYLE.get(m.verdict, "")),
            )
        console.print(table)
        for m in shown:
            if m.verdict != "same":
                console.print(
                    Text(f"{m.metric}: {m.verdict}: ", style=_VERDICT_STYLE[m.verdict])
                    + Text(
                        f"{_signed(m.difference, m.metric)}/iteration (base "
                        f"{_slope(m.base, m.metric)}, candidate "
                        f"{_slope(m.candidate, m.metric)})"
                    )
                )
        counts = {v: sum(m.verdict == v for m in cell.metrics) for v in _VERDICT_STYLE}
        console.print(", ".join(f"{n} {v}" for v, n in counts.items() if n))
        console.print()
    for label, cells in (
        (result.base, result.base_only),
        (result.candidate, result.candidate_only),
    ):
        for cell in cells:
            console.print(f"only in {label}: {triage.cell_label(cell)} (not compared)")
    console.print(Text(triage.SIGNIFICANCE_RULE, style="dim"))


def _slope(side: triage.SlopeSide | None, metric: str) -> str:
    if side is None or not side.usable:
        return "-"
    return f"{human(side.slope, metric)} [{human(side.low, metric)}, {human(side.high, metric)}]"


def _signed(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    return ("+" if value > 0 else "") + human(value, metric)


# -- soak browse ----------------------------------------------------------------------------


@click.command("browse")
@db_option
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


def register(group: click.Group) -> None:
    """Add the triage commands to ``group`` (soak's main group)."""
    for command in COMMANDS:
        group.add_command(command)
