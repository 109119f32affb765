"""`soak run`: parses, wires Ctrl-C (and SIGTERM, SIGHUP), calls
:func:`soak.runner.session.run`, prints, exits."""

from __future__ import annotations

import signal
import sys
from contextlib import ExitStack

import click

from soak import profile as profiles
from soak.cli.common import db_option, echo_written, file_options, survive_closed_output
from soak.errors import ExitCode


@click.command()
@click.argument("profile")
@click.option("--servers", type=int, help="Override the profile's servers (N).")
@click.option("--iterations", type=int, help="Override the profile's iterations.")
@click.option("--memory-type", type=str, help="Override memory_type: system, pinned or gpu.")
@click.option(
    "--triton",
    "tritons",
    multiple=True,
    metavar="VERSION|HOME",
    help="Run on this Triton (an installed version, the default core's, or a home); twice "
    "or more: every cell on each, as a matrix axis (then: soak compare --upgrade OLD NEW).",
)
@db_option("Results database (SQLite).", exists=False)
@click.option("--no-progress", is_flag=True, help="Plain log lines instead of a progress bar.")
@click.option(
    "--attribute",
    is_flag=True,
    help="Trace allocation sites (memray) after the warm-up: which sites grow (up to 2x slower).",
)
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help="Run the cells as tasks on a Ray cluster: auto (the running cluster), local (start "
    "one here) or an address. Needs pip install 'soak[ray]'.",
)
@click.option(
    "--url",
    metavar="URL",
    help="Attach to a tritonserver someone else started, at this loopback address "
    "(http://127.0.0.1:PORT, or 127.0.0.1:PORT for grpc); needs --pid. Never started or "
    "stopped by soak.",
)
@click.option("--pid", type=int, help="With --url: the attached tritonserver's process id.")
@file_options
def run(
    profile: str,
    servers,
    iterations,
    memory_type,
    tritons,
    db,
    no_progress,
    attribute,
    ray_address,
    url,
    pid,
    junit,
    json_path,
    out,
) -> None:
    """Run PROFILE (a name under profiles/ or a path to a .toml file)."""
    from soak.report.analyze import cell_heading, print_analysis
    from soak.report.outputs import check_output_paths
    from soak.report.progress import make_progress
    from soak.runner import session
    from soak.scenario_notes import describe

    prof = (
        profiles.load(profile)
        .with_overrides(servers=servers, iterations=iterations, memory_type=memory_type)
        .with_tritons(tritons)
        .with_attach(url, pid)
    )
    if attribute:
        prof = prof.with_attribution()
    check_output_paths(junit, json_path, out)
    store = session.prepare(prof, db, ray_address)
    stopper = session.Stopper()
    then = "stopping after this iteration"
    if ray_address:
        then = "cancelling the cells, the running ones after their iteration"

    def on_stop_signal(signum, frame) -> None:
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        stopper.stop(name)
        try:
            click.echo(f"\nsoak: {name}: {then} (again: at once)", err=True)
        except OSError:  # a hung-up terminal: the stop matters, not the message
            pass

    # A CI job's timeout sends SIGTERM, a closed SSH session SIGHUP: both end the run as
    # Ctrl-C does (interrupted, analysed, outputs written).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_stop_signal)
    if ray_address:
        cells = len(prof.cells())
        click.echo(f"soak: {prof.name}: {cells} cell(s) on Ray ({ray_address}) -> {db}")
    with ExitStack() as cell_scope:
        progress = None

        say = survive_closed_output(click.echo)

        def on_cell(cell: profiles.Profile) -> None:
            nonlocal progress
            say(cell_heading(prof.name, cell.cell, cell.run, db))
            say(f"  {describe(cell.run)}")
            progress = cell_scope.enter_context(make_progress(cell.run["iterations"], no_progress))

        def on_done(outcome, analysis) -> None:
            cell_scope.close()  # the progress bar ends before the summary
            ended = "finished" if outcome.status == "passed" else outcome.status
            say(f"run {outcome.run_id}: {ended}: {outcome.reason}")
            survive_closed_output(print_analysis)(analysis)

        analyses = session.run(
            prof,
            store,
            on_cell=on_cell,
            on_iteration=survive_closed_output(lambda view: progress.update(view)),
            on_phase=survive_closed_output(lambda view: progress.phase(view)),
            on_done=on_done,
            stopper=stopper,
            ray_address=ray_address,
            on_cells=lambda cells: say(cells.line()),
        )
    echo_written(store.db, analyses, junit, json_path, out)
    sys.exit(ExitCode.worst(a.exit_code for a in analyses))


COMMANDS = (run,)
