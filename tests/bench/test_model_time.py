"""soak.bench.model_time: Triton's time per inference from two model-statistics answers."""

from __future__ import annotations

import pytest

from soak.bench import model_time


def stats(count: int, ns: dict[str, int], name: str = "simple1") -> dict:
    inference = {stage: {"count": count, "ns": ns.get(stage, 0)} for stage in model_time.STAGES}
    inference["success"] = {"count": str(count), "ns": 0}  # gRPC's JSON gives strings
    return {"model_stats": [{"name": name, "version": "1", "inference_stats": inference}]}


def test_per_inference_divides_each_stage_by_the_inferences_in_between():
    before = model_time.snapshot(stats(10, {"compute_infer": 1_000_000}))
    after = model_time.snapshot(
        stats(
            110,
            {
                "queue": 5_000_000,
                "compute_input": 2_000_000,
                "compute_infer": 16_000_000,
                "compute_output": 7_000_000,
            },
        )
    )
    t = model_time.per_inference(before, after)
    assert t is not None and t["inferences"] == 100
    assert t["queue_us"] == 50 and t["compute_input_us"] == 20
    assert t["compute_infer_us"] == 150 and t["compute_output_us"] == 70
    assert t["busy_us"] == 240  # the queue is waiting, not the instance's work
    assert t["busy_ceiling_per_s"] == pytest.approx(1e6 / 240)
    assert model_time.describe(t) == (
        "queue 50, input 20, infer 150, output 70 us; busy 240 us (at most 4,167/s)"
    )


def test_models_and_servers_add_up_and_no_inference_is_no_figure():
    one = stats(5, {"compute_infer": 500})
    two = {
        "model_stats": one["model_stats"]
        + stats(3, {"compute_infer": 300}, "simple2")["model_stats"]
    }
    assert model_time.snapshot(two)["count"] == 8
    assert (
        model_time.add(model_time.snapshot(one), model_time.snapshot(two))["compute_infer"] == 1300
    )
    empty = model_time.snapshot({})
    assert empty["count"] == 0
    assert model_time.per_inference(empty, empty) is None
