"""A burst of requests on one model with at most `concurrency` in flight: the window of
submitted requests, each result handed on in submission order on the caller's thread."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from ctypes import c_void_p
from typing import TYPE_CHECKING

import numpy as np

from soak.errors import ServerError
from soak.target.interface import MemoryType, Output
from soak.triton.callbacks import Inference, registry
from soak.triton.request import finish, submit
from soak.triton.returns import InferenceTimeout, TritonError

if TYPE_CHECKING:
    from soak.triton.server import Server


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
    order on this thread. `on_result` returning False stops the burst: nothing more is
    sent, what is in flight is still awaited and freed (not handed on). `keep(index)`
    true never deletes that request's response (the injected leak). Returns how many
    results were handed on. InferenceTimeout when one request is not complete and
    released within `timeout_s` of its submission; the others in flight are then left to
    Triton as well (never freed: Triton may still call back)."""
    window: deque[tuple[c_void_p, Inference, float]] = deque()
    name = model.encode()
    handed = 0
    going = True

    def collect() -> None:
        nonlocal handed, going
        request, inf, deadline = window.popleft()
        try:
            finish(model, request, inf, deadline, timeout_s)
        except InferenceTimeout:
            cb = registry()
            while window:
                request, inf, _ = window.popleft()
                cb.abandon(request.value, inf)
            raise
        if going:
            handed += 1
            going = bool(on_result(handed - 1, inf.outputs, inf.error))

    try:
        for index, item in enumerate(inputs):
            if not going:
                break
            while len(window) >= max(1, concurrency):
                collect()
                if not going:
                    break
            if not going:
                break
            keep_one = bool(keep is not None and keep(index))
            try:
                request, inf = submit(
                    server.handle, name, item, outputs, memory_type, keep_one, datatypes, device
                )
            except TritonError as exc:
                while window:
                    collect()
                if going:
                    handed += 1
                    going = bool(on_result(index, None, exc))
                continue
            window.append((request, inf, time.monotonic() + timeout_s))
        while window:
            collect()
    except BaseException:
        # An exception from on_result or the input iterator: what is in flight still
        # completes and is freed (unless it never does: then it stays Triton's).
        going = False
        while window:
            try:
                collect()
            except InferenceTimeout:
                break
        raise
    return handed
