"""soak.runner.session.check_gpu_settings: GPU settings refused, by name, where no GPU answers."""

from __future__ import annotations

import pytest

from soak.errors import ProfileError
from soak.profile.loading import parse
from soak.runner.session import check_gpu_settings
from tests.profile.helpers import SOURCE

# -- GPU settings against this machine ----------------------------------------------------


@pytest.mark.parametrize(
    "text, overrides, named",
    [
        ('memory_type = "gpu"\n', {}, "memory_type = gpu"),
        ('memory_type = "pinned"\n', {}, "memory_type = pinned"),
        ('instance_kind = "gpu"\n', {}, "instance_kind = gpu"),
        ('[matrix]\nmemory_type = ["system", "gpu"]\n', {}, "matrix.memory_type = gpu"),
        ("[inject]\ngpu_bytes_per_server = 4096\n", {}, "inject.gpu_bytes_per_server = 4096"),
        ("", {"memory_type": "gpu"}, "--memory-type gpu"),
    ],
)
def test_gpu_setting_without_gpu_names_file_setting_problem_and_what_is_allowed(
    text, overrides, named
):
    prof = parse(text, SOURCE).with_overrides(**overrides)
    assert prof.uses_gpu
    check_gpu_settings(prof, None)  # fine where a GPU answers
    with pytest.raises(ProfileError) as info:
        check_gpu_settings(prof, "CUDA reports no usable device\n(cuda error 35)")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(SOURCE + ": ")
    assert named in message
    assert "needs an NVIDIA GPU" in message
    assert "CUDA reports no usable device (cuda error 35)" in message
    assert "memory_type = 'system'" in message and "instance_kind = 'cpu'" in message


def test_cpu_profile_passes_the_machine_check_without_gpu():
    check_gpu_settings(parse('memory_type = "system"\ninstance_kind = "cpu"\n'), "no GPU")
