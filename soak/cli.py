"""soak's command line: parses, calls the library, prints; exit codes are mapped here only."""

from __future__ import annotations

import logging
import os
import signal
import sys

import click

from soak import __version__
from soak import profile as profiles
from soak.analyze import analyze_run, finding_row, latest_run_id, run_row, worst_exit
from soak.errors import SoakError

EXIT_PASSED, EXIT_LEAK, EXIT_FAILED, EXIT_INCONCLUSIVE = 0, 1, 2, 3
DEFAULT_DB = "results/soak.db"


class SoakGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SoakError as exc:
            click.echo(f"soak: error: {exc}", err=True)
            ctx.exit(EXIT_FAILED)
        except click.BadParameter as exc:  # a flag's value (--servers abc): one line too
            click.echo(f"soak: error: {' '.join(exc.format_message().split())}", err=True)
            ctx.exit(EXIT_FAILED)


@click.group(cls=SoakGroup)
@click.version_option(__version__, prog_name="soak")
@click.option("-v", "--verbose", is_flag=True, help="Log what soak does.")
def main(verbose: bool) -> None:
    """Resource-leak soak tester for NVIDIA Triton Inference Server."""
    if not sys.stdout.isatty():
        # Rich wraps tables to 80 columns off a terminal; CI logs deserve whole tables.
        os.environ.setdefault("COLUMNS", "160")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def report_options(fn):
    """--junit, --json and --out behave the same in run, analyze and report."""
    fn = click.option(
        "--out",
        type=click.Path(file_okay=False),
        help="Write one PNG per metric and index.md into this folder.",
    )(fn)
    fn = click.option(
        "--json", "json_path", type=click.Path(dir_okay=False), help="Write the findings as JSON."
    )(fn)
    fn = click.option(
        "--junit",
        type=click.Path(dir_okay=False),
        help="Write JUnit XML (a test case per metric) for CI.",
    )(fn)
    return fn


def _analyze_and_store(store, run_id: int):
    from soak.report.console import print_summary

    analysis = analyze_run(store.db, run_id)
    store.write_findings(run_id, [finding_row(f) for f in analysis.findings])
    store.update_run(
        run_id, status=analysis.status, verdict=analysis.verdict, exit_code=analysis.exit_code
    )
    print_summary(analysis.findings, analysis.verdict, analysis.status, run_id)
    return analysis


def _write_reports(db, analyses, junit, json_path, out) -> None:
    from soak.report.outputs import write_outputs

    for path in write_outputs(db, analyses, junit, json_path, out):
        click.echo(f"wrote {path}")


@main.command()
@click.argument("run_id", required=False, type=int)
@click.option("--db", type=click.Path(dir_okay=False), default=DEFAULT_DB, show_default=True)
@report_options
def analyze(run_id, db, junit, json_path, out) -> None:
    """Re-run the analysis of RUN_ID (default: the latest run) on stored data."""
    from soak.store import Store, open_readonly

    ro = open_readonly(db)  # a missing or foreign file or run is refused before any write
    try:
        rid = run_id if run_id is not None else latest_run_id(ro)
        run_row(ro, rid)
    finally:
        ro.conn.close()
    store = Store(db)
    analysis = _analyze_and_store(store, rid)
    _write_reports(store.db, [analysis], junit, json_path, out)
    sys.exit(analysis.exit_code)


@main.command()
@click.argument("run_id", required=False, type=int)
@click.option("--db", type=click.Path(dir_okay=False), default=DEFAULT_DB, show_default=True)
@report_options
def report(run_id, db, junit, json_path, out) -> None:
    """Write reports of RUN_ID (default: the latest run) from stored data; changes nothing."""
    from soak.analyze import analyze_run as judge_run
    from soak.store import open_readonly

    ro = open_readonly(db)
    rid = run_id if run_id is not None else latest_run_id(ro)
    if not (junit or json_path or out):
        raise click.UsageError("say what to write: --out DIR, --junit FILE and/or --json FILE")
    _write_reports(ro, [judge_run(ro, rid)], junit, json_path, out)


@main.command()
@click.argument("profile")
@click.option("--servers", type=int, help="Override the profile's servers (N).")
@click.option("--iterations", type=int, help="Override the profile's iterations.")
@click.option("--memory-type", type=str, help="Override memory_type: system, pinned or gpu.")
@click.option(
    "--db",
    type=click.Path(),
    default=DEFAULT_DB,
    show_default=True,
    help="Results database (SQLite).",
)
@click.option("--no-progress", is_flag=True, help="Plain log lines instead of a progress bar.")
@report_options
def run(
    profile: str, servers, iterations, memory_type, db, no_progress, junit, json_path, out
) -> None:
    """Run PROFILE (a name under profiles/ or a path to a .toml file)."""
    from soak.report.progress import make_progress
    from soak.runner import session
    from soak.workload import scenarios

    prof = profiles.load(profile).with_overrides(
        servers=servers, iterations=iterations, memory_type=memory_type
    )
    store = session.prepare(prof, db)
    supervisors = []

    def on_sigint(signum, frame) -> None:
        for s in supervisors:
            s.request_stop()
        click.echo("\nsoak: stopping after this iteration (Ctrl-C again to stop at once)", err=True)

    signal.signal(signal.SIGINT, on_sigint)
    analyses = []
    for cell in prof.cells():
        label = " ".join(f"{k}={v}" for k, v in cell.cell.items())
        click.echo(
            f"soak: {prof.name}{' [' + label + ']' if label else ''}: "
            f"{cell.run['servers']} servers x {cell.run['iterations']} iterations, "
            f"{cell.run['memory_type']} memory, {cell.run['instance_kind']} instances -> {db}"
        )
        click.echo(f"  {scenarios.describe(cell.run)}")
        with make_progress(cell.run["iterations"], no_progress) as progress:
            outcomes = session.run_cells(
                cell,
                store,
                on_iteration=progress.update,
                supervisor_hook=supervisors.append,
            )
        for outcome in outcomes:
            ended = "finished" if outcome.status == "passed" else outcome.status
            click.echo(f"run {outcome.run_id}: {ended}: {outcome.reason}")
            analysis = _analyze_and_store(store, outcome.run_id)
            analyses.append(analysis)
        if outcomes and outcomes[-1].status == "interrupted":
            break
    _write_reports(store.db, analyses, junit, json_path, out)
    sys.exit(worst_exit([a.exit_code for a in analyses]))


def _register_triage() -> None:
    from soak.cli_triage import register

    register(main)


_register_triage()


if __name__ == "__main__":
    main()
