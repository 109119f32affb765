"""Buffers and the CUDA handle: the wheel's libcudart is found, CUDA failures are CudaErrors.

The failure tests use the real libcudart that ships with the Triton core; on a machine without
a GPU every CUDA call fails with the driver's own words, which is what they check.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from soak.errors import EnvironmentProblem, SoakError
from soak.triton import capi
from soak.triton import memory as mem
from soak.triton.memory import Cuda, CudaError, MemoryType
from tests.conftest import cuda_problem

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_default_handle_loads_the_libcudart_next_to_the_core():
    """cuda() with no folder must not fall back to a bare soname.

    The wheel's libcudart is `libcudart-<hash>.so.12.6.77`: `libcudart.so` would find nothing
    on a machine without a system CUDA, or (as on this machine) a different CUDA runtime.
    A fresh process, since the handle is made once per process.
    """
    code = (
        "import json; from soak.triton import memory; c = memory.cuda(); "
        "print(json.dumps([c.library, c.problem]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    library, _problem = json.loads(out.strip().splitlines()[-1])
    install = capi.locate()
    assert library is not None
    assert Path(library).parent == install.library_dir
    assert Path(library).name.startswith("libcudart")
    if install.source == "nvidia-pytriton":
        assert Path(library).name != "libcudart.so"  # the hashed soname of the wheel


def test_missing_libcudart_is_a_clear_error_not_an_assert(tmp_path, monkeypatch):
    monkeypatch.setattr(Cuda, "FALLBACK_NAMES", ())
    handle = Cuda(tmp_path)
    assert not handle.available
    assert handle.problem is not None and str(tmp_path) in handle.problem
    for call in (
        lambda: handle.malloc(16),
        lambda: handle.host_alloc(16),
        lambda: handle.free(1),
        lambda: handle.to_host(1, 2, 3),
    ):
        with pytest.raises(CudaError, match="libcudart was not found") as info:
            call()
        assert isinstance(info.value, SoakError)


def test_cuda_failures_are_cuda_errors_naming_the_call(monkeypatch):
    problem = cuda_problem()
    if problem is None:
        pytest.skip("this machine has a GPU: its CUDA calls succeed")
    handle = Cuda(capi.locate().library_dir)
    if handle.lib is None:
        pytest.skip(f"no libcudart to call: {handle.problem}")
    monkeypatch.setattr(mem, "_cuda", handle)
    for call, name in (
        (lambda: mem.allocate(MemoryType.GPU, 16, device=0), "cudaMalloc(16) on device 0"),
        (lambda: mem.allocate(MemoryType.PINNED, 16), "cudaHostAlloc(16)"),
    ):
        with pytest.raises(CudaError) as info:
            call()
        error = info.value
        assert not isinstance(error, MemoryError)  # the machine's problem, not out of memory
        assert str(error).startswith(f"{name} failed: ")
        assert error.code is not None and error.code != 0
        # CUDA's own words, as cudaGetErrorString gives them
        text = handle.lib.cudaGetErrorString(error.code).decode()
        assert text and text in str(error)


def test_system_memory_round_trip_and_release():
    data = np.arange(16, dtype=np.int32)
    ptr = mem.allocate(MemoryType.SYSTEM, data.nbytes)
    try:
        mem.copy_in(MemoryType.SYSTEM, ptr, data.ctypes.data, data.nbytes)
        back = np.empty_like(data)
        mem.copy_out(MemoryType.SYSTEM, back.ctypes.data, ptr, data.nbytes)
        assert np.array_equal(back, data)
    finally:
        mem.release(MemoryType.SYSTEM, ptr)
    mem.release(MemoryType.SYSTEM, 0)  # a NULL buffer is no buffer


@pytest.mark.gpu
@pytest.mark.parametrize("memory_type", [MemoryType.PINNED, MemoryType.GPU])
def test_cuda_round_trip_on_the_device_leaves_the_thread_device_alone(gpu, memory_type):
    handle = mem.cuda(capi.locate().library_dir)
    assert handle.lib is not None
    data = np.arange(16, dtype=np.int32)
    last = handle.device_count - 1
    before = ctypes.c_int(-1)
    assert handle.lib.cudaGetDevice(ctypes.byref(before)) == 0
    ptr = mem.allocate(memory_type, data.nbytes, device=last)
    try:
        after = ctypes.c_int(-1)
        assert handle.lib.cudaGetDevice(ctypes.byref(after)) == 0
        assert after.value == before.value  # the caller's current device is put back
        mem.copy_in(memory_type, ptr, data.ctypes.data, data.nbytes)
        back = np.zeros_like(data)
        mem.copy_out(memory_type, back.ctypes.data, ptr, data.nbytes)
        assert np.array_equal(back, data)
    finally:
        mem.release(memory_type, ptr)


@pytest.mark.gpu
def test_a_device_cuda_does_not_see_is_refused(gpu):
    handle = mem.cuda(capi.locate().library_dir)
    with pytest.raises(EnvironmentProblem, match=f"gpu_device = {handle.device_count}"):
        mem.require(MemoryType.GPU, device=handle.device_count)
    mem.require(MemoryType.GPU, device=0)


def test_memory_types_map_to_tritonserver_memory_type_codes():
    """The interface's plain MemoryType, turned into TRITONSERVER_MemoryType and back."""
    codes = {t: mem.triton_code(t) for t in MemoryType}
    assert codes == {
        MemoryType.SYSTEM: capi.MEMORY_CPU,
        MemoryType.PINNED: capi.MEMORY_CPU_PINNED,
        MemoryType.GPU: capi.MEMORY_GPU,
    }
    assert [mem.from_triton(code) for code in codes.values()] == list(MemoryType)
