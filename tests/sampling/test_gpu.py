"""Tests of the NVML sampler: None without a GPU; real values where NVML works.

Device selection and pid mapping also run against a small fake of the NVML calls the sampler
makes (`FakeNvml`): they are decisions about what NVML reports on multi-GPU, MIG and container
hosts, which no machine here has; the fake stands in for such a host, not for the sampler.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from soak.sampling.gpu import GpuSample, GpuSampler, parse_visible_devices
from tests.e2e import soak

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
        assert device.device == index and device.name
        assert device.total_bytes is not None and device.total_bytes > 0
        assert device.used_bytes is not None and 0 <= device.used_bytes <= device.total_bytes
        # This process allocated nothing on the GPU: unknown or a non-negative amount.
        assert device.process_bytes is None or device.process_bytes >= 0
    assert sample.device_used_bytes is not None and sample.device_used_bytes >= 0
    assert sample.process_bytes is None or sample.process_bytes >= 0


# -- a fake NVML host --------------------------------------------------------------------------


class FakeNvmlError(Exception):
    pass


@dataclass
class FakeDevice:
    uuid: str
    used: int
    total: int = 80 << 30
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, bytes)
    name: str = "NVIDIA H100 80GB HBM3"


class FakeNvml:
    """The NVML calls GpuSampler makes, answered from a list of devices (and MIG devices)."""

    NVMLError = FakeNvmlError

    def __init__(self, devices: list[FakeDevice], mig: dict[str, FakeDevice] | None = None):
        self.devices = devices
        self.mig = mig or {}
        self.initialised = 0

    def nvmlInit(self):
        self.initialised += 1

    def nvmlShutdown(self):
        self.initialised -= 1

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index):
        return self.devices[index]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        for device in [*self.devices, *self.mig.values()]:
            if device.uuid == uuid:
                return device
        raise FakeNvmlError("Not Found")

    def nvmlDeviceGetUUID(self, handle):
        return handle.uuid

    def nvmlDeviceGetName(self, handle):
        return handle.name.encode()  # old bindings: bytes

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=handle.used, total=handle.total)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=p, usedGpuMemory=b) for p, b in handle.processes]


UUIDS = [
    "GPU-0a1b2c3d-0000-0000-0000-000000000000",
    "GPU-0a1b9999-0000-0000-0000-000000000001",
    "GPU-77777777-0000-0000-0000-000000000002",
]


@pytest.fixture
def host(monkeypatch) -> FakeNvml:
    """Three GPUs, other tenants on all of them."""
    nvml = FakeNvml(
        [
            FakeDevice(u, used=(i + 1) << 30, processes=[(900 + i, 1 << 30)])
            for i, u in enumerate(UUIDS)
        ]
    )
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    return nvml


def sampled(visible: str | None, pid: int = 4242) -> GpuSample:
    sampler = GpuSampler(visible_devices=visible)
    try:
        return sampler.sample(pid, pids=[])
    finally:
        sampler.close()


def test_cuda_visible_devices_is_read_as_cuda_reads_it():
    assert parse_visible_devices(None) is None
    assert parse_visible_devices("") == []
    assert parse_visible_devices("1, 0") == ["1", "0"]
    assert parse_visible_devices("2,-1,0") == ["2"]  # CUDA stops at the first invalid entry
    assert parse_visible_devices("GPU-0a1b2c3d,x,1") == ["GPU-0a1b2c3d"]
    assert parse_visible_devices("MIG-GPU-0a1b/1/0,MIG-5c6d") == ["MIG-GPU-0a1b/1/0", "MIG-5c6d"]


@pytest.mark.parametrize(
    ("visible", "devices"),
    [
        (None, [0, 1, 2]),  # unset: every device
        ("2", [2]),
        ("2,0", [2, 0]),  # CUDA's order: device 0 of the worker is NVML's 2
        ("GPU-77777777", [2]),  # a unique UUID prefix
        (UUIDS[1], [1]),
        ("GPU-0a1b", []),  # ambiguous prefix: names no device, CUDA stops there
        ("1,7,0", [1]),  # 7 does not exist: the list ends there
    ],
)
def test_only_the_devices_cuda_shows_the_worker_are_summed(host, visible, devices):
    sample = sampled(visible)
    if not devices:
        assert sample.devices == [] and sample.device_used_bytes is None
        return
    assert [d.device for d in sample.devices] == list(range(len(devices)))
    assert [d.used_bytes for d in sample.devices] == [host.devices[i].used for i in devices]
    assert sample.device_used_bytes == sum(host.devices[i].used for i in devices)


def test_a_mig_device_is_sampled_by_its_own_uuid(host):
    host.mig["MIG-5c6d"] = FakeDevice("MIG-5c6d", used=3 << 20, total=10 << 30, name="MIG 1g.10gb")
    sample = sampled("MIG-5c6d")
    assert [(d.name, d.used_bytes, d.total_bytes) for d in sample.devices] == [
        ("MIG 1g.10gb", 3 << 20, 10 << 30)
    ]
    assert sample.device_used_bytes == 3 << 20


def test_worker_pids_on_the_device_are_summed(host):
    host.devices[0].processes += [(4242, 5 << 20), (4243, 7 << 20)]
    sampler = GpuSampler(visible_devices="0,1")
    try:
        sample = sampler.sample(4242, pids=[4243])
    finally:
        sampler.close()
    assert [d.process_bytes for d in sample.devices] == [12 << 20, None]
    assert sample.process_bytes == 12 << 20
    assert len(sample.notes) == 1 and "GPU 1" in sample.notes[0]


def test_processes_listed_but_none_ours_is_unknown_not_zero(host):
    """The container case: NVML lists host pids, so the worker's are never among them."""
    sampler = GpuSampler(visible_devices="0")
    try:
        first = sampler.sample(4242, pids=[])
        second = sampler.sample(4242, pids=[])
    finally:
        sampler.close()
    assert first.devices[0].process_bytes is None
    assert first.process_bytes is None  # NULL in the database: a leak cannot look flat
    assert first.device_used_bytes == host.devices[0].used
    (note,) = first.notes
    assert "none of them the worker's" in note and "PID namespace" in note
    assert second.process_bytes is None and second.notes == []  # said once, not every sample


def test_a_device_without_processes_holds_nothing_of_ours(host):
    host.devices[0].processes = []
    sample = sampled("0")
    assert sample.process_bytes == 0 and sample.notes == []


def test_hidden_per_process_memory_is_unknown(host):
    host.devices[0].processes = [(4242, None)]
    assert sampled("0").process_bytes is None


def test_device_rows_fit_the_gpu_samples_table(host, tmp_path):
    """The supervisor stores each device as a gpu_samples row, keyed (sample_id, device)."""
    from soak.store import Store

    store = Store(tmp_path / "gpu.db")
    run_id = store.create_run({"profile": "fake"})
    sample = sampled("2,0")
    row = {"iteration": 0, "kind": "quiet", "gpu_devices": [d.__dict__ for d in sample.devices]}
    store.write_iteration(run_id, {"iteration": 0}, [row], [], [])
    stored = list(store.db["gpu_samples"].rows)
    assert [(r["device"], r["used_bytes"]) for r in stored] == [(0, 3 << 30), (1, 1 << 30)]


FAKE_PYNVML = '''
"""A GPU host seen from a container: NVML lists one process, under its host pid."""
from types import SimpleNamespace

class NVMLError(Exception):
    pass

def nvmlInit(): pass
def nvmlShutdown(): pass
def nvmlDeviceGetCount(): return 1
def nvmlDeviceGetHandleByIndex(i): return "gpu0"
def nvmlDeviceGetName(h): return "Fake H100"
def nvmlDeviceGetUUID(h): return "GPU-fake"
def nvmlDeviceGetMemoryInfo(h): return SimpleNamespace(used=3 << 30, total=80 << 30)
def nvmlDeviceGetComputeRunningProcesses(h):
    return [SimpleNamespace(pid=4194000, usedGpuMemory=1 << 30)]
def nvmlSystemGetDriverVersion(): return "580.00"
def nvmlSystemGetCudaDriverVersion(): return 13000
'''


@pytest.mark.e2e
def test_run_in_a_pid_namespace_stores_null_and_says_why(tmp_path):
    """A real (CPU) run whose supervisor sees the fake container host above through NVML.

    The worker's pids are never NVML's: gpu_process_bytes must be NULL at every quiet point,
    with one `gpu_sampling` event saying why; the device rows land in gpu_samples.
    """
    from tests.e2e import query

    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "pynvml.py").write_text(FAKE_PYNVML)
    profile = tmp_path / "p.toml"
    profile.write_text("servers = 1\niterations = 2\nwarmup = 1\ninferences_per_model = 1\n")
    db = tmp_path / "r.db"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "fake"), str(REPO_ROOT)]),
        "CUDA_VISIBLE_DEVICES": "0",
    }
    proc = soak("run", str(profile), "--db", str(db), "--no-progress", env=env)
    assert query(db, "SELECT gpu_name FROM runs") == [("Fake H100",)], proc.stdout + proc.stderr
    quiet = query(
        db,
        "SELECT iteration, gpu_process_bytes, gpu_used_bytes FROM samples "
        "WHERE kind = 'quiet' ORDER BY iteration",
    )
    assert quiet == [(0, None, 3 << 30), (1, None, 3 << 30)], proc.stdout + proc.stderr
    events = query(db, "SELECT iteration, message FROM events WHERE kind = 'gpu_sampling'")
    assert len(events) == 1 and events[0][0] == 0
    assert "none of them the worker's" in events[0][1]
    devices = query(db, "SELECT device, name, process_bytes FROM gpu_samples")
    assert devices == [(0, "Fake H100", None), (0, "Fake H100", None)]
