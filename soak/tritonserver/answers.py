"""tritonclient's answers in the shapes soak.triton.server.Server gives: errors as TritonError
with the C API's code names, gRPC's protobuf answers as the C API's JSON (field names kept, zero
fields present, int64 as numbers)."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict
from tritonclient.utils import InferenceServerException

from soak.triton.returns import InferenceTimeout, TritonError

# Triton's error codes as the C API names them (TRITONSERVER_ErrorCodeString).
_GRPC_CODES = {
    "StatusCode.UNKNOWN": "Unknown",
    "StatusCode.INTERNAL": "Internal",
    "StatusCode.NOT_FOUND": "Not found",
    "StatusCode.INVALID_ARGUMENT": "Invalid argument",
    "StatusCode.UNAVAILABLE": "Unavailable",
    "StatusCode.UNIMPLEMENTED": "Unsupported",
    "StatusCode.ALREADY_EXISTS": "Already exists",
}
# HTTP carries only a status; Triton's HTTP frontend maps its codes onto these.
_HTTP_CODES = {
    "400": "Invalid argument",
    "404": "Not found",
    "409": "Already exists",
    "500": "Internal",
    "501": "Unsupported",
    "503": "Unavailable",
}
_TIMEOUT_STATUS = "StatusCode.DEADLINE_EXCEEDED"
# int64 fields of the statistics, metadata and config protos, which protobuf's JSON writes as
# strings; the C API writes them as numbers.
_INT64_KEYS = frozenset(
    {
        "count",
        "ns",
        "last_inference",
        "inference_count",
        "execution_count",
        "batch_size",
        "shape",
        "dims",
        "memory_usage",
        "byte_size",
        "cache_hit_count",
        "cache_miss_count",
        "max_queue_delay_microseconds",
        "default_timeout_microseconds",
        "max_sequence_idle_microseconds",
        "preferred_batch_size",
        "priority_levels",
        "default_priority_level",
    }
)


def triton_error(exc: InferenceServerException) -> TritonError:
    """A tritonclient exception as the C API's TritonError (code name, message)."""
    status = str(exc.status() or "")
    message = exc.message() or str(exc)
    if status == _TIMEOUT_STATUS:
        return InferenceTimeout("soak", message)
    code = _GRPC_CODES.get(status) or _HTTP_CODES.get(status) or (status or "Unknown")
    return TritonError(code, message)


def version_arg(version: int) -> str:
    return "" if version is None or version < 0 else str(version)


def _numbers(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _numbers(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v, key) for v in value]
    if key in _INT64_KEYS and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return value


def proto_json(message: Any) -> dict:
    """A gRPC answer as the C API's JSON: field names kept, zeros present, int64 as numbers."""
    return _numbers(
        MessageToDict(
            message, preserving_proto_field_name=True, including_default_value_fields=True
        )
    )


def index_entries(models: list[dict], ready_only: bool = False) -> list[dict]:
    """The repository index as the C API gives it: [{name, version, state[, reason]}]."""
    index = []
    for model in models:
        entry = {k: model[k] for k in ("name", "version", "state") if k in model}
        if model.get("reason"):
            entry["reason"] = model["reason"]
        index.append(entry)
    if ready_only:
        index = [m for m in index if m.get("state") == "READY"]
    return index
