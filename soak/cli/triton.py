"""`soak triton install|list|remove`: Triton cores from nvidia-pytriton wheels, one home per
version under $SOAK_CACHE/triton; parse, call soak.triton_homes, print."""

from __future__ import annotations

import click

from soak.cli.common import console, echo_json, format_options


@click.group("triton")
def triton_group() -> None:
    """Install other Triton versions to soak on (point triton_home at what install prints)."""


def _warn(home) -> None:
    for problem in home.problems():
        click.echo(f"soak: warning: {problem}", err=True)


@triton_group.command("install")
@click.argument("version")
def install_command(version: str) -> None:
    """Install Triton VERSION (such as 2.43.0, or pytriton==0.5.3) and print its home."""
    from soak import triton_homes

    home = triton_homes.install(version)
    _warn(home)
    click.echo(str(home.path))


@triton_group.command("list")
@format_options(csv_too=False)
def list_command(fmt: str | None) -> None:
    """Show the installed Triton versions: path, size and the Pythons with a stub."""
    from rich.table import Table

    from soak import triton_homes
    from soak.formatting import binary_size

    homes = triton_homes.list_homes()
    if fmt == "json":
        echo_json([h.as_dict() for h in homes])
        return
    if not homes:
        click.echo(f"no Triton installed in {triton_homes.cache_root()}")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("triton", "pytriton", "size", "python stubs", "path"):
        table.add_column(column)
    for h in homes:
        stubs = ", ".join(h.stub_pythons) or "none"
        if not h.serves_this_python:
            stubs += " (not this Python)"
        if h.missing_symbols:
            stubs += "; soak cannot run it"
        table.add_row(
            h.triton_version, h.pytriton, binary_size(h.size_bytes, 0), stubs, str(h.path)
        )
    console().print(table)


@triton_group.command("remove")
@click.argument("version")
def remove_command(version: str) -> None:
    """Delete the installed Triton VERSION and its cached wheel."""
    from soak import triton_homes

    home = triton_homes.remove(version)
    click.echo(f"removed Triton {home.triton_version} ({home.path})")


COMMANDS = (triton_group,)
