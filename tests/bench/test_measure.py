"""soak.bench: the `make bench` parts cheap enough for the suite; they produce real numbers."""

from __future__ import annotations

from soak.bench import measure as bench
from soak.bench.cli import print_table


def test_sampler_bench_measures_both_tree_sizes():
    result = bench.sampler(samples=20)
    for key in ("children_0", "children_8"):
        assert result[key]["samples"] == 20
        assert 0 < result[key]["median_ms"] <= result[key]["p95_ms"]
    assert isinstance(result["supervisor_rss_growth_over_1000_samples_bytes"], int)


def test_store_bench_writes_iterations():
    result = bench.store(iterations=30)
    assert result["iterations"] == 30 and result["iterations_per_s"] > 0


def test_table_prints_every_section(capsys):
    result = {
        "machine": {"summary": "test machine"},
        "lifecycle": {"4": {"median_s": 1.5, "p95_s": 2.0, "phase_median_s": {"load": 0.5}}},
        "sampler": {
            "children_0": {"median_ms": 0.2, "p95_ms": 0.3},
            "supervisor_rss_growth_over_1000_samples_bytes": 0,
        },
        "store": {"iterations_per_s": 100.0},
        "analysis": {
            "run_analysis_s": {"1000": 0.05},
            "power": {
                "iterations_needed_19_of_20": 6,
                "threshold_per_iteration_bytes": 65536,
                "noise": "n",
                "false_alarm_rates": {"6": 0.0},
                "false_alarm_series": 100,
            },
        },
        "footprint": {
            "supervisor_rss_start_bytes": 2**20,
            "supervisor_rss_after_bytes": 2**21,
            "iterations": 10,
            "status": "passed",
        },
    }
    print_table(result)
    out = capsys.readouterr().out
    assert "iteration N=4 (median / p95)" in out and "1.50 s / 2.00 s" in out
    assert "64.00 KiB/iteration" in out and "0%" in out


def test_traffic_bench_measures_throughput_and_python_share():
    result = bench.lifecycle_child([1, 2], 2, "traffic")  # a child: it patches the binding
    for n in ("1", "2"):
        assert result[n]["failures"] == 0
        assert result[n]["inferences"] == 2 * int(n) * 2 * bench.TRAFFIC_PER_MODEL
        assert result[n]["inferences_per_s"] > 0
    assert 0 < result["1"]["soak_python_share"] < 1
    assert "soak_python_share" not in result["2"]
    assert result["1@4"]["failures"] == 0  # requests in flight, every response checked
    assert result["1@4"]["inferences"] == result["1"]["inferences"]
    for key in ("1", "1@4", "2"):  # Triton's own statistics count the timed inferences
        t = result[key]["triton_us_per_inference"]
        assert t["inferences"] == result[key]["inferences"]
        assert t["compute_infer_us"] > 0 and t["busy_us"] > t["compute_infer_us"]
    assert "2@4" not in result


def test_traffic_remote_bench_drives_a_tritonserver_over_each_protocol():
    result = bench.lifecycle_child([1], 1, "traffic-remote")
    assert set(result) == {"grpc@1", "http@1", "grpc@4", "http@4"}
    for r in result.values():
        assert r["failures"] == 0  # every response validated
        assert r["inferences"] == 2 * bench.TRAFFIC_PER_MODEL  # one burst, two models
        assert r["inferences_per_s"] > 0
        assert r["process_cpu_us_per_inference"] > 0


def test_lifecycle_remote_bench_times_servers_iterations_of_tritonserver_processes():
    result = bench.lifecycle_child([2], 1, "lifecycle-remote")
    assert set(result) == {"2"}
    assert result["2"]["failures"] == 0
    assert result["2"]["median_s"] > 0
    assert "server_new" in result["2"]["phase_median_s"] or result["2"]["phase_median_s"]
