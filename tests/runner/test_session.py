"""`soak run`'s up-front checks: the GPU check looks where the profile's Triton lives."""

from __future__ import annotations

from pathlib import Path

import pytest

from soak.profile import parse
from soak.runner.session import gpu_problem
from soak.triton import capi


def only_install_at(tmp_path: Path, monkeypatch) -> Path:
    """A Triton home laid out like NVIDIA's containers, and no other Triton on the machine.

    Its lib/ links the wheel's core and libcudart; the wheel itself is then hidden.
    """
    wheel = capi.locate()
    lib = tmp_path / "home" / "lib"
    lib.mkdir(parents=True)
    (lib / "libtritonserver.so").symlink_to(wheel.library)
    for cudart in wheel.library_dir.glob("libcudart*.so*"):
        (lib / cudart.name).symlink_to(cudart)
    monkeypatch.delenv(capi.ENV_HOME, raising=False)
    monkeypatch.setattr(capi, "CONTAINER_HOME", tmp_path / "no-container")
    monkeypatch.setattr(capi, "_from_wheel", lambda: None)
    return lib.parent


def test_gpu_check_uses_the_profiles_triton_home(tmp_path, monkeypatch):
    home = only_install_at(tmp_path, monkeypatch)
    profile = parse(f'memory_type = "gpu"\ntriton_home = "{home}"\n', "gpu.toml")
    # Without the profile the machine has no Triton at all ...
    assert "no Triton core found" in (gpu_problem() or "")
    # ... with it, the question is only whether CUDA answers.
    problem = gpu_problem(profile)
    assert problem is None or "Triton" not in problem
    if problem is not None:
        assert "CUDA" in problem  # e.g. "CUDA reports no usable device (cuda error 35: ...)"


@pytest.mark.gpu
def test_gpu_device_cuda_does_not_see_is_a_problem(gpu):
    assert gpu_problem(parse('memory_type = "gpu"\n')) is None
    problem = gpu_problem(parse('memory_type = "gpu"\ngpu_device = 63\n'))
    assert problem is not None and problem.startswith("gpu_device = 63 names no device")


def test_a_wrong_triton_home_is_reported_as_such_not_as_a_missing_gpu(tmp_path):
    from soak.errors import EnvironmentProblem
    from soak.runner.session import prepare

    missing = tmp_path / "nowhere"
    profile = parse(f'memory_type = "gpu"\ntriton_home = "{missing}"\n', "gpu.toml")
    with pytest.raises(EnvironmentProblem, match=f"triton_home points at {missing}"):
        prepare(profile, tmp_path / "r.db")
    assert not (tmp_path / "r.db").exists()  # refused before any database is made
