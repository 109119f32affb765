"""One inference request: built from numpy inputs (copied into buffers of the memory asked
for), sent, then awaited and freed once. A request is deleted only after its release callback
reported RELEASE_ALL: the python backend releases requests late, and deleting them early (as
Triton's own multi-server test does) crashes about one server instance in four."""

from __future__ import annotations

import ctypes
import time
from ctypes import byref, c_int64, c_void_p

import numpy as np

from soak.target.interface import MemoryType
from soak.triton import capi, tensors
from soak.triton import memory as mem
from soak.triton.callbacks import Inference, registry
from soak.triton.returns import InferenceTimeout, TritonError, check, triton_lib


def _set_sequence(lib: ctypes.CDLL, request: c_void_p, sequence: tuple[int, int]) -> None:
    """A sequence model's request: its sequence's correlation id and START/END flags."""
    correlation_id, flags = sequence
    if correlation_id:
        check(lib.TRITONSERVER_InferenceRequestSetCorrelationId(request, correlation_id))
    if flags:
        check(lib.TRITONSERVER_InferenceRequestSetFlags(request, flags))


def submit(
    handle: int,
    model: bytes,
    inputs: dict[str, np.ndarray],
    outputs: list[str],
    memory_type: MemoryType,
    keep_response: bool,
    datatypes: dict[str, str] | None,
    device: int = 0,
    sequence: tuple[int, int] = (0, 0),
) -> tuple[c_void_p, Inference]:
    """Build one request and send it; on failure everything it made is freed again."""
    lib = triton_lib()
    cb = registry()
    inf = Inference(next(cb.ids), memory_type, device)
    device_id = device if memory_type is MemoryType.GPU else 0
    inf.keep_response = keep_response
    request = c_void_p()
    check(lib.TRITONSERVER_InferenceRequestNew(byref(request), handle, model, -1))
    started = False
    try:
        _set_sequence(lib, request, sequence)
        for name, array in inputs.items():
            array = np.asarray(array)
            try:
                datatype = (datatypes or {}).get(name) or tensors.datatype_of(array)
                wire = tensors.to_wire(array, datatype)
            except tensors.DatatypeError as exc:
                raise TritonError("soak", f"input {name!r}: {exc}") from None
            data = np.frombuffer(wire, dtype=np.uint8) if isinstance(wire, bytes) else wire
            shape = (c_int64 * array.ndim)(*array.shape)
            check(
                lib.TRITONSERVER_InferenceRequestAddInput(
                    request, name.encode(), capi.DATATYPES[datatype], shape, array.ndim
                )
            )
            ptr = mem.allocate(memory_type, data.nbytes, device_id)
            inf.input_buffers.append((memory_type, ptr))
            if data.nbytes:
                mem.copy_in(memory_type, ptr, data.ctypes.data, data.nbytes)
            check(
                lib.TRITONSERVER_InferenceRequestAppendInputData(
                    request,
                    name.encode(),
                    ptr,
                    data.nbytes,
                    mem.triton_code(memory_type),
                    device_id,
                )
            )
        for name in outputs:
            check(lib.TRITONSERVER_InferenceRequestAddRequestedOutput(request, name.encode()))
        check(
            lib.TRITONSERVER_InferenceRequestSetReleaseCallback(
                request, cb.request_release_ptr, inf.ident
            )
        )
        check(
            lib.TRITONSERVER_InferenceRequestSetResponseCallback(
                request,
                cb.allocator,
                inf.ident,
                cb.response_ptr,
                inf.ident,
            )
        )
        cb.inflight[inf.ident] = inf
        check(lib.TRITONSERVER_ServerInferAsync(handle, request, None))
        started = True
    except BaseException:
        cb.inflight.pop(inf.ident, None)
        if not started:
            lib.TRITONSERVER_InferenceRequestDelete(request)
            _free_inputs(inf)
        raise
    return request, inf


def finish(
    model: str, request: c_void_p, inf: Inference, deadline: float, timeout_s: float
) -> None:
    """Wait for the final response and the release, then free the request (once)."""
    cb = registry()
    if not (
        inf.completed.wait(max(0.0, deadline - time.monotonic()))
        and inf.released.wait(max(0.0, deadline - time.monotonic()))
    ):
        # Triton may still call back: keep everything alive, free nothing.
        cb.abandon(request.value, inf)
        raise InferenceTimeout(
            "soak", f"inference on {model!r} did not complete within {timeout_s:g} s"
        )
    cb.drain(inf)
    cb.inflight.pop(inf.ident, None)
    check(triton_lib().TRITONSERVER_InferenceRequestDelete(request))
    _free_inputs(inf)


def _free_inputs(inf: Inference) -> None:
    for mtype, ptr in inf.input_buffers:
        mem.release(mtype, ptr)
    inf.input_buffers.clear()
