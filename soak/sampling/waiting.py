"""Waiting for processes to end, the one way soak does: a zombie or a reused pid has ended."""

from __future__ import annotations

import time
from collections.abc import Sequence

import psutil


def wait_ended(
    procs: Sequence[psutil.Process], timeout_s: float, reap: bool = False
) -> list[psutil.Process]:
    """Those of ``procs`` still running after up to ``timeout_s``; the one way soak waits for
    processes to end.

    A zombie has ended (it holds no memory, fd or mapping): psutil.wait_procs would wait for it
    to be reaped, and a killed worker's stubs are orphans that only init reaps, 1.4 s later on
    the CI VM and never under an init that does not reap. A pid that now names another process
    has ended too. ``reap``: also reap those that are our own children, so that they do not
    stay zombies (not for a subprocess.Popen child, whose exit status Popen must read).
    """
    deadline = time.monotonic() + timeout_s
    alive = list(procs)
    while alive:
        if reap:
            _reap_own(alive)
        alive = [p for p in alive if _running(p)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    return alive


def _reap_own(procs: list[psutil.Process]) -> None:
    """Reap those that are our own children, so that they do not stay zombies."""
    for proc in procs:
        try:
            proc.wait(timeout=0)
        except (psutil.TimeoutExpired, psutil.NoSuchProcess):
            pass


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # ZombieProcess included
        return False
