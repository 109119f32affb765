"""One inference request: built from numpy inputs (copied into buffers of the memory asked
for), sent, then awaited and freed once. A request is deleted only after its release callback
reported RELEASE_ALL: the python backend releases requests late, and deleting them early (as
Triton's own multi-server test does) crashes about one server instance in four."""

from __future__ import annotations

import ctypes
from ctypes import byref, c_int64, c_void_p

import numpy as np

from soak.target.interface import MemoryType
from soak.triton import capi, tensors
from soak.triton import memory as mem
from soak.triton.callbacks import Completions, Inference, ids, registry
from soak.triton.returns import InferenceTimeout, TritonError, check, take_error, triton_lib


def completions_for(memory_type: MemoryType) -> Completions:
    """What serves a request's callbacks: soak's C callbacks for system memory where they
    were built (soak.triton.native), the Python callbacks otherwise."""
    if memory_type is MemoryType.SYSTEM:
        from soak.triton import native

        fast = native.completions()
        if fast is not None:
            return fast
    return registry()


def in_flight() -> int:
    """Requests whose callback state is still held (sent and not yet freed, or abandoned)."""
    from soak.triton import native

    fast = native.completions()
    return len(registry().inflight) + (fast.live if fast is not None else 0)


def _set_sequence(lib: ctypes.CDLL, request: c_void_p, sequence: tuple[int, int]) -> None:
    """A sequence model's request: its sequence's correlation id and START/END flags."""
    correlation_id, flags = sequence
    if correlation_id:
        check(lib.TRITONSERVER_InferenceRequestSetCorrelationId(request, correlation_id))
    if flags:
        check(lib.TRITONSERVER_InferenceRequestSetFlags(request, flags))


def build(
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
    """One request, ready to `send`; on failure everything it made is freed again."""
    lib = triton_lib()
    cb = completions_for(memory_type)
    inf = Inference(next(ids), memory_type, device)
    device_id = device if memory_type is MemoryType.GPU else 0
    inf.keep_response = keep_response
    request = c_void_p()
    check(lib.TRITONSERVER_InferenceRequestNew(byref(request), handle, model, -1))
    try:
        cb.start(inf)
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
            encoded = name.encode()
            check(
                lib.TRITONSERVER_InferenceRequestAddInput(
                    request, encoded, capi.DATATYPES[datatype], shape, array.ndim
                )
            )
            ptr = mem.allocate(memory_type, data.nbytes, device_id)
            inf.input_buffers.append((memory_type, ptr))
            if data.nbytes:
                mem.copy_in(memory_type, ptr, data.ctypes.data, data.nbytes)
            check(
                lib.TRITONSERVER_InferenceRequestAppendInputData(
                    request, encoded, ptr, data.nbytes, mem.triton_code(memory_type), device_id
                )
            )
        for name in outputs:
            check(lib.TRITONSERVER_InferenceRequestAddRequestedOutput(request, name.encode()))
        check(
            lib.TRITONSERVER_InferenceRequestSetReleaseCallback(
                request, cb.request_release_ptr, inf.userp
            )
        )
        check(
            lib.TRITONSERVER_InferenceRequestSetResponseCallback(
                request, cb.allocator, inf.userp, cb.response_ptr, inf.userp
            )
        )
    except BaseException:
        discard(request, inf)
        raise
    return request, inf


def send(handle: int, request: c_void_p, inf: Inference) -> None:
    """Hand a built request to Triton; where Triton refuses it, it is freed (`discard`)."""
    try:
        check(triton_lib().TRITONSERVER_ServerInferAsync(handle, request, None))
    except BaseException:
        discard(request, inf)
        raise


def discard(request: c_void_p, inf: Inference) -> None:
    """Free a request that was built but never sent (Triton holds nothing of it)."""
    if inf.completions is not None:
        inf.completions.done(inf)
    take_error(triton_lib().TRITONSERVER_InferenceRequestDelete(request))
    _free_inputs(inf)


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
    request, inf = build(
        handle, model, inputs, outputs, memory_type, keep_response, datatypes, device, sequence
    )
    send(handle, request, inf)
    return request, inf


def await_done(
    model: str, request: c_void_p, inf: Inference, deadline: float, timeout_s: float
) -> None:
    """Wait for the final response and the release; InferenceTimeout past `deadline`, the
    request then abandoned (Triton may still call back: everything stays alive)."""
    cb = inf.completions
    assert cb is not None, "a request that was never built"
    if not cb.wait(inf, deadline):
        cb.abandon(request.value, inf)
        raise InferenceTimeout(
            "soak", f"inference on {model!r} did not complete within {timeout_s:g} s"
        )


def release(request: c_void_p, inf: Inference) -> None:
    """A complete, released request: read and delete its responses, then free it (once)."""
    cb = inf.completions
    assert cb is not None, "a request that was never built"
    cb.drain(inf)
    cb.done(inf)
    check(triton_lib().TRITONSERVER_InferenceRequestDelete(request))
    _free_inputs(inf)


def finish(
    model: str, request: c_void_p, inf: Inference, deadline: float, timeout_s: float
) -> None:
    """Wait for the final response and the release, then free the request (once)."""
    await_done(model, request, inf, deadline, timeout_s)
    release(request, inf)


def _free_inputs(inf: Inference) -> None:
    for mtype, ptr in inf.input_buffers:
        mem.release(mtype, ptr)
    inf.input_buffers.clear()
