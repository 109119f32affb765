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
    assert prof.tritonserver == {"args": [], "url": "", "pid": 0}


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


def attach(
    tmp_path,
    extra: str = "",
    server: str = 'url = "http://127.0.0.1:8000"\npid = 42\n',
    scenario: str = "traffic",
    servers: int = 1,
    matrix: str = "",
) -> str:
    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "m" / "config.pbtxt").write_text('backend: "python"\n')
    return (
        TS
        + f'scenario = "{scenario}"\nservers = {servers}\n'
        + extra
        + f'[models]\nrepositories = ["{tmp_path}"]\nload = ["m"]\n[tritonserver]\n{server}'
        + matrix
    )


def test_an_attached_server_is_a_tritonserver_target_with_its_url_and_pid(tmp_path):
    from soak.runner.protocol import ProfileMessage
    from soak.target import make_target
    from soak.target.attached import AttachedServerTarget

    prof = parse(attach(tmp_path))
    assert prof.attached and prof.tritonserver["pid"] == 42
    target = make_target(ProfileMessage.of(prof))
    assert isinstance(target, AttachedServerTarget) and not target.writes_repositories
    assert (target.url, target.pid) == ("http://127.0.0.1:8000", 42)


def test_the_flags_attach_and_set_the_target(tmp_path):
    text = attach(tmp_path, server="").replace(TS, "")
    prof = parse(text).with_attach("127.0.0.1:8001", 7)
    assert prof.run["target"] == "tritonserver" and prof.tritonserver["url"] == "127.0.0.1:8001"
    assert prof.overrides == {"url": "127.0.0.1:8001", "pid": 7}


URL = 'url = "http://127.0.0.1:8000"\npid = 4\n'


@pytest.mark.parametrize(
    "given, expected",
    [
        ({"server": 'url = "http://10.0.0.5:8000"\npid = 4\n'}, ["tritonserver.url", "loopback"]),
        ({"server": 'url = "http://127.0.0.1"\npid = 4\n'}, ["tritonserver.url", "has no port"]),
        ({"server": 'url = "grpc://127.0.0.1:1"\npid = 4\n'}, ["grpc address but protocol"]),
        ({"server": 'url = "http://127.0.0.1:1"\n'}, ["needs tritonserver.pid"]),
        ({"server": "pid = 4\n"}, ["tritonserver.pid", "needs tritonserver.url"]),
        ({"scenario": "servers"}, ["scenario = 'servers' starts and stops servers"]),
        ({"servers": 2}, ["servers = 2: an attached server", "servers = 1"]),
        ({"matrix": '[matrix]\nprotocol = ["http", "grpc"]\n'}, ["matrix.protocol cannot vary"]),
        (
            {"scenario": "reload", "extra": "reload_new_version = true\n"},
            ["reload_new_version = true applies to the models soak writes"],
        ),
        ({"extra": 'behaviour = "error_response"\n'}, ["behaviour = 'error_response' applies"]),
        ({"server": URL + 'args = ["--log-verbose=1"]\n'}, ["tritonserver.args are flags"]),
    ],
)
def test_bad_attach_settings_are_one_line(tmp_path, given, expected):
    with pytest.raises(ProfileError) as info:
        parse(attach(tmp_path, **given), "p.toml")
    message = str(info.value)
    assert message.startswith("p.toml: ") and "\n" not in message
    for part in expected:
        assert part in message, message


def test_an_attached_server_needs_the_models_it_serves(tmp_path):
    text = TS + 'scenario = "traffic"\nservers = 1\n[tritonserver]\nurl = "127.0.0.1:1"\npid = 3\n'
    with pytest.raises(ProfileError, match="name the models it serves in models.load"):
        parse(text, "p.toml")
