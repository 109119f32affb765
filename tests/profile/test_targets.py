"""soak.profile.targets: the target keys, checked over every matrix cell, one line each."""

from __future__ import annotations

import pytest

from soak.errors import ProfileError
from soak.profile import parse

TS = 'target = "tritonserver"\n'


def test_defaults_are_the_in_process_target():
    prof = parse("")
    assert (prof.run["target"], prof.run["protocol"]) == ("in_process", "http")
    assert (prof.run["streaming"], prof.run["shared_memory"]) == (False, "none")
    assert prof.tritonserver == {"args": []}


def test_a_tritonserver_profile_with_its_args():
    prof = parse(TS + 'protocol = "grpc"\nstreaming = true\n[tritonserver]\nargs = ["--a=1"]\n')
    assert prof.run["streaming"] and prof.tritonserver["args"] == ["--a=1"]


@pytest.mark.parametrize(
    "text, expected",
    [
        (TS + "streaming = true\n", ["streaming = true needs protocol = 'grpc'"]),
        ("streaming = true\n", ["streaming needs target = 'tritonserver'"]),
        ('shared_memory = "system"\n', ["shared_memory needs target"]),
        (TS + '[matrix]\nprotocol = ["http", "grpc"]\nstreaming = [true]\n', ["matrix.protocol"]),
        (TS + 'memory_type = "gpu"\n', ["memory_type = 'gpu' is in-process only"]),
        (TS + "[inject]\ngpu_bytes_per_server = 1\n", ["inject.gpu_bytes_per_server"]),
        ("[tritonserver]\nargs = [3]\n", ["tritonserver.args[0] must be a flag"]),
        ('target = "remote"\n', ["target = 'remote' is not allowed", "'tritonserver'"]),
    ],
)
def test_bad_target_settings_are_one_line(text: str, expected: list[str]):
    with pytest.raises(ProfileError) as info:
        parse(text, "p.toml")
    message = str(info.value)
    assert message.startswith("p.toml: ") and "\n" not in message
    for part in expected:
        assert part in message
