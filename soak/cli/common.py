"""What every command shares: the main group, the one mapping of errors to exit codes, and
the options with one meaning everywhere.

Output options have one vocabulary: a flag that changes what is *printed* is ``--json`` or
``--csv`` (triage commands); a flag that *writes a file* names the file's kind and takes its
path: ``--json-file FILE``, ``--junit FILE``, ``--out DIR`` (run, analyze, report).
"""

from __future__ import annotations

import csv
import errno
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click
from rich.console import Console

from soak import __version__
from soak.errors import ExitCode, SoakError
from soak.formatting import plain

DEFAULT_DB = "results/soak.db"


class SoakGroup(click.Group):
    """Maps every SoakError (and a bad flag value) to one `soak: error:` line and exit 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SoakError as exc:
            click.echo(f"soak: error: {exc}", err=True)
            ctx.exit(ExitCode.FAILED)
        except click.BadParameter as exc:  # a flag's value (--servers abc): one line too
            click.echo(f"soak: error: {' '.join(exc.format_message().split())}", err=True)
            ctx.exit(ExitCode.FAILED)
        except click.NoSuchOption as exc:
            if exc.option_name.lstrip("-").isdigit():  # `soak show -1`: a negative "run id"
                message = f"{exc.option_name} is not a run id (run ids are positive numbers)"
            else:
                message = " ".join(exc.format_message().split())
            click.echo(f"soak: error: {message}", err=True)
            ctx.exit(ExitCode.FAILED)
        except click.UsageError as exc:  # a missing argument, an extra one: one line, no usage
            click.echo(f"soak: error: {' '.join(exc.format_message().split())}", err=True)
            ctx.exit(ExitCode.FAILED)
        except OSError as exc:
            if not closed_output(exc):
                raise
            detach_output(exc)  # `soak runs | head`: the reader had enough; not an error
            ctx.exit(ExitCode.PASSED)


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


def closed_output(exc: BaseException) -> bool:
    """Whether an error means our reader went away: a pipe closed early (`| head`), or a
    terminal that hung up (EIO after an SSH session ends)."""
    return isinstance(exc, BrokenPipeError) or (isinstance(exc, OSError) and exc.errno == errno.EIO)


def detach_output(exc: BaseException) -> None:
    """Point stdout (and, for a lost terminal, stderr) at /dev/null, so that nothing written
    later, nor the interpreter's last flush, fails again: Python's advice for EPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    streams = (sys.stdout, sys.stderr) if not isinstance(exc, BrokenPipeError) else (sys.stdout,)
    for stream in streams:
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):  # a stream without a descriptor (tests): nothing to do
            pass
    os.close(devnull)


def survive_closed_output(fn: Callable) -> Callable:
    """``fn`` (a printing callback) with a closed stdout or terminal detached and ignored:
    output trouble must never change what a run records."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OSError as exc:
            if not closed_output(exc):
                raise
            detach_output(exc)
            return None

    return call


def db_option(help: str = "Results database (opened read-only).", exists: bool = True):
    """--db, with the default every command shares."""

    def decorate(fn: Callable) -> Callable:
        return click.option(
            "--db",
            type=click.Path(dir_okay=False) if exists else click.Path(),
            default=DEFAULT_DB,
            show_default=True,
            help=help,
        )(fn)

    return decorate


def format_options(csv_too: bool = True) -> Callable[[Callable], Callable]:
    """--json (and --csv) print JSON (CSV) instead of a table, in every triage command."""

    def decorate(fn: Callable) -> Callable:
        if csv_too:
            fn = click.option("--csv", "fmt", flag_value="csv", help="Print CSV.")(fn)
        return click.option("--json", "fmt", flag_value="json", help="Print JSON.")(fn)

    return decorate


def file_options(fn: Callable) -> Callable:
    """--junit, --json-file and --out write files, the same in run, analyze and report.

    `--json FILE` was the old name of --json-file here; it still works (hidden, with a warning)
    so that CI jobs written for it keep their findings file.
    """

    command = fn

    @functools.wraps(command)
    def with_legacy_json(*args: Any, json_legacy: str | None = None, **kwargs: Any) -> Any:
        if json_legacy is not None:
            click.echo("soak: warning: --json FILE is now --json-file FILE", err=True)
            kwargs["json_path"] = kwargs.get("json_path") or json_legacy
        return command(*args, **kwargs)

    fn = click.option("--json", "json_legacy", type=click.Path(dir_okay=False), hidden=True)(
        with_legacy_json
    )
    fn = click.option(
        "--out",
        type=click.Path(file_okay=False),
        help="Write one PNG per metric and index.md into this folder.",
    )(fn)
    fn = click.option(
        "--json-file",
        "json_path",
        type=click.Path(dir_okay=False),
        help="Write the findings as JSON to this file.",
    )(fn)
    fn = click.option(
        "--junit",
        type=click.Path(dir_okay=False),
        help="Write JUnit XML (a test case per metric) for CI.",
    )(fn)
    return fn


def console() -> Console:
    """The console tables are printed on (no highlighting of numbers in stored text)."""
    return Console(highlight=False)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(plain(value), indent=2, default=str))


def echo_json_records(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A JSON array of one object per row, written as the rows come (bounded memory); the
    same text as :func:`echo_json` of the whole list."""
    out, first = sys.stdout, True
    for row in rows:
        item = json.dumps(plain(dict(zip(columns, row, strict=True))), indent=2, default=str)
        out.write(("[\n" if first else ",\n") + "\n".join("  " + ln for ln in item.split("\n")))
        first = False
    out.write("[]\n" if first else "\n]\n")


def echo_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else v for v in plain(list(row))])


def echo_formatted(fmt: str | None, data: Any, columns: Sequence[str] = ()) -> bool:
    """--json / --csv: print ``data`` so (for CSV a list of dicts, whose keys are the header;
    ``columns`` when there is no row) and say True; False: the caller prints its table."""
    if fmt == "json":
        echo_json(data)
        return True
    if fmt == "csv":
        echo_csv(list(data[0]) if data else list(columns), [list(r.values()) for r in data])
        return True
    return False


def echo_written(
    db: Any, analyses: list, junit: str | None, json_path: str | None, out: str | None
):
    """Write the files the file options asked for, and say which."""
    from soak.report.outputs import write_outputs

    for path in write_outputs(db, analyses, junit, json_path, out):
        survive_closed_output(click.echo)(f"wrote {path}")
