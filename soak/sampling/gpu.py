"""Sample GPU memory through NVML from the supervisor: per device, and what the worker's process
tree holds. Without NVML, a driver or a device every value is None (NULL in the database), never
zero; it must not touch CUDA itself, so sampling cannot change what it measures.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from soak.sampling.process import descendant_pids

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuDeviceSample:
    """Memory of one device. ``process_bytes`` is what the sampled pids hold on it, None when
    the driver does not report per-process memory (some vGPU, MIG or container setups)."""

    index: int
    name: str
    used_bytes: int | None
    total_bytes: int | None
    process_bytes: int | None


@dataclass(frozen=True)
class GpuSample:
    """All devices at one point, with totals; totals are None without NVML."""

    devices: list[GpuDeviceSample] = field(default_factory=list)
    process_bytes: int | None = None
    device_used_bytes: int | None = None
    sample_cost_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON lines and SQL rows."""
        return dataclasses.asdict(self)


def _sum_known(values: Iterable[int | None]) -> int | None:
    """Sum of the known values; None when none is known (unknown is not zero)."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _text(value: str | bytes) -> str:
    """NVML strings are bytes in old bindings and str in new ones."""
    return value.decode() if isinstance(value, bytes) else value


def nvml_indices(ids: Iterable[str | int]) -> list[int]:
    """NVML indices of the GPUs named by CUDA-style ids: indices (which follow NVML's order
    when CUDA_DEVICE_ORDER=PCI_BUS_ID) or UUIDs (`GPU-...`), as Ray's `get_gpu_ids()` gives.
    A UUID NVML does not know is left out."""
    out, uuids = [], []
    for gpu in ids:
        text = str(gpu)
        if text.isdigit():
            out.append(int(text))
        else:
            uuids.append(text)
    if uuids:
        try:
            import pynvml

            pynvml.nvmlInit()
            try:
                count = pynvml.nvmlDeviceGetCount()
                known = {
                    _text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))): i
                    for i in range(count)
                }
            finally:
                pynvml.nvmlShutdown()
        except Exception as exc:  # noqa: BLE001 - pynvml missing, or its errors (vary by version)
            log.warning("GPU ids %s not mapped to NVML devices: %s", uuids, exc)
            known = {}
        out += [known[u] for u in uuids if u in known]
    return out


class GpuSampler:
    """NVML, initialised on first use; ``available`` says whether it works on this machine.

    pynvml is imported lazily too, so a machine without nvidia-ml-py still runs CPU profiles.
    """

    def __init__(self, devices: Iterable[int] | None = None) -> None:
        # NVML indices this run may use (a Ray cell's GPUs); None: every device.
        self.devices = None if devices is None else list(devices)
        self._indices: list[int] = []
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._names: list[str] = []
        self._tried = False
        self.unavailable_reason: str | None = None

    @property
    def available(self) -> bool:
        """True when NVML initialised and reports at least one device."""
        self._init()
        return self._nvml is not None

    def _init(self) -> None:
        if self._tried:
            return
        self._tried = True
        try:
            import pynvml
        except ImportError:
            self.unavailable_reason = "nvidia-ml-py (pynvml) is not installed"
            return
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            self.unavailable_reason = f"NVML did not initialise: {exc}"
            log.info("GPU sampling off: %s", self.unavailable_reason)
            return
        try:
            count = pynvml.nvmlDeviceGetCount()
            wanted = range(count) if self.devices is None else self.devices
            indices = [i for i in wanted if i < count]
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in indices]
            names = [_text(pynvml.nvmlDeviceGetName(h)) for h in handles]
        except pynvml.NVMLError as exc:
            pynvml.nvmlShutdown()
            self.unavailable_reason = f"NVML cannot list devices: {exc}"
            log.info("GPU sampling off: %s", self.unavailable_reason)
            return
        if not handles:
            pynvml.nvmlShutdown()
            self.unavailable_reason = (
                "no GPU assigned to this run" if self.devices is not None else "NVML reports no GPU"
            )
            log.info("GPU sampling off: %s", self.unavailable_reason)
            return
        self._nvml = pynvml
        self._indices = indices
        self._handles = handles
        self._names = names

    def sample(self, pid: int, pids: Iterable[int] | None = None) -> GpuSample:
        """Memory of every device now, and what ``pids`` hold on each.

        ``pids`` defaults to ``pid`` and all its descendants (the worker and its stubs, which
        may hold GPU memory of their own).
        """
        started = time.perf_counter()
        if not self.available:
            return GpuSample(sample_cost_s=time.perf_counter() - started)
        wanted = {pid, *descendant_pids(pid)} if pids is None else {pid, *pids}
        devices = [self._sample_device(pos, wanted) for pos in range(len(self._handles))]
        return GpuSample(
            devices=devices,
            process_bytes=_sum_known(d.process_bytes for d in devices),
            device_used_bytes=_sum_known(d.used_bytes for d in devices),
            sample_cost_s=time.perf_counter() - started,
        )

    def _sample_device(self, pos: int, pids: set[int]) -> GpuDeviceSample:
        nvml = self._nvml
        handle, index = self._handles[pos], self._indices[pos]
        used = total = None
        try:
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            used, total = int(memory.used), int(memory.total)
        except nvml.NVMLError as exc:
            log.warning("GPU %d: memory info unavailable: %s", index, exc)
        process_bytes: int | None = None
        try:
            running = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except nvml.NVMLError as exc:
            log.debug("GPU %d: per-process memory unavailable: %s", index, exc)
        else:
            ours = [p.usedGpuMemory for p in running if p.pid in pids]
            # A process of ours on the device whose memory the driver hides makes the total
            # unknown; no process of ours there means it holds nothing there.
            process_bytes = None if any(v is None for v in ours) else sum(int(v) for v in ours)
        return GpuDeviceSample(
            index=index,
            name=self._names[pos],
            used_bytes=used,
            total_bytes=total,
            process_bytes=process_bytes,
        )

    def describe(self) -> dict[str, Any]:
        """GPU names, driver and CUDA driver versions for the run's record; None without GPU."""
        if not self.available:
            return {
                "gpu_names": None,
                "driver_version": None,
                "cuda_driver_version": None,
                "unavailable_reason": self.unavailable_reason,
            }
        nvml = self._nvml
        driver = cuda = None
        try:
            driver = _text(nvml.nvmlSystemGetDriverVersion())
        except nvml.NVMLError as exc:
            log.warning("NVML: driver version unavailable: %s", exc)
        try:
            version = int(nvml.nvmlSystemGetCudaDriverVersion())  # e.g. 12040
            cuda = f"{version // 1000}.{version % 1000 // 10}"
        except nvml.NVMLError as exc:
            log.warning("NVML: CUDA driver version unavailable: %s", exc)
        return {
            "gpu_names": list(self._names),
            "driver_version": driver,
            "cuda_driver_version": cuda,
            "unavailable_reason": None,
        }

    def close(self) -> None:
        """Shut NVML down; a later sample initialises it again."""
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as exc:
                log.debug("NVML shutdown failed: %s", exc)
        self._nvml = None
        self._handles = []
        self._names = []
        self._tried = False
        self.unavailable_reason = None
