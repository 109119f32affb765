"""`make bench`: where an inference's time goes inside Triton, read from its model statistics.

A python-backend model instance runs one request at a time: it takes the inputs, hands them to
its stub and waits, then builds the response (the client's output allocator and response
callback run on the instance's thread then) and releases the request. Once requests queue,
the instance's busy time per inference (input + infer + output) caps what any client gets
from it at 1 / busy, so two clients' busy times bound their throughput ratio. The same
statistics come from the C API in process and from a tritonserver's HTTP endpoint.
"""

from __future__ import annotations

from typing import Any

#: Triton's inference_stats durations, in the order they happen.
STAGES = ("queue", "compute_input", "compute_infer", "compute_output")

#: The stages during which the model instance is busy with a request.
BUSY = ("compute_input", "compute_infer", "compute_output")


def snapshot(statistics: dict[str, Any]) -> dict[str, int]:
    """Inference count and nanoseconds per stage, summed over the models of one
    `model_statistics()` answer (counts may come as strings over gRPC's JSON)."""
    total = dict.fromkeys(("count", *STAGES), 0)
    for model in statistics.get("model_stats", []):
        stats = model.get("inference_stats", {})
        total["count"] += int(stats.get("success", {}).get("count", 0))
        for stage in STAGES:
            total[stage] += int(stats.get(stage, {}).get("ns", 0))
    return total


def add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """Two snapshots together (several servers)."""
    return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}


def per_inference(before: dict[str, int], after: dict[str, int]) -> dict[str, float] | None:
    """Microseconds per inference of each stage between two snapshots, with the instance's
    busy time and the throughput it caps; None when no inference happened in between."""
    count = after["count"] - before["count"]
    if count <= 0:
        return None
    out = {f"{s}_us": (after[s] - before[s]) / count / 1e3 for s in STAGES}
    busy = sum(out[f"{s}_us"] for s in BUSY)
    out["busy_us"] = busy
    out["busy_ceiling_per_s"] = 1e6 / busy if busy > 0 else 0.0
    out["inferences"] = count
    return out


def describe(t: dict[str, float]) -> str:
    """One line: the stages in microseconds, the busy time and its ceiling."""
    return (
        f"queue {t['queue_us']:.0f}, input {t['compute_input_us']:.0f}, "
        f"infer {t['compute_infer_us']:.0f}, output {t['compute_output_us']:.0f} us; "
        f"busy {t['busy_us']:.0f} us (at most {t['busy_ceiling_per_s']:,.0f}/s)"
    )
