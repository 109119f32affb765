"""`soak run`: parses, wires Ctrl-C, calls :func:`soak.runner.session.run`, prints, exits."""

from __future__ import annotations

import signal
import sys
from contextlib import ExitStack

import click

from soak import profile as profiles
from soak.cli.common import db_option, echo_written, file_options
from soak.errors import ExitCode


@click.command()
@click.argument("profile")
@click.option("--servers", type=int, help="Override the profile's servers (N).")
@click.option("--iterations", type=int, help="Override the profile's iterations.")
@click.option("--memory-type", type=str, help="Override memory_type: system, pinned or gpu.")
@db_option("Results database (SQLite).", exists=False)
@click.option("--no-progress", is_flag=True, help="Plain log lines instead of a progress bar.")
@file_options
def run(
    profile: str, servers, iterations, memory_type, db, no_progress, junit, json_path, out
) -> None:
    """Run PROFILE (a name under profiles/ or a path to a .toml file)."""
    from soak.report.console import cell_heading, print_summary
    from soak.report.progress import make_progress
    from soak.runner import session
    from soak.workload.scenarios import describe

    prof = profiles.load(profile).with_overrides(
        servers=servers, iterations=iterations, memory_type=memory_type
    )
    store = session.prepare(prof, db)
    stopper = session.Stopper()

    def on_sigint(signum, frame) -> None:
        stopper.stop()
        click.echo("\nsoak: stopping after this iteration (Ctrl-C again to stop at once)", err=True)

    signal.signal(signal.SIGINT, on_sigint)
    with ExitStack() as cell_scope:
        progress = None

        def on_cell(cell: profiles.Profile) -> None:
            nonlocal progress
            click.echo(cell_heading(prof.name, cell.cell, cell.run, db))
            click.echo(f"  {describe(cell.run)}")
            progress = cell_scope.enter_context(make_progress(cell.run["iterations"], no_progress))

        def on_done(outcome, analysis) -> None:
            cell_scope.close()  # the progress bar ends before the summary
            ended = "finished" if outcome.status == "passed" else outcome.status
            click.echo(f"run {outcome.run_id}: {ended}: {outcome.reason}")
            print_summary(analysis.findings, analysis.verdict, analysis.status, analysis.run_id)

        analyses = session.run(
            prof,
            store,
            on_cell=on_cell,
            on_iteration=lambda view: progress.update(view),
            on_done=on_done,
            stopper=stopper,
        )
    echo_written(store.db, analyses, junit, json_path, out)
    sys.exit(ExitCode.worst(a.exit_code for a in analyses))


COMMANDS = (run,)
