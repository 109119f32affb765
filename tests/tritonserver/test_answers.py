"""tritonclient's errors and gRPC answers in the C API's shapes (no server needed)."""

from __future__ import annotations

from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from soak.triton import InferenceTimeout, TritonError
from soak.tritonserver.answers import proto_json, triton_error, version_arg


def test_errors_carry_the_c_api_code_names():
    grpc = triton_error(InferenceServerException("no model", status="StatusCode.NOT_FOUND"))
    http = triton_error(InferenceServerException("bad input", status="400"))
    assert (type(grpc), grpc.code, grpc.message) == (TritonError, "Not found", "no model")
    assert (http.code, http.message) == ("Invalid argument", "bad input")
    late = triton_error(InferenceServerException("late", status="StatusCode.DEADLINE_EXCEEDED"))
    assert isinstance(late, InferenceTimeout)


def test_grpc_statistics_keep_zero_fields_and_int64_numbers():
    answer = service_pb2.ModelStatisticsResponse()
    stats = answer.model_stats.add(name="m", version="1", inference_count=5)
    stats.inference_stats.success.count = 5
    stats.inference_stats.fail.SetInParent()  # the server sends it, all zero
    shaped = proto_json(answer)["model_stats"][0]
    assert shaped["name"] == "m" and shaped["version"] == "1"  # strings stay strings
    assert shaped["inference_count"] == 5
    assert shaped["inference_stats"]["success"]["count"] == 5
    assert shaped["inference_stats"]["fail"] == {"count": 0, "ns": 0}


def test_latest_version_is_the_empty_string():
    assert (version_arg(-1), version_arg(3)) == ("", "3")
