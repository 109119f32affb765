"""Helpers of the end-to-end tests: start soak as a user does, and read a results database
while soak runs against it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: `python -m soak.cli` with this interpreter: how every spawned soak command begins.
SOAK_CLI = (sys.executable, "-m", "soak.cli")


def soak(
    *args: str, cwd: Path = ROOT, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m soak.cli ARGS`, run to its end with its output captured as text (``env``:
    the whole environment; None: this one)."""
    return subprocess.run(
        [*SOAK_CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def query(db: Path, sql: str, *params) -> list[tuple]:
    """A read-only query; never takes a write lock, so the run under test is not disturbed."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def wait_for_iterations(db: Path, count: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until `count` iterations are committed; fails if soak ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "soak ended before the awaited iteration"
        if db.exists():
            try:
                if query(db, "SELECT count(*) FROM iterations")[0][0] >= count:
                    return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"no {count} iterations within {timeout} s")


@contextmanager
def reaped(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Kill and reap `proc` on the way out if it still runs (a failed assertion, a timeout)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
