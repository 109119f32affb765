"""The version probe of a home, in a child process: what it says when the library is no core
(the real core is probed in tests/triton_homes/test_real_install.py)."""

from __future__ import annotations

import pytest

from soak.errors import EnvironmentProblem
from soak.triton.probe import probe
from soak.triton_homes import layout
from tests.triton_homes.fake_wheel import make_wheel


def test_a_home_whose_library_is_no_core_says_so_in_one_line(tmp_path):
    home = tmp_path / "home"
    layout.unpack(make_wheel(tmp_path), home, "3.11")
    with pytest.raises(EnvironmentProblem) as caught:
        probe(home)
    message = str(caught.value)
    assert message.startswith(f"the Triton library of {home} does not load: cannot load ")
    assert "libtritonserver.so" in message and "\n" not in message


def test_a_folder_that_is_no_home_is_named(tmp_path):
    with pytest.raises(EnvironmentProblem, match=r"does not load: no Triton library at"):
        probe(tmp_path)
