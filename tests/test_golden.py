"""The read-only commands and `soak analyze` print byte for byte what they printed before the
upper floors were refactored, on a database whose every value is fixed (tests/golden.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
