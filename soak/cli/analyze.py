"""`soak analyze` (re-judge a stored run) and `soak report` (write its reports)."""

from __future__ import annotations

import sys

import click

from soak.cli.common import db_option, echo_written, file_options


@click.command()
@click.argument("run_id", required=False, type=int)
@db_option("Results database.")
@file_options
def analyze(run_id, db, junit, json_path, out) -> None:
    """Re-run the analysis of RUN_ID (default: the latest run) on stored data."""
    from soak.report.analyze import print_analysis
    from soak.report.outputs import check_output_paths
    from soak.run_analysis import reanalyze
    from soak.store import open_readonly

    check_output_paths(junit, json_path, out)  # before the analysis is stored
    analysis = reanalyze(db, run_id)
    print_analysis(analysis)
    echo_written(open_readonly(db), [analysis], junit, json_path, out)
    sys.exit(analysis.exit_code)


@click.command()
@click.argument("run_id", required=False, type=int)
@db_option("Results database (opened read-only).")
@file_options
def report(run_id, db, junit, json_path, out) -> None:
    """Write reports of RUN_ID (default: the latest run) from stored data; changes nothing."""
    from soak.report.outputs import check_output_paths
    from soak.run_analysis import analyze_run
    from soak.store import latest_run_id, open_readonly

    if not (junit or json_path or out):
        raise click.UsageError("say what to write: --out DIR, --junit FILE and/or --json-file FILE")
    check_output_paths(junit, json_path, out)
    ro = open_readonly(db)
    rid = run_id if run_id is not None else latest_run_id(ro)
    echo_written(ro, [analyze_run(ro, rid)], junit, json_path, out)


COMMANDS = (analyze, report)
