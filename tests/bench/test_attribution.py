"""soak.bench.attribution: the table `make bench` prints from measured numbers."""

from soak.bench.attribution import CPU_ITERATIONS, CPU_WARMUP, table_rows


def test_rows_show_the_ratio_and_project_the_read_onto_a_whole_cpu_run():
    result = {
        "overhead": {
            "servers": 4,
            "plain_iteration_s": 2.0,
            "attributed_iteration_s": 2.5,
            "ratio": 1.25,
            "capture_bytes_per_iteration": 600 * 1024,
            "read_s_per_iteration": 0.1,
        },
        "analysis": {"sites": 50, "iterations": 250, "seconds": 0.4},
    }
    rows = dict(table_rows(result))
    assert (
        rows["iteration N=4 without / with --attribute"] == "2.00 s / 2.50 s (x1.25, target <= 2)"
    )
    assert rows["memray capture per traced iteration"] == "600 KiB"
    projected = rows[f"capture read, at that rate, of a {CPU_ITERATIONS}-iteration cpu run"]
    assert projected == f"{0.1 * (CPU_ITERATIONS - CPU_WARMUP):.1f} s (target <= 30)"
    assert rows["judging 50 sites of a 250-iteration run"] == "0.400 s"


def test_rows_without_an_attributed_run_still_report_the_judging_time():
    result = {
        "overhead": {"servers": 4},
        "analysis": {"sites": 50, "iterations": 250, "seconds": 1},
    }
    assert [label for label, _ in table_rows(result)] == ["judging 50 sites of a 250-iteration run"]
