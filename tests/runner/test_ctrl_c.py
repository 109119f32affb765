"""A real Ctrl-C: SIGINT to the whole foreground process group, so the worker and the stubs
get it too, mid-iteration. The run ends interrupted with its data, and leaves no stub process
and no shm region, whichever processes the signal reached.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.e2e import query, reaped, wait_for_iterations
from tests.runner.test_faults import start_soak, track, write_profile  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e


def two_servers(tmp_path):
    """Two servers, so that two stubs and two regions are up mid-iteration."""
    path = write_profile(tmp_path, iterations=60, inferences=4)
    path.write_text(path.read_text().replace("servers = 1", "servers = 2"))
    return path


@pytest.mark.parametrize("profile", ["two-servers", "smoke"])
@pytest.mark.parametrize("into_s", [0.3, 2.0])
def test_sigint_to_the_process_group_mid_iteration_leaves_nothing(tmp_path, track, into_s, profile):  # noqa: F811
    db = tmp_path / "r.db"
    profile = two_servers(tmp_path) if profile == "two-servers" else profile
    proc = start_soak(track, profile, db, log=tmp_path / "log", start_new_session=True)
    with reaped(proc):
        wait_for_iterations(db, 1, proc)
        time.sleep(into_s)  # into the next iteration: its servers and stubs are up
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=120)
    log = (tmp_path / "log").read_text()
    assert code in (1, 3), log
    ((status,),) = query(db, "SELECT status FROM runs")
    assert status == "interrupted", log
    track.check()


def iterations_done(db) -> int:
    try:
        return query(db, "SELECT count(*) FROM iterations")[0][0] if db.exists() else 0
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_sigint_to_the_process_group_in_the_first_iteration_leaves_nothing(tmp_path, track):  # noqa: F811
    """Before any quiet point: the first iteration's stubs are starting or up."""
    db = tmp_path / "r.db"
    proc = start_soak(
        track, two_servers(tmp_path), db, log=tmp_path / "log", start_new_session=True
    )
    with reaped(proc):
        deadline = time.monotonic() + 60
        while not track.new_stubs() and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "log").read_text()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=120)
    assert code in (1, 3), (tmp_path / "log").read_text()
    track.check()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_ctrl_c_in_a_real_terminal_leaves_nothing(tmp_path, track):  # noqa: F811
    db = tmp_path / "r.db"
    profile = two_servers(tmp_path)
    session = f"soak-ctrl-c-{os.getpid()}"
    log = tmp_path / "log"
    env = " ".join(
        f"{k}={v}"
        for k, v in {"TMPDIR": track.work, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}.items()
    )

    command = (
        f"cd {os.getcwd()} && env {env} {sys.executable} -m soak.cli run {profile} --db {db} "
        f"--no-progress > {log} 2>&1; echo $? > {tmp_path / 'rc'}"
    )
    subprocess.run(["tmux", "new-session", "-d", "-s", session, command], check=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not iterations_done(db):
            time.sleep(0.1)
        time.sleep(1.0)
        subprocess.run(["tmux", "send-keys", "-t", session, "C-c"], check=True)
        rc = tmp_path / "rc"
        deadline = time.monotonic() + 120
        while not rc.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rc.read_text().strip() in ("1", "3"), log.read_text()
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    ((status,),) = query(db, "SELECT status FROM runs")
    assert status == "interrupted"
    track.check()
