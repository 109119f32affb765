"""One gRPC bidirectional stream per server client: how a decoupled model's responses reach
soak, each request's responses collected up to Triton's final flag."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from soak.triton.returns import InferenceTimeout
from soak.tritonserver.answers import triton_error


class GrpcStream:
    """The stream of one RemoteServer, opened at the first request and ended by end().

    `new_client` gives a gRPC client to open it on; `call` runs a client method, turning
    tritonclient's errors into soak's. One request at a time: a stream's errors do not say
    which request they belong to.
    """

    def __init__(self, new_client: Callable[[], Any], call: Callable[..., Any]) -> None:
        self._new_client = new_client
        self._call = call
        self._lock = threading.Lock()
        self._client: Any = None
        self._results: queue.Queue = queue.Queue()

    def request(
        self, model: str, inputs: list, outputs: list, timeout_s: float, seq: dict | None = None
    ) -> list[Any]:
        """One request on the stream and its responses up to the final flag (an empty final
        response is not one of them)."""
        with self._lock:
            if self._client is None:
                self._client = self._new_client()
                self._call(self._client.start_stream, self._results_put)
            self._call(
                self._client.async_stream_infer,
                model,
                inputs,
                outputs=outputs,
                enable_empty_final_response=True,
                **(seq or {}),
            )
            results = []
            while True:
                try:
                    result, error = self._results.get(timeout=timeout_s)
                except queue.Empty:
                    raise InferenceTimeout(
                        "soak", f"no final response from {model!r} within {timeout_s:g} s"
                    ) from None
                if error is not None:
                    raise triton_error(error)
                response = result.get_response()
                final = response.parameters.get("triton_final_response")
                if response.outputs or not (final and final.bool_param):
                    results.append(result)
                if final is None or final.bool_param:
                    return results

    def end(self) -> None:
        """Stop the stream, cancelling what is in flight; the next request opens a new one."""
        with self._lock:
            client, self._client = self._client, None
            if client is not None:
                client.stop_stream(cancel_requests=True)
            self._results = queue.Queue()

    def _results_put(self, result: Any, error: Any) -> None:
        self._results.put((result, error))
