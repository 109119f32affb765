"""Triton datatypes as numpy arrays: which numpy dtype carries each, and the BYTES wire format.

BYTES tensors travel as one buffer of elements, each a 4-byte little-endian length followed by
its bytes; numpy holds them as object arrays of `bytes`. numpy has no bfloat16, so BF16 travels
as its raw 16-bit patterns in a uint16 array and must be named explicitly. Pure: no C API here.
"""

from __future__ import annotations

import struct

import numpy as np

from soak.errors import SoakError

#: The numpy dtype that carries each Triton datatype (BF16: raw bits, uint16).
NUMPY_OF: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
    "BF16": np.dtype(np.uint16),
}
_DATATYPE_OF = {dtype: name for name, dtype in NUMPY_OF.items() if name not in ("BF16",)}


class DatatypeError(SoakError):
    """An array or a datatype name soak cannot send to or read from Triton."""


def datatype_of(array: np.ndarray) -> str:
    """The Triton datatype an array is sent as; uint16 means UINT16 (BF16 must be named)."""
    if array.dtype.kind in ("S", "U"):
        return "BYTES"
    name = _DATATYPE_OF.get(array.dtype)
    if name is None:
        raise DatatypeError(f"numpy dtype {array.dtype} has no Triton datatype")
    return name


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype for a Triton datatype name, or a DatatypeError naming it."""
    try:
        return NUMPY_OF[datatype]
    except KeyError:
        raise DatatypeError(
            f"Triton datatype {datatype!r} is not supported; soak handles " + ", ".join(NUMPY_OF)
        ) from None


def _as_bytes(item: object) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, np.bytes_ | np.str_):
        return _as_bytes(item.item())
    raise DatatypeError(f"a BYTES element must be bytes or str, got {type(item).__name__}")


def serialize_bytes(array: np.ndarray) -> bytes:
    """Triton's BYTES wire format: per element (row-major) a uint32 LE length, then the bytes."""
    parts = []
    for item in np.asarray(array, dtype=object).ravel(order="C"):
        data = _as_bytes(item)
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes(raw: bytes, shape: list[int] | tuple[int, ...]) -> np.ndarray:
    """The inverse of `serialize_bytes`; a buffer not holding exactly the shape is refused."""
    count = int(np.prod(shape)) if len(shape) else 1
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(raw):
            raise DatatypeError(f"BYTES buffer of {len(raw)} bytes ends inside element {i}")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise DatatypeError(f"BYTES element {i} claims {length} bytes past the buffer's end")
        out[i] = bytes(raw[offset : offset + length])
        offset += length
    if offset != len(raw):
        raise DatatypeError(
            f"BYTES buffer holds {len(raw) - offset} bytes after its {count} elements"
        )
    return out.reshape(shape)


def to_wire(array: np.ndarray, datatype: str) -> bytes | np.ndarray:
    """What goes into Triton's input buffer: serialized BYTES, else a C-contiguous array."""
    if datatype == "BYTES":
        return serialize_bytes(array)
    want = numpy_dtype(datatype)
    if array.dtype != want:
        raise DatatypeError(
            f"a {datatype} tensor must be carried as numpy {want}, not {array.dtype}"
        )
    return np.ascontiguousarray(array)
