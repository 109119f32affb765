"""soak.bench.anchors and the traffic comparison rows of the table."""

from __future__ import annotations

from soak.bench import model_time
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

TIME = {
    "queue_us": 1.0,
    "compute_input_us": 2.0,
    "compute_infer_us": 3.0,
    "compute_output_us": 4.0,
    "busy_us": 9.0,
    "busy_ceiling_per_s": 1e6 / 9,
}


def test_throughput_is_read_per_concurrency_from_the_summary():
    assert parse_throughput(OUTPUT) == {1: 2850.25, 4: 6170.5}
    assert parse_throughput("Failed to obtain stable measurement.\n") == {}


def test_rows_give_the_ratio_against_perf_analyzer_at_the_same_concurrency():
    result = {
        "traffic": {
            "1": {"inferences_per_s": 1300.0, "triton_us_per_inference": TIME},
            "1@4": {"inferences_per_s": 1800.0},
        },
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
    assert rows["  Triton's time per inference, c=1, soak"] == model_time.describe(TIME)
    assert "  Triton's time per inference, c=1, perf_analyzer" not in rows  # none measured
    assert "traffic N=1 c=4: soak in-process / perf_analyzer grpc" not in rows
    assert rows["traffic N=1 c=1: soak on tritonserver over http"] == (
        "900 inferences/s (perf_analyzer 1,800: x0.50)"
    )
    assert rows["perf_analyzer grpc@4"] == "no figure (exit 2)"
    assert rows["traffic N=1 c=1: soak on tritonserver over grpc"] == (
        "800 inferences/s (perf_analyzer 2,600: x0.31)"
    )


def test_perf_analyzer_anchor_measures_a_tritonserver_and_its_model_time():
    from soak.bench.anchors import perf_analyzer

    result = perf_analyzer(concurrencies=(1,), protocols=("grpc",))
    assert result["triton_version"] == "2.51.0"
    assert result["server_end"] == "stopped cleanly"
    figure = result["grpc@1"]
    assert figure["inferences_per_s"] > 0, figure
    t = figure["triton_us_per_inference"]  # its server's statistics over the measurement
    assert t["inferences"] > 0 and t["compute_infer_us"] > 0 and t["busy_us"] > 0
