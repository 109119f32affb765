"""The model repositories a run writes: KIND_GPU instances are pinned to the run's GPU."""

from __future__ import annotations

import re

import pytest

from soak.workload.repos import write_model, write_repositories


def instance_group(model_dir) -> str:
    text = (model_dir / "config.pbtxt").read_text()
    match = re.search(r"instance_group \[ (.*) \]", text)
    assert match, text
    return match.group(1)


@pytest.mark.parametrize("device", [0, 3])
def test_gpu_instances_name_their_gpu(tmp_path, device):
    """Without `gpus:` Triton makes one KIND_GPU instance per visible GPU."""
    common, unique = write_repositories(tmp_path, 2, instance_kind="gpu", gpu_device=device)
    for repo in [common, *unique]:
        (model,) = [p for p in repo.iterdir() if p.is_dir()]
        assert instance_group(model) == f"{{ kind: KIND_GPU count: 1 gpus: [ {device} ] }}"


def test_cpu_instances_name_no_gpu(tmp_path):
    model = write_model(tmp_path, "simple1", instance_kind="cpu", gpu_device=2)
    assert instance_group(model) == "{ kind: KIND_CPU count: 1 }"
