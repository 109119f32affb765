"""Sampling server processes apart from their client (target tritonserver), for the supervisor.

Each quiet point names the live server processes; each is sampled as a process tree (its
stubs, their regions) and the samples are summed into the usual columns, while the worker,
now only the client, fills the client columns. With no server alive (the `servers` scenario
between iterations) the server memory is 0 and what the worker's tree still holds (servers
not ended, stubs, regions) is what is left. Every tritonserver seen under the worker is
remembered, so that one orphaned by a dead worker is still ended.
"""

from __future__ import annotations

import logging
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import psutil

from soak.sampling.process import ProcessSample, ProcessTreeSampler, WorkerGoneError
from soak.sampling.procfs import regions_held_by
from soak.sampling.waiting import wait_ended
from soak.store import SERVER_SAMPLE_COLUMNS, event

log = logging.getLogger(__name__)

SERVER_EXECUTABLE = "tritonserver"
CLIENT_REGION_PREFIX = "soak_client_shm_"  # soak.tritonserver.regions: <prefix><pid>_
_MEMORY = ("rss_bytes", "uss_bytes", "pss_bytes", "vms_bytes", "fds", "threads")
_TREE = ("children", "children_rss_bytes", "stubs_alive", "shm_regions", "shm_bytes")


class ServerSampling:
    """The servers of one worker, sampled from outside; `worker` is its tree sampler."""

    def __init__(self, worker: ProcessTreeSampler) -> None:
        self.worker = worker
        self._samplers: dict[int, ProcessTreeSampler] = {}
        self._seen: dict[tuple[int, float], psutil.Process] = {}
        self._held: set[str] = set()  # regions the servers held just before a kill

    def sample(
        self, server_pids: list[int]
    ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        """(server columns summed, client columns, each server's own row) now; a server's row
        is its index among `server_pids`, its pid and SERVER_SAMPLE_COLUMNS."""
        tree = self.worker.sample()
        self.note_servers()
        self._samplers = {p: s for p, s in self._samplers.items() if p in server_pids}
        samples: list[ProcessSample] = []
        apart: list[dict[str, Any]] = []
        for index, pid in enumerate(server_pids):
            try:
                sampler = self._samplers.get(pid) or ProcessTreeSampler(pid)
                self._samplers[pid] = sampler
                one = sampler.sample()
            except WorkerGoneError:
                self._samplers.pop(pid, None)
                continue
            samples.append(one)
            apart.append(
                {"server": index, "pid": pid} | {c: getattr(one, c) for c in SERVER_SAMPLE_COLUMNS}
            )
        names = [f.name for f in fields(ProcessSample)]
        if samples:
            row = {n: _sum(getattr(s, n) for s in samples) for n in names}
        else:
            row = {n: 0 for n in _MEMORY} | {n: getattr(tree, n) for n in _TREE}
            row["sample_cost_s"] = tree.sample_cost_s
        client = {
            "client_rss_bytes": tree.rss_bytes,
            "client_fds": tree.fds,
            "client_threads": tree.threads,
        }
        return row, client, apart

    def note_servers(self) -> None:
        """Remember the tritonserver processes now under the worker (cheap: a tree walk)."""
        try:
            root = psutil.Process(self.worker.pid)
            children = root.children(recursive=True)
        except psutil.Error:
            return
        for proc in children:
            try:
                if proc.name() == SERVER_EXECUTABLE:
                    self._seen.setdefault((proc.pid, proc.create_time()), proc)
            except psutil.Error:
                continue

    def hold_regions(self) -> None:
        """Before the tree is killed (a hang): the regions each live server maps, which a
        stub's command line may not name (seen: one per hung reload left otherwise)."""
        self.note_servers()
        for proc in list(self._seen.values()):
            try:
                self._held |= regions_held_by(proc.pid, self.worker.prefix)
            except psutil.Error:
                continue

    def end_orphans(self) -> list[dict[str, Any]]:
        """After the worker has ended: kill the servers it left running (events say so)."""
        alive = []
        for (_pid, created), proc in self._seen.items():
            try:
                if proc.is_running() and proc.create_time() == created:
                    alive.append(proc)
            except psutil.Error:
                continue
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        wait_ended(alive, 10.0)
        events = [
            event("leftover_server", f"tritonserver {p.pid} outlived the worker; killed")
            for p in alive
        ]
        for name in sorted(self._held):
            path = Path(self.worker.shm_dir) / name
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("could not remove %s: %s", path, exc)
                continue
            events.append(event("leftover_shm", f"region {path} of a killed server removed"))
        return events


def remove_client_regions(worker_pid: int, shm_dir: str = "/dev/shm") -> list[dict[str, Any]]:
    """The client's shared-memory regions a dead worker left (its pid is in their names)."""
    prefix = f"{CLIENT_REGION_PREFIX}{worker_pid}_"
    events = []
    try:
        entries = [e for e in os.scandir(shm_dir) if e.name.startswith(prefix)]
    except FileNotFoundError:
        return []
    for entry in entries:
        try:
            Path(entry.path).unlink()
        except OSError as exc:
            log.warning("could not remove %s: %s", entry.path, exc)
            continue
        events.append(event("leftover_shm", f"client region {entry.path} outlived the worker"))
    return events


def _sum(values: Any) -> Any:
    got = [v for v in values if v is not None]
    return sum(got) if got else None
