"""Polls of a server's state while waiting for it to change (ready, unloaded), and the pauses
between them.

Short at first, so that a quick change is seen quickly, then longer: every poll allocates in
Triton and in Python (a model index is a JSON message to build, copy and parse). Polling every
5 ms through a 1.3 s unload made about 40% of the allocations of an attributed cpu run, and
that churn is what memray's reader must replay afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Iterator
from typing import TYPE_CHECKING

from soak.triton.facts import BUSY_MODEL_STATES

if TYPE_CHECKING:
    from soak.target.interface import ModelServer

FIRST_S = 0.005
CAP_S = 0.05


def pauses(first: float = FIRST_S, cap: float = CAP_S) -> Iterator[float]:
    """first, 2 first, 4 first, ... up to `cap`, then `cap` for ever."""
    pause = first
    while True:
        yield pause
        pause = min(cap, pause * 2)


def wait_unloaded(
    server: ModelServer, names: Iterable[str], timeout_s: float, held: Collection[str] = ()
) -> dict[str, str | None]:
    """Watch the model index until none of `names` is loaded, loading or unloading (a stop
    would wait for them in 1 s steps); those still so after `timeout_s`, with their state.

    A model in `held` counts as gone once UNLOADING: a response never freed keeps it there
    for good. A ServerError from the index reaches the caller."""
    deadline = time.monotonic() + timeout_s
    pending = set(names)
    for pause in pauses():
        states = {m["name"]: m.get("state", "") for m in server.model_index()}
        pending = {
            m
            for m in pending
            if states.get(m) in BUSY_MODEL_STATES
            and not (m in held and states.get(m) == "UNLOADING")
        }
        if not pending:
            return {}
        if time.monotonic() > deadline:
            return {m: states.get(m) for m in sorted(pending)}
        time.sleep(pause)
    return {}  # unreachable: pauses() never ends
