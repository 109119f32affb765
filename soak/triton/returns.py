"""What TRITONSERVER calls hand back, copied into Python and deleted once: an error becomes a
`TritonError` with Triton's code name and message, a message its JSON."""

from __future__ import annotations

import ctypes
import json
from ctypes import byref, c_char_p, c_size_t, c_void_p

from soak.errors import ServerError, ServerTimeout
from soak.triton import capi


class TritonError(ServerError):
    """A TRITONSERVER_Error, with Triton's own code name and message."""


class InferenceTimeout(TritonError, ServerTimeout):
    """No final response (or no request release) within the timeout."""


def triton_lib() -> ctypes.CDLL:
    return capi.loaded().lib


def take_error(err: int | None) -> TritonError | None:
    """Copy a returned TRITONSERVER_Error into Python and delete it: every error a C API call
    returns is the caller's (TRITONSERVER_InferenceResponseError's included)."""
    if not err:
        return None
    lib = triton_lib()
    code = (lib.TRITONSERVER_ErrorCodeString(err) or b"?").decode()
    message = (lib.TRITONSERVER_ErrorMessage(err) or b"").decode(errors="replace")
    lib.TRITONSERVER_ErrorDelete(err)
    return TritonError(code, message)


def check(err: int | None) -> None:
    error = take_error(err)
    if error is not None:
        raise error


def message_json(message: c_void_p) -> object:
    lib = triton_lib()
    base, size = c_char_p(), c_size_t()
    try:
        check(lib.TRITONSERVER_MessageSerializeToJson(message, byref(base), byref(size)))
        raw = ctypes.string_at(base, size.value)
    finally:
        lib.TRITONSERVER_MessageDelete(message)
    return json.loads(raw)
