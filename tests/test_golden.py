"""The read-only commands and `soak analyze` print byte for byte what they printed before the
upper floors were refactored, on a database whose every value is fixed (tests/golden.py); a
real `soak run` prints the same lines apart from measured numbers."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.e2e import soak
from tests.golden import COMMANDS, GOLDEN, outputs


@pytest.fixture(scope="module")
def printed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return outputs(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("name", list(COMMANDS))
def test_output_is_unchanged(printed: dict[str, str], name: str) -> None:
    expected = (GOLDEN / name).read_text()
    assert printed[name] == expected, f"soak {' '.join(COMMANDS[name])} changed its output"


def test_every_pinned_output_is_checked() -> None:
    assert sorted(p.name for p in Path(GOLDEN).iterdir()) == sorted(COMMANDS)


def masked(text: str) -> str:
    """Measured numbers (and their signs) as N, and the phase timings of an iteration line
    (a phase that took 0 s is left out of it) as '...': what is left must not change."""
    text = re.sub(r"(?m)^(iteration .*?) \| .*$", r"\1 | ...", text)
    return re.sub(r"[+-]?[0-9]+(\.[0-9]+)?", "N", text)


@pytest.mark.e2e
def test_a_real_run_prints_the_same_lines_apart_from_numbers(tmp_path: Path) -> None:
    """`soak run smoke` (real Triton) as captured before the refactor, digits masked."""
    env = {**os.environ, "TZ": "UTC", "COLUMNS": "160"}
    args = ["run", "smoke", "--iterations", "4", "--no-progress", "--db", "r.db"]
    proc = soak(*args, "--junit", "r.xml", cwd=tmp_path, env=env)
    printed = masked(f"{proc.stdout}{proc.stderr}exit {proc.returncode}\n")
    assert printed == (GOLDEN.parent / "golden_run" / "smoke.txt").read_text()


def test_the_old_json_flag_still_writes_the_findings_file(tmp_path: Path) -> None:
    """`--json FILE` (the name before --json-file) keeps CI jobs written for it working."""
    from tests.golden import build, run_cli

    db = tmp_path / "soak.db"
    build(db)
    code, text = run_cli(db, ["report", "2", "--json", str(tmp_path / "old.json")])
    assert code == 0, text
    assert "--json FILE is now --json-file FILE" in text
    code, _ = run_cli(db, ["report", "2", "--json-file", str(tmp_path / "new.json")])
    assert code == 0
    assert (tmp_path / "old.json").read_text() == (tmp_path / "new.json").read_text()
