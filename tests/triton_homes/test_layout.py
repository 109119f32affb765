"""A wheel laid out as a Triton home: where each part goes, what is left out, the stubs."""

from __future__ import annotations

import pytest

from soak.errors import EnvironmentProblem
from soak.triton import capi
from soak.triton.backends import STUB_EXECUTABLE, find_stub
from soak.triton_homes import layout
from tests.triton_homes.fake_wheel import make_wheel


def test_wheel_becomes_a_home_capi_can_locate(tmp_path):
    home = tmp_path / "home"
    layout.unpack(make_wheel(tmp_path), home, "3.11")

    lib = home / "lib" / "libtritonserver.so"
    assert lib.is_symlink() and lib.resolve() == home / "lib" / "libtritonserver-abc123.so"
    assert (home / "lib" / "libcurl-def456.so.4").read_bytes() == b"curl"
    assert (home / "backends/python/libtriton_python.so").is_file()
    assert (home / "backends/python/triton_python_backend_utils.py").is_file()
    assert b"libpython3.11" in (home / "backends/python" / STUB_EXECUTABLE).read_bytes()
    assert (home / "bin/tritonserver").stat().st_mode & 0o777 == 0o755
    assert (home / "lib/libtritonserver-abc123.so").stat().st_mode & 0o777 == 0o644
    assert (home / "caches/local/libtritoncache_local.so").is_file()
    assert not (home / "pytriton").exists()
    assert layout.stub_pythons(home) == ("3.10", "3.11")

    install = capi.locate(home)
    assert install.library == lib and install.stubs_dir == home / "python_backend_stubs"


def test_the_stub_of_the_running_python_is_found_in_the_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    layout.unpack(make_wheel(tmp_path, pythons=("3.10",)), home, "3.11")
    assert not (home / "backends/python" / STUB_EXECUTABLE).exists()
    monkeypatch.setattr("soak.triton.backends.python_version", lambda: "3.10")
    assert find_stub(capi.locate(home)) == home / "python_backend_stubs/3.10" / STUB_EXECUTABLE
    monkeypatch.setattr("soak.triton.backends.python_version", lambda: "3.12")
    with pytest.raises(EnvironmentProblem, match=r"no python backend stub for Python 3.12 .*3.10"):
        find_stub(capi.locate(home))


def test_a_single_backend_stub_is_filed_under_the_python_it_links(tmp_path):
    home = tmp_path / "home"
    layout.unpack(make_wheel(tmp_path, pythons=(), single_stub="3.8"), home, "3.11")
    assert layout.stub_pythons(home) == ("3.8",)
    assert not (home / "backends/python" / STUB_EXECUTABLE).exists()


def test_stub_pythons_sort_as_versions(tmp_path):
    home = tmp_path / "home"
    layout.unpack(make_wheel(tmp_path, pythons=("3.9", "3.13", "3.10")), home, "3.9")
    assert layout.stub_pythons(home) == ("3.9", "3.10", "3.13")


def test_a_wheel_without_a_core_is_refused_before_anything_is_written(tmp_path):
    home = tmp_path / "home"
    with pytest.raises(EnvironmentProblem, match="has no libtritonserver"):
        layout.unpack(make_wheel(tmp_path, core=False), home, "3.11")
    assert not home.exists()


def test_a_file_that_is_no_zip_is_named(tmp_path):
    bad = tmp_path / "nvidia_pytriton-0.5.3-py3-none-any.whl"
    bad.write_text("not a zip")
    with pytest.raises(EnvironmentProblem, match="is not a readable wheel"):
        layout.unpack(bad, tmp_path / "home", "3.11")


def test_size_counts_files_not_links(tmp_path):
    home = tmp_path / "home"
    layout.unpack(make_wheel(tmp_path), home, "3.11")
    files = [p for p in home.rglob("*") if p.is_file() and not p.is_symlink()]
    assert layout.size_bytes(home) == sum(p.stat().st_size for p in files)
    assert layout.size_bytes(home) < sum(p.stat().st_size for p in home.rglob("*") if p.is_file())
