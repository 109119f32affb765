"""What is left of a worker: its output's tail, its process tree."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil

from soak.runner import teardown


def test_tail_keeps_the_end_of_the_output(tmp_path: Path):
    out = tmp_path / "worker.log"
    out.write_bytes(b"start\n" + b"x" * 50 + b"\nthe end\n")
    assert teardown.tail(out, limit=10) == "x\nthe end"
    assert teardown.tail(tmp_path / "none.log") == ""


def test_kill_tree_ends_the_worker_and_its_children():
    code = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 10
        while not psutil.Process(proc.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        (child,) = psutil.Process(proc.pid).children()
        teardown.kill_tree(proc)
        assert proc.poll() is not None
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
