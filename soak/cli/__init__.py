"""soak's command line: one module per command group, each parses, calls one library function
and prints; errors become exit codes in one place (:class:`soak.cli.common.SoakGroup`)."""

from soak.cli import analyze, run, triage, triton
from soak.cli.common import main

for _module in (run, analyze, triage, triton):
    for _command in _module.COMMANDS:
        main.add_command(_command)

__all__ = ["main"]
