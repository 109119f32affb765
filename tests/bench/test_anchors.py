"""soak.bench.anchors and the traffic comparison rows of the table."""

from __future__ import annotations

from soak.bench.anchors import parse_throughput
from soak.bench.cli import traffic_comparison_rows

OUTPUT = """\
Request concurrency: 4
  Client:
    Request count: 12345
    Throughput: 6170.5 infer/sec
Inferences/Second vs. Client Average Batch Latency
Concurrency: 1, throughput: 2850.25 infer/sec, latency 340 usec
Concurrency: 4, throughput: 6170.5 infer/sec, latency 640 usec
"""


def test_throughput_is_read_per_concurrency_from_the_summary():
    assert parse_throughput(OUTPUT) == {1: 2850.25, 4: 6170.5}
    assert parse_throughput("Failed to obtain stable measurement.\n") == {}


def test_rows_give_the_ratio_against_perf_analyzer_at_the_same_concurrency():
    result = {
        "traffic": {"1": {"inferences_per_s": 1300.0}, "1@4": {"inferences_per_s": 1800.0}},
        "traffic_remote": {
            "http@1": {"inferences_per_s": 900.0},
            "grpc@1": {"inferences_per_s": 800.0},
        },
        "perf_analyzer": {
            "grpc@1": {"inferences_per_s": 2600.0},
            "grpc@2": {"inferences_per_s": None, "returncode": 1},
            "grpc@4": {"inferences_per_s": None, "returncode": 2},
            "http@1": {"inferences_per_s": 1800.0},
        },
    }
    rows = dict(traffic_comparison_rows(result))
    assert rows["traffic N=1 c=1: soak in-process / perf_analyzer grpc"] == (
        "1,300 / 2,600 inferences/s = x0.50 (goal >= 1.5)"
    )
    assert "traffic N=1 c=4: soak in-process / perf_analyzer grpc" not in rows
    assert rows["traffic N=1 c=1: soak on tritonserver over http"] == (
        "900 inferences/s (perf_analyzer 1,800: x0.50)"
    )
    assert rows["perf_analyzer grpc@4"] == "no figure (exit 2)"
    assert rows["traffic N=1 c=1: soak on tritonserver over grpc"] == (
        "800 inferences/s (perf_analyzer 2,600: x0.31)"
    )
