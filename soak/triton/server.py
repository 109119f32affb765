"""One in-process Triton server over the TRITONSERVER C API: its lifetime, health, models and
inference calls.

Every Triton object has exactly one owner that frees it exactly once: errors and messages
(soak.triton.returns), requests (soak.triton.request), responses and output buffers
(soak.triton.callbacks); a response only after its outputs were copied out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from ctypes import byref, c_bool, c_void_p
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from soak.errors import ServerError
from soak.target.interface import MemoryType, Output
from soak.triton import burst, capi
from soak.triton.callbacks import Inference
from soak.triton.creation import ServerOptions, create, new_delete_guard
from soak.triton.request import finish, submit
from soak.triton.returns import TritonError, check, message_json, triton_lib

log = logging.getLogger(__name__)


class Server:
    """One in-process Triton server; close() (or the with-block) stops and deletes it once."""

    receives_decoupled = True  # the C API delivers every response

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self._handle: int | None = create(options)
        self._lock = threading.Lock()

    # -- lifetime ---------------------------------------------------------------------------
    @property
    def handle(self) -> int:
        if self._handle is None:
            raise TritonError("soak", "server already deleted")
        return self._handle

    @property
    def closed(self) -> bool:
        return self._handle is None

    def stop(self) -> None:
        check(triton_lib().TRITONSERVER_ServerStop(self.handle))

    def delete(self) -> None:
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            with new_delete_guard(self.options):
                check(triton_lib().TRITONSERVER_ServerDelete(handle))

    def close(self) -> None:
        """Stop, then delete even when stop fails; the stop error is raised afterwards."""
        if self._handle is None:
            return
        try:
            self.stop()
        finally:
            self.delete()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- health and metadata ----------------------------------------------------------------
    def is_live(self) -> bool:
        flag = c_bool()
        check(triton_lib().TRITONSERVER_ServerIsLive(self.handle, byref(flag)))
        return flag.value

    def is_ready(self) -> bool:
        flag = c_bool()
        check(triton_lib().TRITONSERVER_ServerIsReady(self.handle, byref(flag)))
        return flag.value

    def metadata(self) -> dict:
        return self._json(triton_lib().TRITONSERVER_ServerMetadata)  # type: ignore[return-value]

    def _json(self, call: Callable[..., int | None], *args: object) -> object:
        """What a `TRITONSERVER_Server*` call that fills a TRITONSERVER_Message returns, as
        JSON; the message is deleted."""
        message = c_void_p()
        check(call(self.handle, *args, byref(message)))
        return message_json(message)

    # -- models -----------------------------------------------------------------------------
    def load_model(self, name: str) -> None:
        check(triton_lib().TRITONSERVER_ServerLoadModel(self.handle, name.encode()))

    def unload_model(self, name: str) -> None:
        check(triton_lib().TRITONSERVER_ServerUnloadModel(self.handle, name.encode()))

    def model_is_ready(self, name: str, version: int = -1) -> bool:
        flag = c_bool()
        check(
            triton_lib().TRITONSERVER_ServerModelIsReady(
                self.handle, name.encode(), version, byref(flag)
            )
        )
        return flag.value

    def model_index(self, ready_only: bool = False) -> list[dict]:
        """Every model of the server's repositories with its state ("READY", "UNAVAILABLE", ...)."""
        flags = capi.INDEX_FLAG_READY if ready_only else 0
        return self._json(triton_lib().TRITONSERVER_ServerModelIndex, flags)  # type: ignore[return-value]

    def model_statistics(self, name: str = "", version: int = -1) -> dict:
        call = triton_lib().TRITONSERVER_ServerModelStatistics
        return self._json(call, name.encode(), version)  # type: ignore[return-value]

    def request_counters(self) -> None:
        """No Prometheus endpoint in process (the C API's metrics are not read): None."""
        return None

    def model_metadata(self, name: str, version: int = -1) -> dict:
        """The model's metadata (inputs and outputs with datatype and shape, -1 variable)."""
        call = triton_lib().TRITONSERVER_ServerModelMetadata
        return self._json(call, name.encode(), version)  # type: ignore[return-value]

    def model_config(self, name: str, version: int = -1) -> dict:
        """The model's configuration as JSON (config format version 1)."""
        call = triton_lib().TRITONSERVER_ServerModelConfig
        return self._json(call, name.encode(), version, 1)  # type: ignore[return-value]

    # -- inference --------------------------------------------------------------------------
    def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        memory_type: MemoryType = MemoryType.SYSTEM,
        timeout_s: float = 30.0,
        keep_response: bool = False,
        device: int = 0,
        datatypes: dict[str, str] | None = None,
        sequence: tuple[int, int] = (0, 0),
    ) -> dict[str, Output]:
        """Run one request and wait for its final response and its release.

        `keep_response` never deletes the response: an injected leak inside Triton's objects.
        `device` is the GPU that GPU input and output buffers live on.
        `datatypes` names an input's Triton datatype where its numpy dtype cannot (BF16).
        Returns the outputs of the first response (see `infer_responses` for decoupled models).
        `sequence` is (correlation id, request flags) for a sequence model; (0, 0): none.
        """
        return self._run(
            model,
            inputs,
            outputs,
            memory_type,
            timeout_s,
            keep_response,
            datatypes,
            device,
            sequence=sequence,
        ).outputs

    def infer_responses(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        memory_type: MemoryType = MemoryType.SYSTEM,
        timeout_s: float = 30.0,
        datatypes: dict[str, str] | None = None,
        device: int = 0,
        sequence: tuple[int, int] = (0, 0),
    ) -> list[dict[str, Output]]:
        """Every response of one request until the FINAL flag (a decoupled model sends any
        number; a final flag that comes without a response adds none)."""
        return self._run(
            model, inputs, outputs, memory_type, timeout_s, False, datatypes, device, sequence
        ).responses

    def _run(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        memory_type: MemoryType,
        timeout_s: float,
        keep_response: bool,
        datatypes: dict[str, str] | None,
        device: int = 0,
        sequence: tuple[int, int] = (0, 0),
    ) -> Inference:
        request, inf = submit(
            self.handle,
            model.encode(),
            inputs,
            outputs,
            memory_type,
            keep_response,
            datatypes,
            device,
            sequence,
        )
        finish(model, request, inf, time.monotonic() + timeout_s, timeout_s)
        if inf.error is not None:
            raise inf.error
        return inf

    def infer_many(
        self,
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
        expected: Callable[[int], dict[str, np.ndarray] | None] | None = None,
    ) -> int:
        """A burst (soak.triton.burst.infer_many; `expected` is for generators that check
        answers themselves: here `on_result` checks every one)."""
        return burst.infer_many(
            self,
            model,
            inputs,
            outputs,
            on_result,
            concurrency,
            memory_type,
            timeout_s,
            device,
            datatypes,
            keep,
        )


@dataclass
class Runtime:
    """A loaded Triton core plus the backend folder of this run."""

    install: capi.TritonInstall
    backends_dir: Path
    api_version: tuple[int, int]
    stub: Path
    env: dict[str, str] = field(default_factory=dict)
