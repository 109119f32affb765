"""Sample GPU memory through NVML from the supervisor: per device, and what the worker's process
tree holds. Without NVML, a driver or a device every value is None (NULL in the database), never
zero; it must not touch CUDA itself, so sampling cannot change what it measures.

Only the devices CUDA lets the worker see are sampled (``CUDA_VISIBLE_DEVICES``: indexes,
``GPU-`` UUIDs or their unique prefixes, ``MIG-`` UUIDs, mapped to NVML by UUID), so other
tenants of a shared or MIG host do not add their usage to ``gpu_used_bytes``. Triton makes its
CUDA memory pools on every device it sees, so every visible device is one the run uses.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from soak.sampling.procfs import descendant_pids

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuDeviceSample:
    """Memory of one device, ``device`` being its CUDA ordinal in the worker (the index into
    its visible devices; the `gpu_samples` table's columns). ``process_bytes`` is what the
    sampled pids hold on it, None when the driver does not report per-process memory (some
    vGPU, MIG or container setups) or when the worker's pids cannot be found among NVML's."""

    device: int
    name: str
    used_bytes: int | None
    total_bytes: int | None
    process_bytes: int | None


@dataclass(frozen=True)
class GpuSample:
    """All devices at one point, with totals; totals are None without NVML.

    ``notes`` says why a value is unknown, each reason once per sampler (the first sample
    that meets it carries it), for the run's events.
    """

    devices: list[GpuDeviceSample] = field(default_factory=list)
    process_bytes: int | None = None
    device_used_bytes: int | None = None
    sample_cost_s: float = 0.0
    notes: list[str] = field(default_factory=list)

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


_UUID_ENTRY = re.compile(r"(GPU|MIG)-[0-9A-Za-z/-]+")


def parse_visible_devices(spec: str | None) -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES`` read as CUDA reads it; None when unset (every device).

    CUDA takes the entries up to the first that is not a device (a negative or malformed one)
    and ignores the rest; an empty value hides every device.
    """
    if spec is None:
        return None
    out: list[str] = []
    for raw in spec.split(","):
        entry = raw.strip()
        if re.fullmatch(r"\d+", entry):
            out.append(str(int(entry)))
        elif _UUID_ENTRY.fullmatch(entry):
            out.append(entry)
        else:
            break
    return out


_VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"


class GpuSampler:
    """NVML, initialised on first use; ``available`` says whether it works on this machine.

    pynvml is imported lazily too, so a machine without nvidia-ml-py still runs CPU profiles.
    """

    def __init__(self, visible_devices: str | None = None) -> None:
        """``visible_devices``: a ``CUDA_VISIBLE_DEVICES`` value; default: this process's."""
        self._visible = (
            visible_devices if visible_devices is not None else os.environ.get(_VISIBLE_ENV)
        )
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._names: list[str] = []
        self._tried = False
        self._noted: set[tuple[str, int]] = set()
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
            handles = self._visible_handles(pynvml)
            names = [_text(pynvml.nvmlDeviceGetName(h)) for h in handles]
        except pynvml.NVMLError as exc:
            pynvml.nvmlShutdown()
            self.unavailable_reason = f"NVML cannot list devices: {exc}"
            log.info("GPU sampling off: %s", self.unavailable_reason)
            return
        if not handles:
            pynvml.nvmlShutdown()
            self.unavailable_reason = "NVML reports no GPU" + (
                f" among {_VISIBLE_ENV}={self._visible!r}" if self._visible is not None else ""
            )
            log.info("GPU sampling off: %s", self.unavailable_reason)
            return
        self._nvml = pynvml
        self._handles = handles
        self._names = names

    def _visible_handles(self, nvml: Any) -> list[Any]:
        """NVML handles of the devices CUDA shows the worker, in CUDA's order.

        An index is NVML's index: CUDA orders devices fastest first unless
        CUDA_DEVICE_ORDER=PCI_BUS_ID, which agrees with NVML on hosts of one GPU model.
        UUIDs are exact. An entry that names no device ends the list, as it does for CUDA.
        """
        count = nvml.nvmlDeviceGetCount()
        every = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        entries = parse_visible_devices(self._visible)
        if entries is None:
            return every
        uuids: list[str] | None = None
        handles: list[Any] = []
        for entry in entries:
            handle = None
            if entry.isdigit():
                handle = every[int(entry)] if int(entry) < count else None
            elif entry.startswith("GPU-"):
                if uuids is None:
                    uuids = [_text(nvml.nvmlDeviceGetUUID(h)) for h in every]
                matches = [h for h, u in zip(every, uuids, strict=True) if u.startswith(entry)]
                handle = matches[0] if len(matches) == 1 else None
            else:  # a MIG device: NVML resolves its UUID itself
                try:
                    handle = nvml.nvmlDeviceGetHandleByUUID(entry)
                except nvml.NVMLError as exc:
                    log.info("%s entry %s: no NVML device: %s", _VISIBLE_ENV, entry, exc)
            if handle is None:
                log.info("%s entry %s names no device; CUDA stops there too", _VISIBLE_ENV, entry)
                break
            handles.append(handle)
        return handles

    def _note(self, key: tuple[str, int], text: str, notes: list[str]) -> None:
        """Say why a value is unknown, once per reason and device."""
        if key not in self._noted:
            self._noted.add(key)
            log.warning("%s", text)
            notes.append(text)

    def sample(self, pid: int, pids: Iterable[int] | None = None) -> GpuSample:
        """Memory of every device now, and what ``pids`` hold on each.

        ``pids`` defaults to ``pid`` and all its descendants (the worker and its stubs, which
        may hold GPU memory of their own).
        """
        started = time.perf_counter()
        if not self.available:
            return GpuSample(sample_cost_s=time.perf_counter() - started)
        wanted = {pid, *descendant_pids(pid)} if pids is None else {pid, *pids}
        notes: list[str] = []
        devices = [self._sample_device(index, wanted, notes) for index in range(len(self._handles))]
        return GpuSample(
            devices=devices,
            process_bytes=_sum_known(d.process_bytes for d in devices),
            device_used_bytes=_sum_known(d.used_bytes for d in devices),
            sample_cost_s=time.perf_counter() - started,
            notes=notes,
        )

    def _sample_device(self, index: int, pids: set[int], notes: list[str]) -> GpuDeviceSample:
        nvml = self._nvml
        handle = self._handles[index]
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
            if running and not ours:
                # In a container with its own PID namespace NVML reports host pids, so the
                # worker's never match: 0 would make a GPU leak look flat. Without a way to
                # tell that from "holds nothing here" the value is unknown.
                self._note(
                    ("foreign_pids", index),
                    f"GPU {index} ({self._names[index]}): NVML lists {len(running)} compute "
                    "process(es), none of them the worker's process tree; inside a container "
                    "with its own PID namespace NVML reports host pids, so gpu_process_bytes "
                    "is unknown (NULL), not 0",
                    notes,
                )
                process_bytes = None
            elif any(v is None for v in ours):
                # A process of ours whose memory the driver hides makes the total unknown.
                process_bytes = None
            else:
                # No process on the device at all: the worker holds nothing there.
                process_bytes = sum(int(v) for v in ours)
        return GpuDeviceSample(
            device=index,
            name=self._names[index],
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
