"""`soak browse`: the database served read-only by Datasette."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from soak.errors import SoakError


def datasette_command(
    db_path: str | Path, port: int = 8001, open_browser: bool = False
) -> list[str]:
    """The command that serves the database in Datasette on 127.0.0.1, read-only (immutable).

    Immutable mode never writes (no -wal/-shm, no locks) but does not see what a running run
    has not checkpointed yet; run ``soak browse`` again to see newer iterations.
    """
    if importlib.util.find_spec("datasette") is None:
        raise SoakError(
            "datasette is not installed: pip install 'soak[browse]' "
            "(or .venv/bin/pip install datasette), then run soak browse again"
        )
    cmd = [
        sys.executable,
        "-m",
        "datasette",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--immutable",
        str(db_path),
    ]
    if open_browser:
        cmd.append("--open")
    return cmd
