"""Pauses between polls of Triton's state while waiting for it to change (ready, unloaded).

Short at first, so that a quick change is seen quickly, then longer: every poll allocates in
Triton and in Python (a model index is a JSON message to build, copy and parse). Polling every
5 ms through a 1.3 s unload made about 40% of the allocations of an attributed cpu run, and
that churn is what memray's reader must replay afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

FIRST_S = 0.005
CAP_S = 0.05


def pauses(first: float = FIRST_S, cap: float = CAP_S) -> Iterator[float]:
    """first, 2 first, 4 first, ... up to `cap`, then `cap` for ever."""
    pause = first
    while True:
        yield pause
        pause = min(cap, pause * 2)
