"""The run's temp folder (TMPDIR/soak-run<ID>-*), marked with its supervisor, and the removal
of those whose supervisor is dead: a supervisor killed with SIGKILL cannot remove its own,
and an `--attribute` capture in it is megabytes.

Only folders with soak's name and a marker naming a supervisor (pid and start time) that no
longer runs are removed; a pid reused since is told apart by its start time.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

PREFIX = "soak-run"
MARKER = "soak-supervisor.json"


def mark(folder: Path) -> None:
    """Say in the folder which process owns it (this one)."""
    me = psutil.Process()
    (folder / MARKER).write_text(json.dumps({"pid": me.pid, "create_time": me.create_time()}))


def _owner_alive(marker: Path) -> bool:
    try:
        owner = json.loads(marker.read_text())
        proc = psutil.Process(int(owner["pid"]))
        return abs(proc.create_time() - float(owner["create_time"])) < 0.01
    except psutil.NoSuchProcess:
        return False
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return True  # unreadable or unknown: not known dead, so kept


def remove_abandoned(tmpdir: str | None = None) -> list[Path]:
    """Remove the temp folders of soak runs whose supervisor is dead; returns them."""
    base = Path(tmpdir or tempfile.gettempdir())
    removed = []
    try:
        candidates = [p for p in base.iterdir() if p.name.startswith(PREFIX)]
    except OSError:
        return []
    for folder in candidates:
        marker = folder / MARKER
        if folder.is_symlink() or not marker.is_file() or _owner_alive(marker):
            continue
        try:
            if folder.stat().st_uid != os.getuid():
                continue
            shutil.rmtree(folder)
        except OSError as exc:
            log.warning("could not remove the abandoned run folder %s: %s", folder, exc)
            continue
        removed.append(folder)
    return removed
