"""perf_analyzer --input-data files: structure checked on reading, values on conversion."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from soak.errors import ProfileError
from soak.triton.tensors import DatatypeError, serialize_bytes
from soak.workload import perfdata


def write(tmp_path, doc) -> perfdata.DataFile:
    path = tmp_path / "data.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return perfdata.load(path)


@pytest.mark.parametrize(
    "doc, expect",
    [
        ("{not json", "not a JSON file"),
        ({"data": []}, 'non-empty "data" list'),
        ({"data": [{}], "extra": 1}, "unknown key 'extra'"),
        ({"data": [[{"A": [1]}]]}, "data[0] is a list of steps"),
        ({"data": [{"A": 3}]}, "data[0].A must be a list"),
        ({"data": [{"A": {"content": [1], "b64": "AA=="}}]}, "exactly one of"),
        ({"data": [{"A": {"b64": "%%%"}}]}, "data[0].A.b64 is not base64"),
        ({"data": [{"A": {"content": [1], "shape": [-1]}}]}, "data[0].A.shape"),
        ({"data": [{"A": {"contents": [1]}}]}, "unknown key 'contents'"),
        ({"data": [{"A": [1]}], "validation_data": []}, "one entry per"),
    ],
)
def test_bad_structure_names_the_file_and_the_place(tmp_path, doc, expect):
    with pytest.raises(ProfileError) as err:
        write(tmp_path, doc)
    assert str(tmp_path / "data.json") in str(err.value)
    assert expect in str(err.value)


def test_values_convert_to_each_datatype(tmp_path):
    raw = serialize_bytes(np.array([b"ab", b"c"], dtype=object))
    data = write(
        tmp_path,
        {
            "data": [
                {
                    "I": {"content": [1, 2, 3, 4], "shape": [2, 2]},
                    "F": [[0.5, 1.5]],
                    "S": {"b64": base64.b64encode(raw).decode()},
                    "ONE": {"b64": base64.b64encode(b"\xff\xd8 an image").decode()},
                    "T": ["x", "yz"],
                    "B": {"b64": base64.b64encode(np.array([1, -1], "<i8").tobytes()).decode()},
                }
            ]
        },
    )
    entry = data.data[0]
    assert perfdata.to_array(entry["I"], "UINT8", None).tolist() == [[1, 2], [3, 4]]
    assert perfdata.to_array(entry["F"], "FP16", None).dtype == np.float16
    assert perfdata.to_array(entry["F"], "FP32", (1, 2)).shape == (1, 2)
    assert perfdata.to_array(entry["S"], "BYTES", None).tolist() == [b"ab", b"c"]
    assert perfdata.to_array(entry["ONE"], "BYTES", (1,)).tolist() == [b"\xff\xd8 an image"]
    assert perfdata.to_array(entry["T"], "BYTES", None).tolist() == [b"x", b"yz"]
    assert perfdata.to_array(entry["B"], "INT64", (2,)).tolist() == [1, -1]
    assert perfdata.to_array(entry["F"], "BF16", None).tolist() == [[0x3F00, 0x3FC0]]
    with pytest.raises(DatatypeError, match=r"data\[0\].I: values do not fit INT8"):
        perfdata.to_array(perfdata.TensorData("data[0].I", content=[300]), "INT8", None)
    with pytest.raises(DatatypeError, match=r"data\[0\].B: .*3 bytes"):
        perfdata.to_array(perfdata.TensorData("data[0].B", raw=b"abc"), "INT32", None)
