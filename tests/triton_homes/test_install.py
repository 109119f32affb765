"""Installing, listing and removing homes in a cache, on a fake wheel whose library answers
through a stand-in probe (the real library is tested in test_real_install.py)."""

from __future__ import annotations

import pytest

from soak import triton_homes
from soak.errors import EnvironmentProblem, ProfileError
from soak.triton.probe import ProbedCore
from tests.triton_homes.fake_wheel import make_wheel


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty $SOAK_CACHE whose wheels folder holds fake 0.5.3 and 0.5.13 wheels."""
    monkeypatch.setenv(triton_homes.ENV_CACHE, str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "triton" / "wheels"
    folder.mkdir(parents=True)
    make_wheel(folder, pytriton="0.5.3", pythons=("3.10", "3.11"))
    make_wheel(folder, pytriton="0.5.13", pythons=("3.8",))
    return tmp_path / "cache" / "triton"


def answers(monkeypatch, version: str, missing: tuple[str, ...] = ()) -> list:
    probed = []

    def probe(home):
        probed.append(home)
        return ProbedCore(version, (1, 28), (), missing)

    monkeypatch.setattr("soak.triton_homes.probe", probe)
    return probed


def test_install_files_the_home_under_the_version_it_reports(cache, monkeypatch):
    probed = answers(monkeypatch, "2.43.0")
    home = triton_homes.install("2.43.0")
    assert home.path == cache / "2.43.0" and (home.path / "lib/libtritonserver.so").exists()
    assert home.pytriton == "0.5.3" and home.stub_pythons == ("3.10", "3.11")
    assert home.size_bytes > 0 and home.problems() == []
    assert len(probed) == 1 and probed[0] != home.path  # probed before it was filed
    assert {p.name for p in cache.iterdir()} == {"2.43.0", "wheels"}
    assert triton_homes.install("2.43") == home and len(probed) == 1  # already there
    assert triton_homes.installed_home("2.43.0") == home.path


def test_a_wheel_that_carries_another_version_is_not_filed(cache, monkeypatch):
    answers(monkeypatch, "2.42.0")
    with pytest.raises(EnvironmentProblem, match=r"carries Triton 2.42.0, not 2.43.0"):
        triton_homes.install("2.43.0")
    assert {p.name for p in cache.iterdir()} == {"wheels"}  # no staging folder left


def test_a_named_wheel_is_filed_under_what_its_library_says(cache, monkeypatch):
    answers(monkeypatch, "2.51.0", missing=("TRITONSERVER_Something",))
    home = triton_homes.install("pytriton==0.5.13")
    assert home.triton_version == "2.51.0" and home.path == cache / "2.51.0"
    problems = home.problems()
    assert len(problems) == 2
    assert "no python backend stub for Python" in problems[0] and "(it has 3.8)" in problems[0]
    assert "python models cannot be served with this Python" in problems[0]
    assert "lacks TRITONSERVER_Something" in problems[1]


def test_list_and_remove(cache, monkeypatch):
    answers(monkeypatch, "2.43.0")
    triton_homes.install("2.43.0")
    answers(monkeypatch, "2.51.0")
    triton_homes.install("pytriton==0.5.13")
    assert [h.triton_version for h in triton_homes.list_homes()] == ["2.43.0", "2.51.0"]
    removed = triton_homes.remove("2.43")
    assert removed.triton_version == "2.43.0" and not removed.path.exists()
    assert not (cache / "wheels" / removed.wheel).exists()
    assert [h.triton_version for h in triton_homes.list_homes()] == ["2.51.0"]
    with pytest.raises(ProfileError, match=r"Triton 2.43.0 is not installed \(installed: 2.51.0\)"):
        triton_homes.remove("2.43.0")
    with pytest.raises(ProfileError, match="run: soak triton install 2.43.0"):
        triton_homes.installed_home("2.43.0")


def test_a_folder_without_a_record_is_not_a_home(cache, monkeypatch):
    (cache / "2.43.0").mkdir()  # an interrupted install of an older soak, say
    assert triton_homes.list_homes() == []
    answers(monkeypatch, "2.43.0")
    assert triton_homes.install("2.43.0").path == cache / "2.43.0"


def test_a_cache_that_is_a_file_is_named(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(triton_homes.ENV_CACHE, str(tmp_path / "file"))
    with pytest.raises(EnvironmentProblem, match=r"^\$SOAK_CACHE \(.*file\) cannot hold"):
        triton_homes.cache_root()


def test_a_profile_value_is_a_path_or_an_installed_version(cache, monkeypatch):
    assert triton_homes.resolve("/opt/tritonserver") == triton_homes.Path("/opt/tritonserver")
    assert triton_homes.resolve("~/t") == triton_homes.Path.home() / "t"
    with pytest.raises(ProfileError, match="Triton 2.43.0 is not installed"):
        triton_homes.resolve("2.43.0")
    answers(monkeypatch, "2.43.0")
    triton_homes.install("2.43.0")
    assert triton_homes.resolve("2.43") == cache / "2.43.0"
