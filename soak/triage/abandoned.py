"""Abandoned-run detection: a run stored as running whose supervisor is gone."""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import psutil
import sqlite_utils

from soak.formatting import duration, finite

#: A running run whose heartbeat is older than this many seconds may be abandoned ...
STALE_MIN_S = 300.0


#: ... or than this many median iteration wall times, whichever is longer.
STALE_ITERATIONS = 10.0


#: A supervisor pid whose process started this long after the run did is a reused pid.
PID_REUSE_SLACK_S = 1.0


def staleness_limit(median_wall_s: float | None) -> float:
    """How old a heartbeat may be before a running run is suspect.

    The supervisor writes a heartbeat with every iteration, so a heartbeat older than ten
    typical iterations (and never less than five minutes, for runs with short iterations
    and for runs that have not finished their first one) means nothing has been committed
    for far longer than the run itself says an iteration takes.
    """
    wall = finite(median_wall_s) or 0.0
    return max(STALE_MIN_S, STALE_ITERATIONS * wall)


def supervisor_alive(pid: int | None, started_at: float | None) -> bool:
    """Whether the run's supervisor process still exists on this host.

    A process with that pid that started after the run did is another process that reused
    the pid, so it counts as dead. A process we may not inspect counts as alive: showing a
    dead run as running is the safe mistake.
    """
    if not pid or pid <= 0:
        return False
    try:
        created = psutil.Process(int(pid)).create_time()
    except psutil.NoSuchProcess:  # includes zombies: exited, only not yet reaped
        return False
    except psutil.Error:
        return True
    return started_at is None or created <= float(started_at) + PID_REUSE_SLACK_S


def display_status(
    run: Mapping[str, Any],
    median_wall_s: float | None,
    now: float | None = None,
    this_host: str | None = None,
) -> tuple[str, str]:
    """The status to show, and why a run is called 'abandoned' ('' otherwise).

    A run stored as 'running' is abandoned at once when it ran on this host and its supervisor
    pid is provably gone (or reused by a younger process): no heartbeat age is needed, since
    a live supervisor is the only writer of that row. For a run of another host the pid cannot
    be checked, so a heartbeat older than :func:`staleness_limit` alone decides. This is
    display only: the database is never changed.
    """
    status = str(run.get("status") or "")
    if status != "running":
        return status, ""
    now = time.time() if now is None else now
    beat = finite(run.get("heartbeat_at")) or finite(run.get("started_at")) or now
    age = now - beat
    host = run.get("host")
    here = this_host if this_host is not None else socket.gethostname()
    pid = run.get("supervisor_pid")
    if host == here and pid:
        if supervisor_alive(pid, finite(run.get("started_at"))):
            return status, ""
        return "abandoned", (
            f"stored as running, but the last heartbeat was {duration(age)} ago and "
            f"supervisor pid {pid} is not alive on {host}"
        )
    limit = staleness_limit(median_wall_s)
    if age <= limit:
        return status, ""
    where = (
        f"supervisor pid {pid} is unknown"
        if host == here
        else f"it ran on {host or 'an unknown host'}, so its supervisor cannot be checked here"
    )
    return "abandoned", (
        f"stored as running, but the last heartbeat was {duration(age)} ago "
        f"(limit {duration(limit)}) and {where}"
    )


def median_walls(db: sqlite_utils.Database, run_ids: Sequence[int]) -> dict[int, float]:
    if not run_ids:
        return {}
    marks = ", ".join("?" for _ in run_ids)
    walls: dict[int, list[float]] = {}
    for run_id, wall in db.execute(
        f"SELECT run_id, wall_s FROM iterations WHERE run_id IN ({marks}) AND wall_s IS NOT NULL",
        list(run_ids),
    ):
        walls.setdefault(run_id, []).append(wall)
    return {k: statistics.median(v) for k, v in walls.items()}
