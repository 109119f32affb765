"""soak.store.writer: the store builds its own quiet-point rows from the samplers' and the worker's
plain dicts; a run exported from one database imports into another."""

from __future__ import annotations

import time
from dataclasses import asdict

import pytest

from soak.runner.protocol import Quiet
from soak.runner.tritonlog import log_events
from soak.store import Store, event, export_run, sample_row
from soak.triton.facts import LogLine


def test_a_quiet_point_lands_in_every_table(tmp_path):
    store = Store(tmp_path / "soak.db")
    run_id = store.create_run({"profile": "t"})
    quiet = Quiet(
        iteration=2,
        wall_s=1.5,
        server_lifecycles=2,
        model_loads=4,
        inferences=40,
        phase_sum_s={"load": 0.4},
        phase_max_s={"load": 0.3},
        failures=[{"message": "x", "instance": 0, "phase": "infer"}],
        triton_version="2.51.0",
        heap={"tracemalloc_current_bytes": 7, "gc_objects": 5, "growth": [["dict", 10, 3]]},
    )
    device = {"device": 0, "name": "H200", "used_bytes": 100, "total_bytes": 1000}
    gpu = {"devices": [{**device, "process_bytes": 10}], "process_bytes": 10}
    gpu["device_used_bytes"] = 100
    process = {"rss_bytes": 1 << 20, "fds": 9}
    row = sample_row("quiet", 2, None, time.time() - 5, process, quiet.heap, gpu)
    store.write_quiet_point(run_id, asdict(quiet), [row], [])

    (it,) = store.db["iterations"].rows
    assert (it["iteration"], it["wall_s"], it["model_loads"], it["failures"]) == (2, 1.5, 4, 1)
    assert (it["load_sum_s"], it["load_max_s"]) == (0.4, 0.3)
    (sample,) = store.db["samples"].rows
    assert (sample["rss_bytes"], sample["tracemalloc_bytes"], sample["gc_objects"]) == (
        1 << 20,
        7,
        5,
    )
    assert (sample["gpu_process_bytes"], sample["gpu_used_bytes"]) == (10, 100)
    assert 4 < sample["elapsed_s"] < 60
    (device,) = store.db["gpu_samples"].rows
    assert device == {
        "sample_id": sample["id"],
        "device": 0,
        "name": "H200",
        "used_bytes": 100,
        "total_bytes": 1000,
        "process_bytes": 10,
    }
    (heap,) = store.db["heap_types"].rows
    assert (heap["type_name"], heap["count"], heap["increase"]) == ("dict", 10, 3)
    store.close()


def test_export_import_moves_every_row_under_new_ids(tmp_path):
    src = Store(tmp_path / "node.db")
    run = src.create_run({"profile": "p", "status": "running"})
    gpu = [{"device": 0, "name": "H100", "used_bytes": 5, "total_bytes": 9, "process_bytes": 1}]
    src.write_iteration(
        run,
        {"iteration": 0, "wall_s": 1.0},
        [{"iteration": 0, "kind": "quiet", "t": 1.0, "rss_bytes": 10, "gpu_devices": gpu}],
        [{"iteration": 0, "type_name": "dict", "count": 3, "increase": 1}],
        [event("failure", "boom", 0)],
    )
    dst = Store(tmp_path / "results.db")
    dst.create_run({"profile": "other", "status": "passed"})  # ids must not collide
    new = dst.import_run(export_run(src.db, run), {"ray_node_id": "n1", "host": "h1"})
    assert new == 2
    moved = export_run(dst.db, new)
    assert moved["runs"][0]["ray_node_id"] == "n1" and moved["runs"][0]["host"] == "h1"
    assert [s["rss_bytes"] for s in moved["samples"]] == [10]
    assert moved["gpu_samples"][0]["sample_id"] == moved["samples"][0]["id"]
    assert [e["message"] for e in moved["events"]] == ["boom"]
    assert len(moved["heap_types"]) == 1 and len(moved["iterations"]) == 1


def test_a_message_repeated_over_50_iterations_is_stored_once(tmp_path):
    store = Store(tmp_path / "r.db")
    run = store.create_run({"profile": "p", "status": "running"})
    text = "E Triton raised: " + "x" * 4000
    for i in range(50):
        store.write_iteration(
            run, {"iteration": i, "wall_s": 1.0}, [], [], [event("triton_error", text, i)]
        )
    store.add_events(run, [event("triton_error", text, 50), event("crash", "other", 50)])
    assert store.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 2
    rows = list(store.db.query("SELECT iteration, message FROM events WHERE kind = 'triton_error'"))
    assert [r["iteration"] for r in rows] == list(range(51))
    assert all(r["message"] == text for r in rows)
    store.close()
    again = Store(tmp_path / "r.db")  # a second writer finds the stored text, adds none
    again.add_events(run, [event("triton_error", text, 51)])
    assert again.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 2
    again.close()


def test_triton_log_lines_share_one_text_whatever_their_glog_prefix(tmp_path):
    store = Store(tmp_path / "r.db")
    run = store.create_run({"profile": "p", "status": "running"})
    lines = [
        f"W1202 17:4{i}:00.12345{i}  {100 + i} pinned_memory_manager.cc:273] Pinned pool off"
        for i in range(3)
    ]
    store.add_events(run, [event("triton_warning", text, i) for i, text in enumerate(lines)])
    store.add_events(run, [event("failure", "W1202 not a glog line", 3)])
    texts = [r["text"] for r in store.db.query("SELECT text FROM messages ORDER BY id")]
    assert texts == ["Pinned pool off", "W1202 not a glog line"]
    got = [r["message"] for r in store.db.query("SELECT message FROM events ORDER BY id")]
    assert got == [*lines, "W1202 not a glog line"]
    store.close()


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_a_triton_log_line_is_stored_compactly_and_reads_back_exactly(tmp_path, monkeypatch, zone):
    """The glog prefix is rebuilt from the row's time (issue 21: it was ~45 of ~100 bytes a
    row), in whatever zone glog wrote it; only the level and thread are stored."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        clock = time.strftime("%m%d %H:%M:%S", time.localtime(time.time() - 3600))
        lines = [
            LogLine("triton_warning", f"W{clock}.{k:06d} {pad}{thread} server.cc:241] Pool off")
            for k, pad, thread in ((0, "", 29363), (999999, "  ", 812), (120, "", 29364))
        ]
        rows = [r for line in lines for r in log_events([line], 4, ceiling=20)]
        store = Store(tmp_path / "r.db")
        run = store.create_run({"profile": "p", "status": "running"})
        store.add_events(run, rows)
        stored = list(store.db.query("SELECT message_prefix, log_head, kind FROM event_rows"))
        assert [(r["message_prefix"], r["kind"]) for r in stored] == [(None, None)] * 3
        assert [r["log_head"] for r in stored] == ["W 29363", "W   812", "W 29364"]
        texts = [r["text"] for r in store.db.query("SELECT text FROM messages")]
        assert texts == ["server.cc:241] Pool off"]
        got = [r["message"] for r in store.db.query("SELECT message FROM events ORDER BY id")]
        assert got == [line.text for line in lines]
        kinds = store.db.execute("SELECT DISTINCT kind FROM events").fetchall()
        assert kinds == [("triton_warning",)]
        store.close()
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_log_line_whose_time_does_not_rebuild_keeps_its_prefix_whole(tmp_path):
    line = "E0101 00:00:00.000001 7 server.cc:1] New year"  # t: now, not that clock
    store = Store(tmp_path / "r.db")
    run = store.create_run({"profile": "p", "status": "running"})
    store.add_events(run, [event("triton_error", line, 1)])
    ((prefix, head),) = store.db.execute("SELECT message_prefix, log_head FROM event_rows")
    assert (prefix, head) == ("E0101 00:00:00.000001 7 server.cc:1] ", None)
    assert [r["message"] for r in store.db.query("SELECT message FROM events")] == [line]
    store.close()


def test_the_stored_kind_of_a_log_level_is_the_one_triton_lines_get():
    from soak.store.schema import LOG_LEVEL_KINDS
    from soak.triton.facts import EVENT_KINDS

    assert LOG_LEVEL_KINDS == EVENT_KINDS
