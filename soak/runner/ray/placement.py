"""Which node can take a cell, and what a cell asks of it: Ray task options from the cell's
servers, GPU use and custom resources, checked against the live nodes. Needs no Ray."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from soak.formatting import cell_label
from soak.profile import Profile


def cell_resources(cell: Profile, largest_node_cpus: float = 0.0) -> dict[str, Any]:
    """Ray task options of a cell: a GPU when it uses GPU memory or instances, a CPU per
    server up to what the largest node has (so that it fits somewhere), its custom resources."""
    cpus = float(cell.run["servers"])
    if largest_node_cpus > 0:
        cpus = min(cpus, largest_node_cpus)
    return {
        "num_cpus": cpus,
        "num_gpus": 1 if cell.uses_gpu else 0,
        "resources": dict(cell.ray["resources"]),
    }


def on_node(cell: Profile) -> Profile:
    """The cell as its node runs it: Ray gives a GPU cell its GPU as CUDA_VISIBLE_DEVICES,
    in which that GPU is device 0 (the GpuSampler then samples it alone)."""
    if not cell.uses_gpu:
        return cell
    return replace(cell, run={**cell.run, "gpu_device": 0})


def cpu_cap(cell: Profile, nodes: list[dict[str, Any]]) -> float:
    """The most CPUs a live node that has the cell's other resources (GPU, custom) offers."""
    opts = cell_resources(cell)
    others = {"GPU": opts["num_gpus"], **opts["resources"]}
    fitting = [
        n["Resources"].get("CPU", 0.0)
        for n in nodes
        if n.get("Alive") and all(n["Resources"].get(k, 0.0) >= v for k, v in others.items() if v)
    ]
    return max(fitting, default=0.0)


def unplaceable(cells: list[Profile], nodes: list[dict[str, Any]]) -> str | None:
    """Why a cell fits on no live node of the cluster (None: every cell fits on one)."""
    for cell in cells:
        if cpu_cap(cell, nodes) > 0:
            continue
        opts = cell_resources(cell)
        wanted = {"GPU": opts["num_gpus"], **opts["resources"]}
        asks = ", ".join(f"{k}={v:g}" for k, v in wanted.items() if v) or "a CPU"
        label = cell_label(cell.cell, empty=cell.name)
        return f"cell [{label}] needs {asks}, which no live node of the cluster has"
    return None
