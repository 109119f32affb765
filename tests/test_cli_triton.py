"""`soak triton install|list|remove`: what each prints, and bad input as one error line."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from soak import triton_homes
from soak.cli import main
from soak.triton.probe import ProbedCore
from tests.triton_homes.fake_wheel import make_wheel


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(triton_homes.ENV_CACHE, str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "triton" / "wheels"
    folder.mkdir(parents=True)
    make_wheel(folder, pytriton="0.5.3", pythons=("3.8",))
    monkeypatch.setattr(
        "soak.triton_homes.probe", lambda home: ProbedCore("2.43.0", (1, 28), (), ())
    )
    monkeypatch.setattr("soak.triton_homes.python_version", lambda: "3.11")
    return tmp_path / "cache" / "triton"


def soak(*args: str):
    return CliRunner().invoke(main, list(args))


def test_install_prints_the_home_and_warns_about_a_missing_stub(cache):
    result = soak("triton", "install", "2.43.0")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{cache / '2.43.0'}\n"
    assert result.stderr == (
        "soak: warning: Triton 2.43.0 has no python backend stub for Python 3.11 (it has 3.8):"
        " python models cannot be served with this Python\n"
    )


def test_list_shows_version_size_stubs_and_path(cache):
    assert soak("triton", "list").stdout == f"no Triton installed in {cache}\n"
    soak("triton", "install", "2.43.0")
    lines = soak("triton", "list").stdout.splitlines()
    assert lines[0].split() == ["triton", "pytriton", "size", "python", "stubs", "path"]
    size = json.loads(soak("triton", "list", "--json").stdout)[0]["size_bytes"]
    assert lines[1].split()[:4] == ["2.43.0", "0.5.3", str(size), "B"]
    assert "3.8 (not this Python)" in lines[1] and lines[1].endswith(str(cache / "2.43.0"))
    rows = json.loads(soak("triton", "list", "--json").stdout)
    assert [(r["triton_version"], r["stub_pythons"], r["serves_this_python"]) for r in rows] == [
        ("2.43.0", ["3.8"], False)
    ]


def test_remove_says_what_it_removed(cache):
    soak("triton", "install", "2.43.0")
    result = soak("triton", "remove", "2.43.0")
    assert (
        result.exit_code == 0 and result.stdout == f"removed Triton 2.43.0 ({cache / '2.43.0'})\n"
    )
    assert json.loads(soak("triton", "list", "--json").stdout) == []


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ("install", "2.40.0"),
            "soak: error: no nvidia-pytriton wheel carries Triton 2.40.0; versions that exist: ",
        ),
        (("install", "latest"), "soak: error: 'latest' is neither a Triton version"),
        (("remove", "2.43.0"), "soak: error: Triton 2.43.0 is not installed (installed: none)"),
        (("install",), "soak: error: Missing argument 'VERSION'."),
    ],
)
def test_bad_input_is_one_error_line(cache, args, line):
    result = soak("triton", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(line) and result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_a_bad_cache_folder_is_one_error_line(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(triton_homes.ENV_CACHE, str(tmp_path / "file"))
    result = soak("triton", "list")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"soak: error: $SOAK_CACHE ({tmp_path / 'file'}) cannot hold")
    assert result.stderr.count("\n") == 1
