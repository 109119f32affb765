"""The inputs of one burst on soak's add/sub models and the check of every response: drawn
once per burst, in the order one request at a time drew them (a, then b, per request), the
expected sums and differences computed with them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from soak.target.interface import MemoryType
from soak.workload.repos import ERROR_BEHAVIOURS, FAIL_MARK, Behaviour

_DTYPES = {"int32": np.int32, "fp32": np.float32}
OUTPUTS = ["OUTPUT0", "OUTPUT1"]


@dataclass(frozen=True)
class Burst:
    a: np.ndarray
    b: np.ndarray
    must_fail: np.ndarray  # per request: the behaviour must fail it
    sums: np.ndarray
    diffs: np.ndarray

    def inputs(self) -> Iterator[dict[str, np.ndarray]]:
        return ({"INPUT0": self.a[i], "INPUT1": self.b[i]} for i in range(len(self.a)))


def draw(
    rng: np.random.Generator,
    fail_rng: np.random.Generator,
    count: int,
    datatype: str,
    behaviour: Behaviour,
    error_fraction: float,
) -> Burst:
    """`count` requests' inputs; with an error behaviour, `error_fraction` of them marked to
    fail (drawn from `fail_rng`, so a correct model sees the same inputs whatever the fraction)."""
    drawn = rng.integers(-1000, 1000, size=(count, 2, 1, 16)).astype(_DTYPES[datatype])
    a, b = drawn[:, 0], drawn[:, 1]
    if behaviour in ERROR_BEHAVIOURS:
        must_fail = fail_rng.random(count) < error_fraction
        a[must_fail, 0, 0] = FAIL_MARK
    else:
        must_fail = np.zeros(count, bool)
    return Burst(a, b, must_fail, a + b, a - b)


def validate(
    result: dict, sums: np.ndarray, diffs: np.ndarray, memory_type: MemoryType
) -> list[str]:
    """What is wrong with one response: a missing output, the wrong memory, wrong values."""
    problems = []
    for name, expected in (("OUTPUT0", sums), ("OUTPUT1", diffs)):
        out = result.get(name)
        if out is None:
            problems.append(f"{name} missing from the response")
            continue
        if out.memory_type is not memory_type:
            problems.append(
                f"{name} arrived in {out.memory_type.value} memory, "
                f"{memory_type.value} was requested"
            )
        if out.array.shape != expected.shape or not np.array_equal(out.array, expected):
            wrong = int(np.sum(out.array != expected)) if out.array.shape == expected.shape else 16
            problems.append(
                f"{name} wrong: {wrong} of 16 values differ "
                f"(first expected {expected.ravel()[:3].tolist()}, "
                f"got {out.array.ravel()[:3].tolist()})"
            )
    return problems
