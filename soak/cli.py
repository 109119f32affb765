"""soak's command line: parses, calls the library, prints; exit codes are mapped here only."""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import click

from soak import __version__
from soak import profile as profiles
from soak.errors import SoakError

EXIT_PASSED, EXIT_LEAK, EXIT_FAILED, EXIT_INCONCLUSIVE = 0, 1, 2, 3


class SoakGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SoakError as exc:
            click.echo(f"soak: error: {exc}", err=True)
            ctx.exit(EXIT_FAILED)


@click.group(cls=SoakGroup)
@click.version_option(__version__, prog_name="soak")
@click.option("-v", "--verbose", is_flag=True, help="Log what soak does.")
def main(verbose: bool) -> None:
    """Resource-leak soak tester for NVIDIA Triton Inference Server."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.argument("profile")
@click.option("--servers", type=int, help="Override the profile's servers (N).")
@click.option("--iterations", type=int, help="Override the profile's iterations.")
@click.option("--memory-type", type=str, help="Override memory_type: system, pinned or gpu.")
@click.option("--db", type=click.Path(dir_okay=False), default="results/soak.db",
              show_default=True, help="Results database.")
@click.option("--no-progress", is_flag=True, help="Plain log lines instead of a progress bar.")
def run(profile: str, servers, iterations, memory_type, db, no_progress) -> None:
    """Run PROFILE (a name under profiles/ or a path to a .toml file)."""
    from soak.runner.engine import Engine

    prof = profiles.load(profile).with_overrides(
        servers=servers, iterations=iterations, memory_type=memory_type
    )
    failures = 0
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        engine = Engine(prof, Path(tmp))
        for i in range(prof.run["iterations"]):
            rec = engine.iterate(i)
            phases = " ".join(f"{k}={v * 1000:.0f}ms" for k, v in rec.phase_max_s().items())
            status = "ok" if not rec.failures and rec.hung is None else "FAILED"
            click.echo(f"iteration {i + 1}/{prof.run['iterations']} {rec.wall_s:.2f}s {status} {phases}")
            for f in rec.failures:
                click.echo(f"  instance {f.instance} {f.phase}: {f.message}")
            failures += len(rec.failures)
            if rec.hung is not None:
                click.echo(f"  hung: {rec.hung}")
                sys.stdout.flush()
                import os

                os._exit(EXIT_FAILED)
    sys.exit(EXIT_FAILED if failures else EXIT_PASSED)


if __name__ == "__main__":
    main()
