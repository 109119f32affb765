"""A burst of requests on one model with at most `concurrency` in flight: the window of
submitted requests, each result handed on in submission order on the caller's thread."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from ctypes import c_void_p
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from soak.errors import ServerError
from soak.target.interface import MemoryType, Output
from soak.triton.callbacks import Inference
from soak.triton.request import await_done, build, discard, release, send
from soak.triton.returns import InferenceTimeout, TritonError

if TYPE_CHECKING:
    from soak.triton.server import Server


@dataclass
class _Entry:
    """One request of the burst, in submission order: sent (`inf` set) or refused (`error`)."""

    index: int
    request: c_void_p | None
    inf: Inference | None
    deadline: float
    error: ServerError | None = None
    done: bool = False  # complete and released, or never sent


def infer_many(
    server: Server,
    model: str,
    inputs: Iterable[dict[str, np.ndarray]],
    outputs: list[str],
    on_result: Callable[[int, dict[str, Output] | None, ServerError | None], bool],
    concurrency: int = 1,
    memory_type: MemoryType = MemoryType.SYSTEM,
    timeout_s: float = 30.0,
    device: int = 0,
    datatypes: dict[str, str] | None = None,
    keep: Callable[[int], bool] | None = None,
) -> int:
    """A burst: every request of `inputs`, at most `concurrency` in flight (Triton answers
    on its own threads), each handed to `on_result(index, outputs, error)` in submission
    order on this thread. Each request is built while the ones ahead of it run and sent as
    soon as one of them completes; the completed one is then read and checked while the new
    one runs (at concurrency 1 soak's own work overlaps Triton's, one request in flight).

    `on_result` returning False stops the burst: nothing more is sent (the one sent just
    before that result was handed on included, at most `concurrency` are still in flight),
    what is in flight is awaited and freed, not handed on. `keep(index)` true never deletes
    that request's response (the injected leak). Returns how many results were handed on.
    InferenceTimeout when a request is not complete and released within `timeout_s` of the
    burst's start (the caller's budget: what is left of its infer phase); the others in
    flight are then left to Triton as well (never freed: Triton may still call back)."""
    order: deque[_Entry] = deque()  # sent or refused, not yet handed on
    name = model.encode()
    waiting = handed = 0  # waiting: entries of `order` sent and not yet complete
    going = True
    built: tuple[c_void_p, Inference] | None = None
    end = time.monotonic() + timeout_s

    def wait_oldest() -> None:
        nonlocal waiting
        entry = next(e for e in order if not e.done)
        try:
            await_done(model, entry.request, entry.inf, entry.deadline, timeout_s)  # type: ignore[arg-type]
        except InferenceTimeout:
            for other in order:
                if other is entry or other.request is None:
                    continue
                if other.done:
                    release(other.request, other.inf)  # type: ignore[arg-type]
                else:
                    other.inf.completions.abandon(other.request.value, other.inf)  # type: ignore[union-attr]
            order.clear()
            raise
        entry.done = True
        waiting -= 1

    def hand_on() -> None:
        """Free and hand on, in order, what has completed at the front."""
        nonlocal handed, going
        while order and order[0].done:
            entry = order.popleft()
            if entry.request is not None:
                release(entry.request, entry.inf)  # type: ignore[arg-type]
                result, error = entry.inf.outputs, entry.inf.error  # type: ignore[union-attr]
            else:
                result, error = None, entry.error
            if going:
                handed += 1
                going = bool(on_result(entry.index, result, error))

    try:
        for index, item in enumerate(inputs):
            if not going:
                break
            keep_one = bool(keep is not None and keep(index))
            try:
                built = build(
                    server.handle, name, item, outputs, memory_type, keep_one, datatypes, device
                )
            except TritonError as exc:  # refused before it was sent: handed on in its turn
                order.append(_Entry(index, None, None, 0.0, error=exc, done=True))
                hand_on()
                continue
            while waiting >= max(1, concurrency):
                wait_oldest()
            request, inf = built
            built = None
            try:
                send(server.handle, request, inf)
            except TritonError as exc:
                order.append(_Entry(index, None, None, 0.0, error=exc, done=True))
            else:
                order.append(_Entry(index, request, inf, end))
                waiting += 1
            hand_on()
        while order:
            if not order[0].done:
                wait_oldest()
            hand_on()
    except BaseException:
        # An exception from on_result or the input iterator: what is in flight still
        # completes and is freed (unless it never does: then it stays Triton's).
        going = False
        if built is not None:
            discard(*built)
        while order:
            try:
                if not order[0].done:
                    wait_oldest()
                hand_on()
            except InferenceTimeout:
                break
        raise
    return handed
