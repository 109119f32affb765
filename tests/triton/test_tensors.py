"""Every Triton datatype through a real python-backend model, BYTES wire format, metadata."""

from __future__ import annotations

import numpy as np
import pytest

from soak.triton import Server, ServerOptions, TritonError
from soak.triton.tensors import DatatypeError, deserialize_bytes, serialize_bytes

# Triton datatype -> config.pbtxt type; BF16 is forwarded through DLPack (no numpy bfloat16).
CONFIG_TYPES = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
    "BF16": "TYPE_BF16",
}

ECHO_PY = """\
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            outputs = []
            for name in {names!r}:
                tensor = pb_utils.get_input_tensor_by_name(request, "IN_" + name)
                if tensor is None:
                    continue
                outputs.append(pb_utils.Tensor.from_dlpack("OUT_" + name, tensor.to_dlpack())
                               if name == "BF16" else
                               pb_utils.Tensor("OUT_" + name, tensor.as_numpy()))
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
"""


def write_echo(repo, name="echo_all"):
    """One model echoing IN_<T> to OUT_<T> for every datatype, all inputs optional, shape [2,3]."""
    model = repo / name
    (model / "1").mkdir(parents=True)
    tensors = lambda prefix, extra="": ", ".join(  # noqa: E731
        f'{{ name: "{prefix}_{t}" data_type: {c} dims: [ 2, 3 ] {extra}}}'
        for t, c in CONFIG_TYPES.items()
    )
    (model / "config.pbtxt").write_text(
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n'
        f"input [ {tensors('IN', 'optional: true ')} ]\noutput [ {tensors('OUT')} ]\n"
        "instance_group [ { kind: KIND_CPU count: 1 } ]\n"
    )
    (model / "1" / "model.py").write_text(ECHO_PY.format(names=list(CONFIG_TYPES)))
    return repo


def sample(datatype: str, rng: np.random.Generator) -> np.ndarray:
    if datatype == "BOOL":
        return rng.integers(0, 2, (2, 3)).astype(bool)
    if datatype == "BYTES":
        return np.array([b"", b"a", "\u00e9t\u00e9".encode(), b"x" * 300, b"\0\1", b"z"], object)[
            [0, 1, 2, 3, 4, 5]
        ].reshape(2, 3)
    if datatype == "BF16":  # raw bits of 1.0, -2.0, 0.5, ...
        return np.array([0x3F80, 0xC000, 0x3F00, 0, 0x4040, 0x7F7F], np.uint16).reshape(2, 3)
    dtype = np.dtype(datatype.replace("FP", "float").replace("UINT", "uint").replace("INT", "int"))
    if dtype.kind == "f":
        return rng.standard_normal((2, 3)).astype(dtype)
    info = np.iinfo(dtype)
    return np.array([info.min, info.max, 0, 1, info.max - 1, info.min + 1], dtype).reshape(2, 3)


@pytest.fixture(scope="module")
def echo_server(runtime, tmp_path_factory):
    repo = write_echo(tmp_path_factory.mktemp("echo"))
    server = Server(ServerOptions((repo,), runtime.backends_dir, server_id="soak-tensors"))
    server.load_model("echo_all")
    yield server
    server.unload_model("echo_all")
    server.close()


@pytest.mark.parametrize("datatype", list(CONFIG_TYPES))
def test_each_datatype_round_trips(echo_server, datatype):
    array = sample(datatype, np.random.default_rng(7))
    result = echo_server.infer(
        "echo_all",
        {f"IN_{datatype}": array},
        [f"OUT_{datatype}"],
        datatypes={f"IN_{datatype}": datatype},
    )
    out = result[f"OUT_{datatype}"]
    assert out.datatype == datatype
    assert out.array.shape == (2, 3)
    assert out.array.dtype == array.dtype
    assert out.array.tolist() == array.tolist()


def test_metadata_and_config_describe_the_model(echo_server):
    meta = echo_server.model_metadata("echo_all")
    assert {t["name"]: t["datatype"] for t in meta["inputs"]}["IN_FP16"] == "FP16"
    assert {t["name"]: t["shape"] for t in meta["outputs"]}["OUT_BYTES"] == [2, 3]
    config = echo_server.model_config("echo_all")
    assert config["max_batch_size"] == 0
    assert all(i["optional"] for i in config["input"])


def test_metadata_of_an_unknown_model_is_a_triton_error(echo_server):
    with pytest.raises(TritonError, match="no_such_model"):
        echo_server.model_metadata("no_such_model")


def test_bytes_wire_format_is_length_prefixed():
    array = np.array([[b"ab", b""], [b"xyz", "\u00e9"]], dtype=object)
    raw = serialize_bytes(array)
    assert raw == b"\2\0\0\0ab" + b"\0\0\0\0" + b"\3\0\0\0xyz" + b"\2\0\0\0\xc3\xa9"
    back = deserialize_bytes(raw, [2, 2])
    assert back.tolist() == [[b"ab", b""], [b"xyz", "\u00e9".encode()]]
    with pytest.raises(DatatypeError, match="after its 3 elements"):
        deserialize_bytes(raw, [3])
    with pytest.raises(DatatypeError, match="element 0"):
        deserialize_bytes(b"\5\0\0\0ab", [1])


def test_an_array_triton_cannot_carry_is_refused_by_name(echo_server):
    with pytest.raises(TritonError, match="IN_FP32.*complex128"):
        echo_server.infer("echo_all", {"IN_FP32": np.zeros((2, 3), complex)}, ["OUT_FP32"])


@pytest.mark.parametrize("memory", ["pinned", "gpu"])
@pytest.mark.parametrize("datatype", ["BYTES", "FP16", "BF16", "BOOL", "INT64"])
def test_datatypes_round_trip_in_pinned_and_gpu_memory(gpu, echo_server, datatype, memory):
    from soak.triton import MemoryType

    array = sample(datatype, np.random.default_rng(3))
    out = echo_server.infer(
        "echo_all",
        {f"IN_{datatype}": array},
        [f"OUT_{datatype}"],
        memory_type=MemoryType(memory),
        datatypes={f"IN_{datatype}": datatype},
    )[f"OUT_{datatype}"]
    assert out.memory_type is MemoryType(memory)
    assert out.array.tolist() == array.tolist()
