"""What a cell asks of a node, and which live node can take it."""

from __future__ import annotations

from pathlib import Path

from soak import profile as profiles
from soak.runner.ray.placement import cell_resources, cpu_cap, on_node, unplaceable


def _profile(tmp_path: Path, text: str, name: str = "grid") -> profiles.Profile:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return profiles.load(str(path))


def test_resources_follow_the_cell(tmp_path):
    prof = _profile(
        tmp_path,
        "[ray]\nresources = {gpu_h100 = 1}\n"
        '[matrix]\nservers = [1, 4]\nmemory_type = ["system", "gpu"]\n',
    )
    opts = {(c.run["servers"], c.run["memory_type"]): cell_resources(c, 2.0) for c in prof.cells()}
    assert opts[(1, "system")] == {"num_cpus": 1.0, "num_gpus": 0, "resources": {"gpu_h100": 1}}
    assert opts[(4, "system")]["num_cpus"] == 2.0  # capped at the largest node
    assert opts[(4, "gpu")]["num_gpus"] == 1
    assert cell_resources(prof.cells()[1], 0.0)["num_cpus"] == 1.0


def test_a_cell_no_node_can_take_is_named(tmp_path):
    prof = _profile(tmp_path, '[ray]\nresources = {gpu_h100 = 1}\n[matrix]\ndatatype = ["fp32"]\n')
    nodes = [{"Alive": True, "Resources": {"CPU": 2.0}}]
    assert "gpu_h100=1" in unplaceable(prof.cells(), nodes)
    assert "datatype=fp32" in unplaceable(prof.cells(), nodes)
    nodes.append({"Alive": True, "Resources": {"CPU": 1.0, "gpu_h100": 1.0}})
    assert unplaceable(prof.cells(), nodes) is None
    assert cpu_cap(prof.cells()[0], nodes) == 1.0  # the node with the resource, not the largest
    nodes[1]["Alive"] = False
    assert unplaceable(prof.cells(), nodes) is not None


def test_a_gpu_cell_runs_on_device_0_of_what_ray_gave_it(tmp_path):
    prof = _profile(tmp_path, 'gpu_device = 1\n[matrix]\nmemory_type = ["system", "gpu"]\n')
    cpu, gpu = prof.cells()
    assert on_node(cpu).run["gpu_device"] == 1  # no GPU there: left as written
    assert on_node(gpu).run["gpu_device"] == 0  # Ray's CUDA_VISIBLE_DEVICES holds its one GPU
