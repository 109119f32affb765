"""Tests of the NVML sampler: None without a GPU; real values where NVML works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from soak.sampling.gpu import GpuSample, GpuSampler

REPO_ROOT = Path(__file__).resolve().parents[2]


def _nvml_works() -> bool:
    sampler = GpuSampler()
    try:
        return sampler.available
    finally:
        sampler.close()


needs_gpu = pytest.mark.skipif(not _nvml_works(), reason="NVML cannot initialise: no GPU")


@pytest.fixture
def gpu() -> Iterator[GpuSampler]:
    sampler = GpuSampler()
    yield sampler
    sampler.close()


def test_without_nvml_everything_is_none_never_zero(gpu: GpuSampler) -> None:
    if gpu.available:
        pytest.skip("this machine has a GPU")
    assert gpu.unavailable_reason
    sample = gpu.sample(os.getpid())
    assert sample == GpuSample(devices=[], sample_cost_s=sample.sample_cost_s)
    assert sample.process_bytes is None and sample.device_used_bytes is None
    row = sample.as_dict()
    assert row["process_bytes"] is None and row["device_used_bytes"] is None
    assert json.loads(json.dumps(row)) == row
    assert gpu.describe() == {
        "gpu_names": None,
        "driver_version": None,
        "cuda_driver_version": None,
        "unavailable_reason": gpu.unavailable_reason,
    }


def test_close_is_safe_and_sampling_after_close_reinitialises(gpu: GpuSampler) -> None:
    available = gpu.available
    gpu.close()
    gpu.close()
    assert gpu.available == available
    assert (gpu.sample(os.getpid()).device_used_bytes is None) == (not available)


def test_missing_pynvml_reads_as_unavailable(tmp_path: Path) -> None:
    """A machine without nvidia-ml-py still runs: the sampler says why it is off."""
    blocker = tmp_path / "pynvml.py"
    blocker.write_text("raise ImportError('blocked for the test')\n")
    code = (
        "from soak.sampling.gpu import GpuSampler; s = GpuSampler(); "
        "print(s.available, s.sample(1).process_bytes, s.unavailable_reason)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)])}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("False None ")


@pytest.mark.gpu
@needs_gpu
def test_real_gpu_values(gpu: GpuSampler) -> None:
    assert gpu.available
    info = gpu.describe()
    assert info["gpu_names"] and all(info["gpu_names"])
    assert info["driver_version"] and info["cuda_driver_version"]
    sample = gpu.sample(os.getpid())
    assert sample.devices
    for index, device in enumerate(sample.devices):
        assert device.index == index and device.name
        assert device.total_bytes is not None and device.total_bytes > 0
        assert device.used_bytes is not None and 0 <= device.used_bytes <= device.total_bytes
        # This process allocated nothing on the GPU: unknown or a non-negative amount.
        assert device.process_bytes is None or device.process_bytes >= 0
    assert sample.device_used_bytes is not None and sample.device_used_bytes >= 0
    assert sample.process_bytes is None or sample.process_bytes >= 0


class _FakeNvml:
    """NVML with two devices, for the device filter of Ray cells (no GPU on the CI VM)."""

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        self.uuids = ["GPU-aaa", "GPU-bbb"]

    def nvmlInit(self) -> None: ...

    def nvmlShutdown(self) -> None: ...

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> str:
        return f"GPU{h}"

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return self.uuids[h]

    def nvmlDeviceGetMemoryInfo(self, h: int):
        return type("Memory", (), {"used": 100 * (h + 1), "total": 1000})()

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list:
        return []

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.0"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12080


def test_a_cell_samples_only_the_gpus_it_was_given(monkeypatch) -> None:
    from soak.sampling.gpu import nvml_indices

    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml())
    only_second = GpuSampler(devices=[1])
    sample = only_second.sample(os.getpid())
    assert [(d.index, d.name, d.used_bytes) for d in sample.devices] == [(1, "GPU1", 200)]
    assert sample.device_used_bytes == 200
    assert only_second.describe()["gpu_names"] == ["GPU1"]
    none_given = GpuSampler(devices=[])
    assert (
        not none_given.available and none_given.unavailable_reason == "no GPU assigned to this run"
    )
    assert GpuSampler().sample(os.getpid()).device_used_bytes == 300  # no filter: every device
    assert nvml_indices(["1", "GPU-aaa", "GPU-unknown"]) == [1, 0]
