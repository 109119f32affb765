"""Tests of the in-worker heap sampler: real tracemalloc, gc, objgraph and glibc calls."""

from __future__ import annotations

import dataclasses
import json
import platform
import tracemalloc
from collections.abc import Iterator

import pytest

from soak.sampling.heap import HeapSample, HeapSampler, mallinfo_bytes, malloc_trim

GLIBC = platform.libc_ver()[0] == "glibc"


class LeakyThing:
    """A type of our own, so objgraph's growth can be checked by name."""


@pytest.fixture
def sampler() -> Iterator[HeapSampler]:
    was_tracing = tracemalloc.is_tracing()
    heap = HeapSampler(objgraph_every=2, malloc_trim=True, top_types=5)
    try:
        yield heap
    finally:
        heap.stop()
        assert tracemalloc.is_tracing() == was_tracing


def test_sample_fields_and_json(sampler: HeapSampler) -> None:
    sample = sampler.sample(0)
    assert isinstance(sample, HeapSample)
    assert sample.iteration == 0
    assert sample.tracemalloc_current_bytes > 0
    assert sample.tracemalloc_peak_bytes >= sample.tracemalloc_current_bytes
    assert sample.gc_objects > 1000
    assert sample.sample_cost_s > 0
    row = sample.as_dict()
    assert json.loads(json.dumps(row)) == row
    assert all(isinstance(entry, list) and len(entry) == 3 for entry in row["growth"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.gc_objects = 0  # type: ignore[misc]


def test_start_is_lazy() -> None:
    if tracemalloc.is_tracing():
        pytest.skip("something else is tracing already")
    heap = HeapSampler(objgraph_every=0, malloc_trim=False)
    assert not tracemalloc.is_tracing()
    try:
        heap.start()
        assert tracemalloc.is_tracing()
    finally:
        heap.stop()
    assert not tracemalloc.is_tracing()


def test_tracemalloc_sees_an_allocation_and_peak_resets(sampler: HeapSampler) -> None:
    base = sampler.sample(1)
    held = [bytearray(1024) for _ in range(4096)]  # ~4 MiB of Python objects
    grown = sampler.sample(1)
    assert grown.tracemalloc_current_bytes - base.tracemalloc_current_bytes > 3_000_000
    del held
    after = sampler.sample(1)
    assert after.tracemalloc_current_bytes < grown.tracemalloc_current_bytes - 3_000_000
    # The peak was reset after the previous sample, which held the bytearrays, and covers the
    # interval since then: it must not still show that earlier peak.
    transient = bytearray(8_000_000)
    del transient
    peaked = sampler.sample(1)
    assert peaked.tracemalloc_peak_bytes >= peaked.tracemalloc_current_bytes + 7_000_000
    quiet = sampler.sample(1)
    assert quiet.tracemalloc_peak_bytes < peaked.tracemalloc_peak_bytes - 7_000_000


def test_objgraph_growth_only_every_n_and_names_the_growing_type(sampler: HeapSampler) -> None:
    sampler.start()  # baseline
    kept = [LeakyThing() for _ in range(500)]
    odd = sampler.sample(1)
    assert odd.growth == []
    even = sampler.sample(2)
    by_name = {name: (count, increase) for name, count, increase in even.growth}
    assert "LeakyThing" in by_name
    assert by_name["LeakyThing"][1] >= 500
    assert len(even.growth) <= 5
    unchanged = sampler.sample(4)  # nothing new since: LeakyThing does not grow again
    assert "LeakyThing" not in {name for name, _, _ in unchanged.growth}
    del kept


def test_objgraph_every_zero_never_walks_the_heap() -> None:
    heap = HeapSampler(objgraph_every=0, malloc_trim=False)
    try:
        assert heap.sample(0).growth == [] and heap.sample(10).growth == []
    finally:
        heap.stop()
    with pytest.raises(ValueError):
        HeapSampler(objgraph_every=-1, malloc_trim=False)


@pytest.mark.skipif(not GLIBC, reason="mallinfo2 and malloc_trim are glibc functions")
def test_mallinfo_and_trim_on_glibc(sampler: HeapSampler) -> None:
    inuse, free = mallinfo_bytes()
    assert inuse is not None and inuse > 0
    assert free is not None and free >= 0
    assert malloc_trim() is True
    sample = sampler.sample(1)
    assert sample.malloc_trimmed is True
    assert sample.mallinfo_inuse_bytes is not None and sample.mallinfo_inuse_bytes > 0
    untrimmed = HeapSampler(objgraph_every=0, malloc_trim=False)
    try:
        assert untrimmed.sample(1).malloc_trimmed is False
    finally:
        untrimmed.stop()


@pytest.mark.skipif(not GLIBC, reason="mallinfo2 is a glibc function")
def test_mallinfo_sees_a_large_c_allocation() -> None:
    import ctypes

    before, _ = mallinfo_bytes()
    block = ctypes.create_string_buffer(64 * 1024 * 1024)  # malloc'd, mmapped (hblkhd)
    during, _ = mallinfo_bytes()
    del block
    assert before is not None and during is not None
    assert during - before >= 60 * 1024 * 1024
