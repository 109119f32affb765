"""soak.runner.triton_choice: a profile's `triton` (its own, a matrix axis, --triton) becomes
the triton_home a run uses; a version neither installed nor the default core's is one line."""

from __future__ import annotations

import pytest

from soak.errors import ProfileError
from soak.profile import parse
from soak.runner import triton_choice
from soak.triton_homes import default_version


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SOAK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SOAK_TRITON_HOME", raising=False)


def test_the_default_cores_version_needs_no_install():
    version = default_version()
    prof = parse(f'triton = "{version}"\n')
    triton_choice.check(prof)
    assert triton_choice.resolved(prof).run["triton_home"] == ""
    assert triton_choice.home_column(triton_choice.resolved(prof)).endswith("tritonserver")


def test_a_path_is_the_home(tmp_path):
    prof = parse(f'triton = "{tmp_path}/home"\n')
    assert triton_choice.resolved(prof).run["triton_home"] == f"{tmp_path}/home"


def test_a_version_not_installed_is_one_line_naming_the_axis():
    prof = parse(f'[matrix]\ntriton = ["1.0.0", "{default_version()}"]\n', "p.toml")
    with pytest.raises(ProfileError) as err:
        triton_choice.check(prof)
    message = str(err.value)
    assert message.startswith("p.toml: matrix.triton = '1.0.0': Triton 1.0.0 is not installed")
    assert "run: soak triton install 1.0.0" in message and "\n" not in message


def test_two_triton_flags_make_a_matrix_axis_one_sets_the_key():
    prof = parse('[matrix]\nbehaviour = ["correct", "execute_raises"]\ntriton = ["2.0.0"]\n')
    two = prof.with_tritons(("2.43.0", "2.51.0"))
    assert [c.cell for c in two.cells()] == [
        {"behaviour": b, "triton": t}
        for b in ("correct", "execute_raises")
        for t in ("2.43.0", "2.51.0")
    ]
    one = prof.with_tritons(("2.43.0",))
    assert "triton" not in one.matrix and one.run["triton"] == "2.43.0"
    with pytest.raises(ProfileError, match="--triton names 2.43.0, 2.43.0"):
        prof.with_tritons(("2.43.0", "2.43.0"))


def test_triton_and_triton_home_together_are_refused():
    with pytest.raises(ProfileError, match="triton and triton_home both"):
        parse('triton = "2.43.0"\ntriton_home = "/opt/t"\n')


def test_soak_run_with_a_triton_not_installed_is_one_line_and_no_run(tmp_path):
    from click.testing import CliRunner

    from soak.cli import main

    db = tmp_path / "r.db"
    result = CliRunner().invoke(
        main, ["run", "smoke", "--triton", "1.0.0", "--triton", "2.0.0", "--db", str(db)]
    )
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("soak: error: ") and "--triton = '1.0.0'" in line
    assert "run: soak triton install 1.0.0" in line
    assert not db.exists()
