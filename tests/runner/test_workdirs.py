"""Temp folders of runs whose supervisor died (SIGKILL during --attribute) are removed by the
next soak run; nothing else is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from soak.runner import workdirs

ROOT = Path(__file__).resolve().parents[2]


def dead_owner() -> dict:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    create_time = psutil.Process(proc.pid).create_time()
    proc.wait()
    return {"pid": proc.pid, "create_time": create_time}


def folder(base: Path, name: str, owner: dict | None) -> Path:
    path = base / name
    (path / "sub").mkdir(parents=True)
    (path / "sub" / "capture.bin").write_bytes(b"x" * 1024)
    if owner is not None:
        (path / workdirs.MARKER).write_text(json.dumps(owner))
    return path


def test_only_soak_folders_of_dead_supervisors_go(tmp_path):
    me = psutil.Process()
    dead = folder(tmp_path, "soak-run3-abc", dead_owner())
    alive = folder(tmp_path, "soak-run4-def", {"pid": me.pid, "create_time": me.create_time()})
    reused = folder(tmp_path, "soak-run5-ghi", {"pid": me.pid, "create_time": 1.0})
    unmarked = folder(tmp_path, "soak-run6-jkl", None)
    other = folder(tmp_path, "other-run7", dead_owner())
    assert sorted(workdirs.remove_abandoned(str(tmp_path))) == [dead, reused]
    assert not dead.exists() and not reused.exists()
    assert alive.exists() and unmarked.exists() and other.exists()


@pytest.mark.e2e
def test_the_next_run_removes_an_abandoned_capture_folder(tmp_path):
    work = tmp_path / "tmp"
    work.mkdir()
    abandoned = folder(work, "soak-run1-xyz", dead_owner())
    env = {**os.environ, "TMPDIR": str(work)}
    proc = subprocess.run(
        [sys.executable, "-m", "soak.cli", "run", "smoke", "--iterations", "2"]
        + ["--db", str(tmp_path / "r.db"), "--no-progress"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    assert not abandoned.exists()
    assert not [p for p in work.iterdir() if p.name.startswith("soak-run")]  # its own went too
