"""The store builds its own quiet-point rows from the samplers' and the worker's plain dicts."""

from __future__ import annotations

import time
from dataclasses import asdict

from soak.runner.protocol import Quiet
from soak.store import Store, sample_row


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
