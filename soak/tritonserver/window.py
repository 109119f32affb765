"""A burst with several requests in flight on one RemoteServer: submitted through tritonclient's
async_infer, results handed on in submission order, every one awaited before the burst returns.

Each request in flight owns a slot (0 .. concurrency-1): with system shared memory a slot is
one pair of regions, reused only once its response has been read, so no two requests in flight
share a region.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from soak.errors import ServerError, ServerTimeout
from soak.target.interface import OnResult, Output
from soak.triton.server import InferenceTimeout, TritonError
from soak.tritonserver.answers import triton_error

if TYPE_CHECKING:
    from soak.tritonserver.client import RemoteServer

Wait = Callable[[], "dict[str, Output]"]

_HTTP_WAIT_EXPIRED = "failed to obtain inference response"  # tritonclient's get_result timeout
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
    handed on. A request that never answers raises ServerTimeout once the others are awaited."""
    source = enumerate(inputs)
    window: deque[tuple[int, int, Wait | ServerError]] = deque()
    free = list(range(concurrency - 1, -1, -1))
    handed = 0
    going = True
    timeout: ServerTimeout | None = None
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
                    waiting = submit(server, model, item, outputs, timeout_s, datatypes, slot)
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
    `timeout_s`) and reads its outputs, raising TritonError or InferenceTimeout."""
    request_inputs, requested, regions, _ = server.prepare_request(
        model, inputs, outputs, datatypes, slot=slot
    )
    client = server._client()
    if server.grpc:
        done: queue.Queue = queue.Queue(maxsize=1)
        server._call(
            client.async_infer,
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
    pending = server._call(client.async_infer, model, request_inputs, outputs=requested)

    def wait_http() -> dict[str, Output]:
        try:
            result = server._call(pending.get_result, block=True, timeout=timeout_s)
        except TritonError as exc:
            if exc.message == _HTTP_WAIT_EXPIRED:
                raise InferenceTimeout(
                    "soak", f"no response from {model!r} within {timeout_s:g} s"
                ) from None
            raise
        return server.read_outputs(result, outputs, regions)

    return wait_http
