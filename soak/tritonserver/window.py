"""A burst with several requests in flight on one RemoteServer: submitted without waiting (gRPC
async_infer; HTTP threads, see `submit`), results handed on in submission order, every one
awaited before the burst returns.

Each request in flight owns a slot (0 .. concurrency-1): with system shared memory a slot is
one pair of regions, reused only once its response has been read, so no two requests in flight
share a region.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING

import numpy as np

from soak.errors import ServerError, ServerTimeout
from soak.target.interface import LEAST_TIMEOUT_S, MemoryType, OnResult, Output
from soak.triton.returns import InferenceTimeout, TritonError
from soak.tritonserver.answers import triton_error

if TYPE_CHECKING:
    from soak.tritonserver.client import RemoteServer

Wait = Callable[[], "dict[str, Output]"]

_ANSWER_GRACE_S = 5.0  # past a gRPC deadline, how long the deadline's own error may take


def infer_window(
    server: RemoteServer,
    model: str,
    inputs: Iterable[dict[str, np.ndarray]],
    outputs: list[str],
    on_result: OnResult,
    concurrency: int,
    timeout_s: float,
    datatypes: dict[str, str] | None = None,
    keep: Callable[[int], bool] | None = None,
) -> int:
    """`ModelServer.infer_many` at `concurrency` in flight; returns how many results were
    handed on. A request that does not answer within `timeout_s` of the burst's start raises
    ServerTimeout once the others are awaited."""
    source = enumerate(inputs)
    window: deque[tuple[int, int, Wait | ServerError]] = deque()
    free = list(range(concurrency - 1, -1, -1))
    handed = 0
    going = True
    timeout: ServerTimeout | None = None
    end = time.monotonic() + timeout_s
    while True:
        while going and timeout is None and free:
            nxt = next(source, None)
            if nxt is None:
                break
            index, item = nxt
            slot = free.pop()
            if keep is not None and keep(index):
                waiting: Wait | ServerError = TritonError(
                    "soak", "keep_response (an in-process injected leak) is not remote"
                )
            else:
                try:
                    left = max(LEAST_TIMEOUT_S, end - time.monotonic())
                    waiting = submit(server, model, item, outputs, left, datatypes, slot)
                except ServerTimeout as exc:
                    timeout = timeout or exc
                    free.append(slot)
                    continue
                except ServerError as exc:
                    waiting = exc
            window.append((index, slot, waiting))
        if not window:
            break
        index, slot, waiting = window.popleft()
        result: dict[str, Output] | None = None
        error: ServerError | None = None
        if isinstance(waiting, ServerError):
            error = waiting
        else:
            try:
                result = waiting()
            except ServerTimeout as exc:
                timeout = timeout or exc
            except ServerError as exc:
                error = exc
        free.append(slot)
        if timeout is not None or not going:
            continue  # still awaited, no longer handed on
        handed += 1
        if not on_result(index, result, error):
            going = False
    if timeout is not None:
        raise timeout
    return handed


def submit(
    server: RemoteServer,
    model: str,
    inputs: dict[str, np.ndarray],
    outputs: list[str],
    timeout_s: float,
    datatypes: dict[str, str] | None = None,
    slot: int = 0,
) -> Callable[[], dict[str, Output]]:
    """Send one request without waiting; the returned call waits for its response (up to
    `timeout_s`) and reads its outputs, raising TritonError or InferenceTimeout.

    gRPC: tritonclient's async_infer, the request's regions those of `slot`. HTTP: a plain
    `infer` on one of the server's `concurrency` HTTP threads (each its own client and
    regions, so a thread is a slot): tritonclient's HTTP async_infer took ~11 ms a request
    whatever the concurrency (measured: 82-90 infer/s at 1 and 4 in flight, where 4 threads
    with their own clients made 2,836/s)."""
    if not server.grpc:
        future = server.http_threads().pool.submit(
            server.infer, model, inputs, outputs, MemoryType.SYSTEM, timeout_s, False, 0, datatypes
        )

        def wait_http() -> dict[str, Output]:
            try:
                return future.result(timeout=timeout_s + server.network_timeout_s)
            except FutureTimeout:
                raise InferenceTimeout(
                    "soak", f"no response from {model!r} within {timeout_s:g} s"
                ) from None

        return wait_http
    request_inputs, requested, regions, _ = server.prepare_request(
        model, inputs, outputs, datatypes, slot=slot
    )
    done: queue.Queue = queue.Queue(maxsize=1)
    server._call(
        server._client().async_infer,
        model,
        request_inputs,
        lambda result, error: done.put((result, error)),
        outputs=requested,
        client_timeout=timeout_s,
    )

    def wait_grpc() -> dict[str, Output]:
        try:
            result, error = done.get(timeout=timeout_s + _ANSWER_GRACE_S)
        except queue.Empty:
            raise InferenceTimeout(
                "soak", f"no response from {model!r} within {timeout_s:g} s"
            ) from None
        if error is not None:
            raise triton_error(error)
        return server.read_outputs(result, outputs, regions)

    return wait_grpc


class HttpThreads:
    """The threads a RemoteServer sends HTTP requests in flight from. tritonclient's HTTP
    client (gevent) may only be used, and closed, on the thread that made it, so `close` has
    every thread close its own client (a keep-alive connection left open holds the server's
    exit for its whole exit timeout) before the threads end."""

    def __init__(self, server: RemoteServer, size: int) -> None:
        self.server = server
        self.size = size
        self.pool = ThreadPoolExecutor(size, thread_name_prefix="soak-http")

    def close(self) -> None:
        barrier = threading.Barrier(self.size)  # one task per thread, each on its own

        def close_mine() -> None:
            try:
                barrier.wait(timeout=10)
            except threading.BrokenBarrierError:
                pass
            self.server.forget_thread_client()

        for done in [self.pool.submit(close_mine) for _ in range(self.size)]:
            done.result()
        self.pool.shutdown(wait=True)
