"""soak.profile.loading: defaults, shipped profiles, overrides, matrix, file and TOML errors.

Pure parsing and validation: no Triton, no database, no subprocess.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from soak import profile as profiles
from soak.errors import ProfileError
from soak.profile import (
    INJECT_KEYS,
    MATRIX_KEYS,
    PROFILES_DIR,
    RUN_KEYS,
    SAMPLING_KEYS,
    SECTIONS,
    TIMEOUT_KEYS,
    default_thresholds,
    load,
    parse,
)
from soak.runner.session import check_gpu_settings
from tests.profile.helpers import SOURCE, error_of

README = PROFILES_DIR / "README.md"
SHIPPED = sorted(PROFILES_DIR.glob("*.toml"))


# -- defaults -------------------------------------------------------------------------------


def test_empty_profile_is_all_defaults():
    prof = parse("", SOURCE, "p")
    assert prof.name == "p" and prof.source == SOURCE
    assert prof.run == {k.name: k.default for k in RUN_KEYS}
    assert prof.timeouts == {k.name: k.default for k in TIMEOUT_KEYS}
    assert prof.sampling == {k.name: k.default for k in SAMPLING_KEYS}
    assert prof.inject == {k.name: k.default for k in INJECT_KEYS}
    assert prof.thresholds == default_thresholds()
    assert prof.matrix == {} and prof.cells() == [prof]
    assert prof.run["servers"] == 2 and prof.run["iterations"] == 3 and prof.run["warmup"] == 1
    assert not prof.uses_gpu


def test_given_values_replace_defaults_and_ints_widen_to_floats():
    prof = parse(
        "servers = 4\niterations = 10\n[timeouts]\nload = 5\n[sampling]\nmalloc_trim = false\n"
        "[thresholds.fds]\ntolerance = 3\n[thresholds.rss_bytes]\nenabled = false\n"
    )
    assert prof.run["servers"] == 4 and prof.run["iterations"] == 10
    assert prof.timeouts["load"] == 5.0 and isinstance(prof.timeouts["load"], float)
    assert prof.timeouts["unload"] == 60.0
    assert prof.sampling["malloc_trim"] is False
    assert prof.thresholds["fds"].tolerance == 3.0
    assert prof.thresholds["rss_bytes"].enabled is False
    assert (
        prof.thresholds["rss_bytes"].growth_budget
        == default_thresholds()["rss_bytes"].growth_budget
    )


# -- shipped profiles -----------------------------------------------------------------------


def test_profiles_are_shipped():
    assert any(p.stem == "smoke" for p in SHIPPED)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_profile_loads_and_validates(path: Path):
    prof = load(path.stem)
    assert prof.name == path.stem and Path(prof.source) == path
    assert prof.text == path.read_text(encoding="utf-8")
    assert prof.run["warmup"] < prof.run["iterations"]
    for cell in prof.cells():
        for key in RUN_KEYS:
            key.check(str(path), cell.run[key.name])
    check_gpu_settings(prof, None)  # a machine with a GPU takes every profile
    assert load(str(path)).run == prof.run  # by path as by name


def test_smoke_runs_on_a_machine_without_gpu():
    prof = load("smoke")
    assert not prof.uses_gpu
    check_gpu_settings(prof, "no GPU here")


# -- overrides ------------------------------------------------------------------------------


def test_overrides_replace_values_and_none_means_not_given():
    prof = load("smoke").with_overrides(servers=5, iterations=None, memory_type="system")
    assert prof.run["servers"] == 5
    assert prof.run["iterations"] == load("smoke").run["iterations"]
    assert prof.overrides == {"servers": 5, "memory_type": "system"}


@pytest.mark.parametrize(
    "values, expected",
    [
        ({"servers": 0}, ["--servers = 0", "out of range", "1 .. 64"]),
        ({"servers": 65}, ["--servers = 65", "1 .. 64"]),
        ({"iterations": -1}, ["--iterations = -1", "1 .. 1000000"]),
        ({"memory_type": "bogus"}, ["--memory-type = 'bogus'", "'system', 'pinned', 'gpu'"]),
        ({"servers": "3"}, ["--servers must be an integer", "'3'"]),
        ({"servers": True}, ["--servers must be an integer", "true"]),
    ],
)
def test_overrides_are_validated_and_named_after_the_flag(values, expected):
    with pytest.raises(ProfileError) as info:
        parse("", SOURCE).with_overrides(**values)
    message = str(info.value)
    for text in expected:
        assert text in message
    assert SOURCE not in message  # the flag is at fault, not the file


def test_override_leaving_no_iteration_names_file_and_flag():
    with pytest.raises(ProfileError) as info:
        parse("warmup = 2\n", SOURCE).with_overrides(iterations=2)
    message = str(info.value)
    assert f"{SOURCE} with --iterations 2" in message
    assert "warmup = 2" in message and "smaller than iterations" in message


def test_override_of_a_matrix_key_replaces_the_matrix_axis():
    prof = parse('[matrix]\nservers = [1, 2]\nmemory_type = ["system", "pinned"]\n')
    fixed = prof.with_overrides(servers=3)
    assert fixed.matrix == {"memory_type": ("system", "pinned")}
    assert [c.run["servers"] for c in fixed.cells()] == [3, 3]


# -- matrix ---------------------------------------------------------------------------------


def test_a_cell_tags_its_run_with_the_matrix_and_a_plain_run_with_nothing():
    prof = parse("servers = 2\n[matrix]\nservers = [1, 4]\n")
    assert [c.matrix_tags for c in prof.cells()] == [
        {"matrix": prof.name, "cell": {"servers": 1}},
        {"matrix": prof.name, "cell": {"servers": 4}},
    ]
    assert parse("servers = 2\n").matrix_tags == {}


def test_matrix_cells_are_the_product_in_order():
    prof = parse(
        'servers = 2\n[matrix]\nservers = [1, 4]\nmemory_type = ["system", "pinned"]\n'
        'datatype = ["int32", "fp32"]\n'
    )
    cells = prof.cells()
    assert [c.cell for c in cells] == [
        {"servers": s, "memory_type": m, "datatype": d}
        for s in (1, 4)
        for m in ("system", "pinned")
        for d in ("int32", "fp32")
    ]
    for cell in cells:
        assert cell.matrix == {}
        assert {k: cell.run[k] for k in cell.cell} == cell.cell
        assert cell.run["iterations"] == prof.run["iterations"]
    assert prof.uses_gpu  # pinned in the matrix
    assert not cells[0].uses_gpu and cells[2].uses_gpu


CLIENT_KEYS = ("streaming", "shared_memory", "load_generator")


@pytest.mark.parametrize("key", MATRIX_KEYS)
def test_every_matrix_key_can_vary(key: str):
    spec = {k.name: k for k in RUN_KEYS}[key]
    if spec.kind is bool:
        values = [False, True]
    elif spec.choices:
        values = list(spec.choices)
    elif spec.kind is str:  # triton: versions or homes
        values = ["2.43.0", "2.51.0"]
    else:
        values = [int(spec.low), int(spec.low) + 1]
    # Client settings vary only for a tritonserver process spoken to over gRPC.
    needs = 'target = "tritonserver"\nprotocol = "grpc"\n' if key in CLIENT_KEYS else ""
    prof = parse(f"{needs}[matrix]\n{key} = {json.dumps(values)}\n")
    assert [c.run[key] for c in prof.cells()] == values


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[matrix]\nservers = []\n", ["matrix.servers", "non-empty list"]),
        ("[matrix]\nservers = 2\n", ["matrix.servers", "non-empty list", "1 .. 64"]),
        ("[matrix]\nwarmup = [0, 1]\n", ["matrix.warmup cannot vary", "servers, memory_type"]),
        ("[matrix]\nservers = [2, 2]\n", ["matrix.servers", "2 more than once"]),
        ('[matrix]\nmemory_type = ["gpu", "tpu"]\n', ["matrix.memory_type = 'tpu'", "'system'"]),
        ('[matrix]\nservers = [1, "2"]\n', ["matrix.servers must be an integer", "'2'"]),
        ("matrix = 3\n", ["matrix must be a table", "got 3"]),
    ],
)
def test_bad_matrix_is_refused(text: str, expected: list[str]):
    message = error_of(text)
    assert message.startswith(SOURCE + ": ")
    for part in expected:
        assert part in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("servrs = 2\n", ["unknown key servrs", "servers", "[timeouts]"]),
        ("[extra]\nx = 1\n", ["unknown key extra", "[matrix]"]),
        ("[timeouts]\nloda = 1\n", ["unknown key timeouts.loda", "load, infer"]),
        ("[inject]\nfds = 1\n", ["unknown key inject.fds", "fds_per_iteration"]),
        ("[thresholds.rss]\nenabled = true\n", ["unknown metric thresholds.rss", "rss_bytes"]),
        ("[thresholds.fds]\nslope = 1\n", ["thresholds.fds.slope", "slope_per_iteration"]),
        ("[thresholds]\nfds = 1\n", ["thresholds.fds must be a table", "got 1"]),
        ("sampling = [1]\n", ["sampling must be a table", "a list"]),
        ("[servers]\n", ["servers must be an integer", "{}", "a table"]),
        ("[timeouts.load]\n", ["timeouts.load must be a number"]),
        ("[timeouts]\nload = inf\n", ["timeouts.load must be a finite number", "inf"]),
        ("[timeouts]\nload = nan\n", ["timeouts.load must be a finite number"]),
        ("servers = 2.0\n", ["servers must be an integer", "2.0", "a number"]),
        ("servers = false\n", ["servers must be an integer", "got false"]),
        ('"ser\\nvers" = 1\n', ["unknown key 'ser\\nvers'"]),
        ('[timeouts]\n"lo\\nad" = 1\n', ["unknown key timeouts.'lo\\nad'"]),
        ("iterations = 2\nwarmup = 2\n", ["warmup = 2", "iterations = 2", "smaller than"]),
        (f'description = "{"x" * 500}"\nservers = 0\n', ["servers = 0"]),
        ("description = [" + ", ".join(['"long"'] * 100) + "]\n", ["description", "..."]),
    ],
)
def test_error_names_file_key_and_what_is_allowed(text: str, expected: list[str]):
    message = error_of(text)
    assert message.startswith(SOURCE + ": ")
    for part in expected:
        assert part in message
    assert len(message) < 400


@pytest.mark.parametrize(
    "text, where",
    [
        ("servers = = 2\n", "line 1"),
        ('description = "open\nservers = 2\n', "line 1"),
        ("servers = 1\nservers = 2\n", "line 2"),
        ("[timeouts]\nload = 1\n[timeouts]\n", "line 3"),
        ('description = """\n\n', "end of document"),
        ("x = [1,\n2,\n", "end of document"),
    ],
)
def test_malformed_toml_is_one_line_naming_file_and_position(text: str, where: str):
    message = error_of(text)
    assert message.startswith(f"{SOURCE}: malformed TOML: ")
    assert where in message


def test_load_refuses_a_directory(tmp_path: Path):
    folder = tmp_path / "dir.toml"
    folder.mkdir()
    with pytest.raises(ProfileError, match=re.escape(f"{folder}: is a directory")):
        load(str(folder))


def test_load_refuses_non_utf8_naming_position(tmp_path: Path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'servers = 2\ndescription = "caf\xe9"\n')
    with pytest.raises(ProfileError) as info:
        load(str(path))
    assert str(info.value) == (
        f"{path}: not UTF-8 text (byte 0xe9 at line 2, column 19); profiles are TOML, "
        "which must be UTF-8"
    )


def test_load_of_an_unknown_name_lists_known_profiles():
    with pytest.raises(ProfileError) as info:
        load("no-such-profile")
    message = str(info.value)
    assert "no-such-profile: no shipped profile of that name" in message and "smoke" in message


def test_load_of_a_missing_path(tmp_path: Path):
    with pytest.raises(ProfileError, match="no such profile file"):
        load(str(tmp_path / "gone.toml"))


def test_load_names_the_file_in_errors(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text("[sampling]\ntracemalloc = 1\n")
    with pytest.raises(ProfileError) as info:
        load(str(path))
    assert str(info.value).startswith(f"{path}: sampling.tracemalloc must be true or false")


# -- properties -----------------------------------------------------------------------------


@given(st.one_of(st.integers(-(2**70), 2**70), st.integers(-5, 80)))
def test_servers_in_range_is_accepted_and_out_of_range_refused_with_the_range(servers: int):
    text = f"servers = {servers}\n"
    if 1 <= servers <= 64:
        assert parse(text).run["servers"] == servers
    else:
        message = error_of(text)
        assert f"servers = {servers} is out of range; allowed 1 .. 64" in message


def _toml_key(name: str) -> str:
    return json.dumps(name, ensure_ascii=False).replace("\x7f", "\\u007f")


@given(st.text(min_size=1, max_size=40))
def test_any_unknown_key_gives_a_one_line_error(name: str):
    known = {k.name for k in RUN_KEYS} | set(SECTIONS) | {"thresholds", "matrix", "model"}
    if name in known:
        return
    message = error_of(f"{_toml_key(name)} = 1\n")
    assert message.startswith(f"{SOURCE}: unknown key ")


def test_bare_name_is_the_shipped_profile_even_when_a_local_file_shadows_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smoke").mkdir()
    (tmp_path / "cpu").write_text("servers = 1\n")
    assert profiles.load("smoke").source == str(profiles.PROFILES_DIR / "smoke.toml")
    assert profiles.load("cpu").run["servers"] == 4  # the shipped one, not ./cpu
    assert profiles.load("./cpu").run["servers"] == 1


def test_bare_name_of_a_local_file_says_how_to_run_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").write_text("servers = 1\n")
    with pytest.raises(ProfileError, match=r"no shipped profile.*give a path: \./mine"):
        profiles.load("mine")


def test_thresholds_can_be_stated_per_unit():
    prof = parse("[thresholds.rss_bytes]\nslope_per_inference = 512\nslope_per_error = 256\n")
    rule = prof.thresholds["rss_bytes"]
    assert rule.slope_per_unit == {"inference": 512.0, "error": 256.0}
    assert rule.slope_per_iteration == default_thresholds()["rss_bytes"].slope_per_iteration
    assert default_thresholds()["uss_bytes"].slope_per_unit == {}


@pytest.mark.parametrize(
    "text, expected",
    [
        ('scenario = "traffic"\nbehaviour = "init_raises"\n', "behaviour = 'init_raises'"),
        (
            '[matrix]\nscenario = ["servers", "traffic"]\nbehaviour = ["correct", "init_raises"]\n',
            "matrix.behaviour = 'init_raises' cannot go with matrix.scenario = 'traffic'",
        ),
        ('scenario = "soak"\n', "scenario = 'soak' is not allowed"),
        ("error_fraction = 1.5\n", "error_fraction = 1.5 is out of range"),
    ],
)
def test_scenario_and_behaviour_are_checked(text, expected):
    with pytest.raises(ProfileError, match="^<string>: ") as caught:
        parse(text)
    assert expected in str(caught.value)
