"""Blocking calls into Triton run in threads under a deadline: a call that overruns cannot be
interrupted, so the caller learns which are still running and declares its phase hung."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def bounded(calls: list[Callable[[], None]], timeout_s: float) -> list[BaseException | None]:
    """Run blocking calls in parallel threads; TimeoutError(indexes still running) on expiry."""
    results: list[BaseException | None] = [None] * len(calls)

    def runner(i: int, fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            results[i] = exc

    threads = [
        threading.Thread(target=runner, args=(i, fn), daemon=True, name="soak-triton-call")
        for i, fn in enumerate(calls)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    running = [i for i, t in enumerate(threads) if t.is_alive()]
    if running:
        raise TimeoutError(running)
    return results
