"""Triton version -> wheel, pip's failures as one line, and the wheel cache that makes an
offline reinstall work."""

from __future__ import annotations

import os

import pytest

from soak.errors import EnvironmentProblem, ProfileError
from soak.triton_homes import wheels
from tests.triton_homes.fake_wheel import make_wheel


@pytest.mark.parametrize(
    ("spec", "pytriton", "expected"),
    [
        ("2.43.0", "0.5.3", "2.43.0"),
        ("2.43", "0.5.3", "2.43.0"),
        (" 2.51.0 ", "0.7.0", "2.51.0"),
        ("2.41.0", "0.5.0", "2.41.0"),
        ("pytriton==0.5.13", "0.5.13", None),
        ("nvidia-pytriton==0.2.5", "0.2.5", None),
    ],
)
def test_a_version_picks_its_wheel(spec, pytriton, expected):
    assert wheels.choose(spec) == wheels.WheelChoice(pytriton, expected)


def test_a_version_no_wheel_carries_names_the_ones_that_exist():
    with pytest.raises(ProfileError) as caught:
        wheels.choose("2.40.0")
    message = str(caught.value)
    assert "no nvidia-pytriton wheel carries Triton 2.40.0" in message
    assert "2.39.0, 2.41.0, 2.42.0, 2.43.0" in message and "\n" not in message


@pytest.mark.parametrize("spec", ["banana", "2", "pytriton=0.5.3", "2.43.0.1", ""])
def test_a_spec_that_is_no_version_says_what_is_expected(spec):
    with pytest.raises(ProfileError, match="neither a Triton version"):
        wheels.choose(spec)


def test_known_versions_are_in_version_order():
    known = wheels.known_versions()
    assert known == sorted(known, key=wheels.version_key)
    assert known[0] == "2.28.0" and known[-1] == "2.51.0"
    assert known.index("2.50.0") == known.index("2.49.0") + 1  # not "2.5" before "2.49"


def test_a_cached_wheel_is_used_without_pip(tmp_path, monkeypatch):
    wheel = make_wheel(tmp_path, pytriton="0.5.3")
    monkeypatch.setattr("subprocess.run", lambda *a, **k: pytest.fail("pip was called"))
    assert wheels.fetch("0.5.3", tmp_path) == wheel


def _offline(monkeypatch):
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "3")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")


def test_no_index_and_no_cached_wheel_is_one_line(tmp_path, monkeypatch):
    _offline(monkeypatch)
    with pytest.raises(wheels.IndexUnreachable) as caught:
        wheels.fetch("0.5.3", tmp_path / "wheels", timeout_s=120)
    message = str(caught.value)
    assert message.startswith("cannot reach the package index to fetch nvidia-pytriton==0.5.3")
    assert str(tmp_path / "wheels") in message and "\n" not in message


def test_an_unknown_release_names_the_releases_pip_offers():
    output = (
        "ERROR: Could not find a version that satisfies the requirement "
        "nvidia-pytriton==9.9.9 (from versions: 0.1.4, 0.5.3, 0.7.0)\n"
        "ERROR: No matching distribution found for nvidia-pytriton==9.9.9\n"
    )
    problem = wheels._pip_failure("9.9.9", output, wheels.Path("/w"))
    assert type(problem) is EnvironmentProblem
    assert str(problem) == (
        "pip has no nvidia-pytriton==9.9.9 for this machine (it offers: 0.1.4, 0.5.3, 0.7.0)"
    )


def test_another_pip_failure_keeps_its_last_line():
    problem = wheels._pip_failure("0.5.3", "Collecting x\nERROR: disk full\n", wheels.Path("/w"))
    assert str(problem) == "pip could not fetch nvidia-pytriton==0.5.3: ERROR: disk full"
