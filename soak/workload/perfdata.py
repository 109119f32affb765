"""Read perf_analyzer's `--input-data` JSON files: the inputs of each request, expected outputs.

The format (perf_analyzer's docs, "Real Input Data"): `{"data": [entry, ...],
"validation_data": [entry, ...]}`; an entry maps a tensor name to a plain list (flat or
nested), to `{"content": list, "shape": [dims]}`, or to `{"b64": text}` (optionally with
"shape"): the tensor's raw bytes as they travel to Triton. Data is per batch-1 request, as
perf_analyzer has it; a batching model gets it repeated along the batch dimension.
Structure is checked when the profile is read; datatypes only once the model's metadata is known.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soak.errors import ProfileError
from soak.triton.tensors import DatatypeError, deserialize_bytes, numpy_dtype


@dataclass(frozen=True)
class TensorData:
    """One tensor of one entry: values (`content`) or raw bytes (`b64`), maybe with a shape."""

    where: str  # `data[0].INPUT0`, for errors
    content: list | None = None
    raw: bytes | None = None
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class DataFile:
    path: Path
    data: tuple[dict[str, TensorData], ...]
    validation: tuple[dict[str, TensorData], ...]  # empty, or one per data entry


def load(path: Path) -> DataFile:
    """Read and check the structure of a data file; errors name the file and the JSON location."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileError(f"{path}: not a JSON file: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list) or not doc["data"]:
        raise ProfileError(f'{path}: needs a non-empty "data" list (perf_analyzer --input-data)')
    unknown = sorted(set(doc) - {"data", "validation_data"})
    if unknown:
        raise ProfileError(f"{path}: unknown key {unknown[0]!r}; allowed: data, validation_data")
    data = tuple(_entry(path, f"data[{i}]", e) for i, e in enumerate(doc["data"]))
    validation: tuple[dict[str, TensorData], ...] = ()
    if "validation_data" in doc:
        raw = doc["validation_data"]
        if not isinstance(raw, list) or len(raw) != len(data):
            raise ProfileError(
                f'{path}: "validation_data" must be a list with one entry per "data" entry '
                f"({len(data)})"
            )
        validation = tuple(_entry(path, f"validation_data[{i}]", e) for i, e in enumerate(raw))
    return DataFile(Path(path), data, validation)


def _entry(path: Path, where: str, entry: object) -> dict[str, TensorData]:
    if isinstance(entry, list):
        raise ProfileError(
            f"{path}: {where} is a list of steps (a sequence stream); soak sends no sequences"
        )
    if not isinstance(entry, dict):
        raise ProfileError(f"{path}: {where} must map tensor names to data")
    return {name: _tensor(path, f"{where}.{name}", value) for name, value in entry.items()}


def _tensor(path: Path, where: str, value: object) -> TensorData:
    if isinstance(value, list):
        return TensorData(where, content=value)
    if not isinstance(value, dict):
        raise ProfileError(f'{path}: {where} must be a list, {{"content": ...}} or {{"b64": ...}}')
    unknown = sorted(set(value) - {"content", "shape", "b64"})
    if unknown:
        raise ProfileError(
            f"{path}: {where}: unknown key {unknown[0]!r}; allowed: content, shape, b64"
        )
    shape = value.get("shape")
    if shape is not None and (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise ProfileError(f"{path}: {where}.shape must be a list of non-negative integers")
    shape = tuple(shape) if shape is not None else None
    if ("content" in value) == ("b64" in value):
        raise ProfileError(f'{path}: {where} needs exactly one of "content" and "b64"')
    if "b64" in value:
        if not isinstance(value["b64"], str):
            raise ProfileError(f"{path}: {where}.b64 must be a string")
        try:
            raw = base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProfileError(f"{path}: {where}.b64 is not base64: {exc}") from exc
        return TensorData(where, raw=raw, shape=shape)
    if not isinstance(value["content"], list):
        raise ProfileError(f"{path}: {where}.content must be a list")
    return TensorData(where, content=value["content"], shape=shape)


def to_array(tensor: TensorData, datatype: str, shape: tuple[int, ...] | None) -> np.ndarray:
    """The tensor as numpy in its datatype's carrier; `shape` (no -1) is the model's, when known.

    Raises DatatypeError naming the tensor's place in the file on values that do not fit.
    """
    dtype = numpy_dtype(datatype)
    want = tensor.shape or shape
    try:
        if tensor.raw is not None:
            return _from_raw(tensor.raw, datatype, dtype, want)
        if datatype == "BYTES":
            flat = [_bytes_of(v) for v in _flatten(tensor.content)]
            array = np.empty(len(flat), dtype=object)
            array[:] = flat
            nested = np.array(tensor.content, dtype=object).shape
            return array.reshape(want if want is not None else nested)
        array = np.array(tensor.content)
        if array.dtype == object or array.dtype.kind in ("U", "S"):
            raise DatatypeError(f"values must be numbers for {datatype}")
        if datatype == "BF16":  # from numbers: round to nearest bfloat16, keep the raw bits
            bits = np.asarray(array, np.float32).view(np.uint32)
            array = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        else:
            cast = array.astype(dtype)
            if dtype.kind in "iub" and not np.array_equal(cast, array):
                raise DatatypeError(f"values do not fit {datatype}")
            array = cast
        return array.reshape(want) if want is not None else array
    except DatatypeError as exc:
        raise DatatypeError(f"{tensor.where}: {exc}") from None
    except ValueError as exc:
        raise DatatypeError(f"{tensor.where}: {exc}") from None


def _from_raw(raw: bytes, datatype: str, dtype: np.dtype, shape) -> np.ndarray:
    if datatype == "BYTES":
        count = int(np.prod(shape)) if shape is not None else None
        try:  # Triton's wire format (length-prefixed elements), as perf_analyzer sends it
            return deserialize_bytes(raw, shape if shape is not None else [_count(raw)])
        except DatatypeError:
            if count not in (None, 1):
                raise
        one = np.empty(1, dtype=object)  # else: the bytes are one element (an image, a text)
        one[0] = raw
        return one.reshape(shape) if shape is not None else one
    if len(raw) % dtype.itemsize:
        raise DatatypeError(f"{len(raw)} bytes is not a whole number of {datatype} values")
    array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
    return array.reshape(shape) if shape is not None else array


def _count(raw: bytes) -> int:
    """How many length-prefixed elements a BYTES buffer holds (raises if it holds none cleanly)."""
    offset = count = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise DatatypeError("not length-prefixed")
        offset += 4 + int.from_bytes(raw[offset : offset + 4], "little")
        count += 1
    if offset != len(raw) or count == 0:
        raise DatatypeError("not length-prefixed")
    return count


def _flatten(values: object) -> list:
    if isinstance(values, list):
        return [v for item in values for v in _flatten(item)]
    return [values]


def _bytes_of(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode()
    raise DatatypeError(f"BYTES content must be strings, got {value!r}")
