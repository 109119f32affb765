"""Looking runs up for the triage commands: the read-only database, run ids, cells, times."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from soak.errors import StoreError
from soak.formatting import finite
from soak.store import latest_run_id, open_readonly, run_row


@contextmanager
def readonly(path: str | Path) -> Iterator[sqlite_utils.Database]:
    """The database opened read-only for the length of one command, then closed."""
    db = open_readonly(path)
    try:
        yield db
    finally:
        db.conn.close()


def local_time(epoch: float | None) -> str:
    """Local wall-clock time to the second; '-' for a missing time."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def iso_time(epoch: float | None) -> str | None:
    """ISO 8601 local time with its UTC offset, for JSON (unambiguous across machines)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def parse_cell(text: str | None) -> dict[str, Any]:
    """A run's matrix cell as a dict ({} for a plain run or unreadable JSON)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def resolve_run(db: sqlite_utils.Database, spec: str | int) -> int:
    """A run id from 'latest' or a number; an error naming the id when it does not exist."""
    if isinstance(spec, int):
        run_id = spec
    elif str(spec).strip().lower() == "latest":
        return latest_run_id(db)
    else:
        try:
            run_id = int(str(spec).strip())
        except ValueError:
            raise StoreError(f"{spec!r} is not a run id (give a number or 'latest')") from None
    run_row(db, run_id)  # raises "no run N in this database (runs go up to M)"
    return run_id


def run_duration(run: Mapping[str, Any], now: float | None = None) -> float | None:
    """Seconds from start to end; for a run without an end, to its last heartbeat."""
    start = finite(run.get("started_at"))
    end = finite(run.get("ended_at")) or finite(run.get("heartbeat_at"))
    if start is None:
        return None
    if end is None:
        end = time.time() if now is None else now
    return end - start


def matrix_names(db: sqlite_utils.Database) -> list[str]:
    """The matrices (profile names) that have runs in this database."""
    sql = "SELECT DISTINCT matrix FROM runs WHERE matrix IS NOT NULL ORDER BY matrix"
    return [row[0] for row in db.execute(sql)]


def no_matrix_error(db: sqlite_utils.Database, name: str) -> StoreError:
    known = matrix_names(db)
    return StoreError(
        f"no matrix named {name!r} in this database"
        + (f" (matrices: {', '.join(known)})" if known else " (it holds no matrix runs)")
    )
