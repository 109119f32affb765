"""The callbacks Triton calls on its own threads (output allocation, buffer and request
release, responses) and the state of each request in flight.

Two kinds serve them, behind `Completions`: soak's C callbacks (soak.triton.native) for
requests in system memory where a C compiler built them, and these Python callbacks (every
memory, reached by the request's integer id) otherwise. Either way soak's own thread reads
and deletes each response (`drain`), never Triton's."""

from __future__ import annotations

import ctypes
import itertools
import threading
import time
from ctypes import byref, c_char_p, c_int, c_int64, c_size_t, c_uint32, c_uint64, c_void_p
from typing import Protocol

import numpy as np

from soak.target.interface import MemoryType, Output
from soak.triton import capi, tensors
from soak.triton import memory as mem
from soak.triton.returns import TritonError, check, take_error, triton_lib


class Inference:
    """State of one in-flight request, reachable from callbacks by its integer id.

    `responses` holds the outputs of every non-null response in arrival order: one for an
    ordinary model, any number (zero included) for a decoupled one."""

    def __init__(self, ident: int, memory_type: MemoryType, device: int = 0) -> None:
        self.ident = ident
        self.memory_type = memory_type
        self.device = device  # the GPU of GPU buffers
        self.responses: list[dict[str, Output]] = []
        self.error: TritonError | None = None
        self.completions: Completions | None = None  # what serves its callbacks (`start`)
        self.userp = 0  # what Triton hands its callbacks back
        self.completed: threading.Event | None = None  # Python callbacks only
        self.released: threading.Event | None = None
        self.keep_response = False
        self.input_buffers: list[tuple[MemoryType, int]] = []
        # Responses Triton handed over, read and deleted by `Callbacks.drain` on soak's thread;
        # once abandoned (timed out), the response callback drains them itself.
        self.pending: list[int] = []
        self.abandoned = False

    @property
    def outputs(self) -> dict[str, Output]:
        return self.responses[0] if self.responses else {}


#: Request ids, for the process's life.
ids = itertools.count(1)
#: The injected leak: responses read but never deleted.
kept_responses: list[int] = []
#: Timed-out requests (request handle, state), never freed: Triton may still call back.
abandoned: list[tuple[int, Inference]] = []


class Completions(Protocol):
    """What serves the callbacks of a request: the pointers its request is given, and how
    soak's thread waits for it, takes its responses and lets it go."""

    allocator: c_void_p
    response_ptr: c_void_p
    request_release_ptr: c_void_p

    def start(self, inf: Inference) -> None:
        """Before the request is sent: `inf.userp` is what the callbacks get back."""

    def wait(self, inf: Inference, deadline: float) -> bool:
        """True once the final response came and the request was released (monotonic
        `deadline`), False at the deadline."""

    def drain(self, inf: Inference) -> None:
        """Read and delete, once each in arrival order, the responses handed over so far."""

    def abandon(self, request: int, inf: Inference) -> None:
        """Nobody waits any more: keep everything alive; delete responses as they come."""

    def done(self, inf: Inference) -> None:
        """The request is freed (or was never sent): its callback state goes too."""


class Callbacks:
    """The Python callbacks (CFUNCTYPE objects) and their allocator, created once and kept
    for the process's life; they serve every memory type."""

    def __init__(self) -> None:
        self.inflight: dict[int, Inference] = {}
        self.lock = threading.Lock()
        self.ids = ids
        self.kept_responses = kept_responses
        self.abandoned = abandoned
        self.alloc_fn = capi.ALLOC_FN(self._alloc)
        self.release_buffer_fn = capi.RELEASE_BUFFER_FN(self._release_buffer)
        self.request_release_fn = capi.REQUEST_RELEASE_FN(self._request_released)
        self.response_fn = capi.RESPONSE_FN(self._response)
        allocator = c_void_p()
        check(
            triton_lib().TRITONSERVER_ResponseAllocatorNew(
                byref(allocator),
                ctypes.cast(self.alloc_fn, c_void_p),
                ctypes.cast(self.release_buffer_fn, c_void_p),
                None,
            )
        )
        self.allocator = allocator
        # As the request calls take them, cast once.
        self.request_release_ptr = ctypes.cast(self.request_release_fn, c_void_p)
        self.response_ptr = ctypes.cast(self.response_fn, c_void_p)

    def _error(self, text: str) -> int:
        return triton_lib().TRITONSERVER_ErrorNew(capi.ERROR_INTERNAL, text.encode())

    def _alloc(self, _alloc, name, size, _mtype, _mtid, userp, buf, buf_userp, actual, actual_id):
        try:
            inf = self.inflight.get(userp or 0)
            wanted = inf.memory_type if inf is not None else MemoryType.SYSTEM
            device = inf.device if inf is not None and wanted is MemoryType.GPU else 0
            buf_userp[0] = None
            actual[0] = mem.triton_code(wanted)
            actual_id[0] = device
            buf[0] = mem.allocate(wanted, size, device) if size else None
            return None
        except Exception as exc:  # an exception must not cross into C
            return self._error(f"soak allocator: {exc}")

    def _release_buffer(self, _alloc, buf, _buf_userp, _size, mtype, _mtid):
        try:
            if buf:
                mem.release(mem.from_triton(mtype), buf)
            return None
        except Exception as exc:
            return self._error(f"soak release: {exc}")

    def _request_released(self, _request, flags, userp):
        if flags & capi.RELEASE_ALL:
            inf = self.inflight.get(userp or 0)
            if inf is not None:
                inf.released.set()  # type: ignore[union-attr]

    def _response(self, response, flags, userp):
        # Runs on the model instance's thread (the python backend sends from it): the instance
        # starts no other request until this returns, so it only hands the response over; the
        # caller's thread reads and deletes it (`drain`) while the instance works on.
        inf = self.inflight.get(userp or 0)
        if inf is None:
            if response:
                take_error(triton_lib().TRITONSERVER_InferenceResponseDelete(response))
            return
        try:
            if response:
                inf.pending.append(response)
                if inf.abandoned:  # nobody waits for it any more
                    drain(inf)
        finally:
            if flags & capi.RESPONSE_FINAL:
                inf.completed.set()  # type: ignore[union-attr]

    def start(self, inf: Inference) -> None:
        inf.completions, inf.userp = self, inf.ident
        inf.completed, inf.released = threading.Event(), threading.Event()
        self.inflight[inf.ident] = inf

    def wait(self, inf: Inference, deadline: float) -> bool:
        return bool(
            inf.completed.wait(max(0.0, deadline - time.monotonic()))  # type: ignore[union-attr]
            and inf.released.wait(max(0.0, deadline - time.monotonic()))  # type: ignore[union-attr]
        )

    def drain(self, inf: Inference) -> None:
        drain(inf)

    def done(self, inf: Inference) -> None:
        self.inflight.pop(inf.ident, None)

    def abandon(self, request: int, inf: Inference) -> None:
        """A request nobody waits for any more: Triton may still call back, so it and its state
        stay alive (never freed); its responses are deleted as they come."""
        inf.abandoned = True
        self.abandoned.append((request, inf))
        drain(inf)


def drain(inf: Inference) -> None:
    """Read and delete (once each, in arrival order) the responses in `inf.pending`."""
    pending = inf.pending
    while pending:
        try:
            response = pending.pop(0)  # atomic: two drains never take the same one
        except IndexError:
            return
        try:
            try:
                read_response(inf, response)
            finally:  # a response that cannot be read is still deleted, once
                if inf.keep_response:
                    kept_responses.append(response)
                else:
                    check(triton_lib().TRITONSERVER_InferenceResponseDelete(response))
        except Exception as exc:
            if inf.error is None:
                inf.error = _as_triton(exc)


def read_response(inf: Inference, response: int) -> None:
    """The response's error, or its outputs copied into `inf.responses`."""
    lib = triton_lib()
    # The header does not say so, but core builds a new error on every call
    # (RETURN_IF_STATUS_ERROR(response->ResponseStatus())) and Triton's own frontends delete
    # it: not deleting it leaked the message, +4.2 KB RSS per 4,000-character error.
    error = take_error(lib.TRITONSERVER_InferenceResponseError(response))
    if error is not None:
        inf.error = error
        return
    count = c_uint32()
    check(lib.TRITONSERVER_InferenceResponseOutputCount(response, byref(count)))
    outputs: dict[str, Output] = {}
    inf.responses.append(outputs)
    p = _out_params()
    for index in range(count.value):
        check(lib.TRITONSERVER_InferenceResponseOutput(response, index, *p.refs))
        output_name = p.name.value.decode()
        datatype = capi.DATATYPE_NAMES.get(p.dtype.value, str(p.dtype.value))
        shape = p.shape
        dims_list = [shape[i] for i in range(p.dims.value)]
        actual = mem.from_triton(p.mtype.value)
        try:
            out = _copy_output(actual, p.base.value, p.size.value, datatype, dims_list)
        except tensors.DatatypeError as exc:
            raise TritonError("soak", f"output {output_name!r}: {exc}") from None
        outputs[output_name] = Output(out, actual, datatype)


class _OutParams:
    """The out-parameters of TRITONSERVER_InferenceResponseOutput, made once per thread."""

    def __init__(self) -> None:
        self.name, self.dtype = c_char_p(), c_int()
        self.shape, self.dims = ctypes.POINTER(c_int64)(), c_uint64()
        self.base, self.size = c_void_p(), c_size_t()
        self.mtype, self.mtid, self.userp = c_int(), c_int64(), c_void_p()
        self.refs = tuple(
            byref(v)
            for v in (
                self.name,
                self.dtype,
                self.shape,
                self.dims,
                self.base,
                self.size,
                self.mtype,
                self.mtid,
                self.userp,
            )
        )


_per_thread = threading.local()


def _out_params() -> _OutParams:
    try:
        return _per_thread.out_params
    except AttributeError:
        _per_thread.out_params = params = _OutParams()
        return params


def _copy_output(
    memory_type: MemoryType, base: int | None, size: int, datatype: str, dims: list[int]
) -> np.ndarray:
    """Copy one output buffer (any memory) into a numpy array of the datatype's carrier."""
    if datatype == "BYTES":
        raw = np.empty(size, dtype=np.uint8)
        if size:
            mem.copy_out(memory_type, raw.ctypes.data, base, size)
        return tensors.deserialize_bytes(raw.tobytes(), dims)
    out = np.empty(dims, dtype=tensors.numpy_dtype(datatype))
    if out.nbytes != size:
        raise tensors.DatatypeError(f"{size} bytes for a {datatype} tensor of shape {dims}")
    if size:
        mem.copy_out(memory_type, out.ctypes.data, base, size)
    return out


def _as_triton(exc: Exception) -> TritonError:
    return exc if isinstance(exc, TritonError) else TritonError("soak", str(exc))


_callbacks: Callbacks | None = None
_callbacks_lock = threading.Lock()


def registry() -> Callbacks:
    """The process's callbacks, made on first use."""
    global _callbacks
    with _callbacks_lock:
        if _callbacks is None:
            _callbacks = Callbacks()
        return _callbacks


def kept_response_count() -> int:
    return len(kept_responses)
