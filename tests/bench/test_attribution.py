"""soak.bench.attribution: the table `make bench` prints from measured numbers."""

from soak.bench.attribution import table_rows


def test_rows_show_the_ratio_the_capture_and_the_read_of_the_traced_iterations():
    result = {
        "overhead": {
            "servers": 4,
            "iterations": 8,
            "warmup": 1,
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
    read = rows["capture read into sites, 7 traced iterations"]
    assert read.startswith("0.7 s (0.100 s each; ")
    assert rows["judging 50 sites of a 250-iteration run"] == "0.400 s"


def test_rows_without_an_attributed_run_still_report_the_judging_time():
    result = {
        "overhead": {"servers": 4},
        "analysis": {"sites": 50, "iterations": 250, "seconds": 1},
    }
    assert [label for label, _ in table_rows(result)] == ["judging 50 sites of a 250-iteration run"]
