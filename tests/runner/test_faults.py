"""The fault suite: what soak does when things break, end to end on the real Triton core.

Every test runs `python -m soak.cli run PROFILE --db DB --no-progress` as a subprocess and
breaks one thing: the worker dies by a signal in a given phase, a phase hangs, the supervisor
is killed, two runs share one database, the database cannot be written (from the start, or
once a file size limit is reached mid-run), the model repository disappears, a model answers
wrongly now and then, the Triton library is missing or is no libtritonserver.

Faults come in through the worker's `SOAK_FAULT=phase:action[:iteration]` hook (see
soak/runner/worker.py): a signal, `hang`, `rmrepo` or a model behaviour, at the start of that
phase in that (0-based) iteration. Each run's work folder is put under the test's tmp_path
(TMPDIR), so its stubs are told apart from any other soak on the machine by their command
line; each test ends by checking that it left no stub process and no shm region behind.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from soak import triage
from soak.profile import CLIENT_METRICS, default_thresholds
from soak.sampling.procfs import descendant_pids
from soak.sampling.waiting import wait_ended
from soak.store import open_readonly
from tests.conftest import REGION_PREFIX, SHM, all_stubs, shm_regions, stub_processes
from tests.e2e import SOAK_CLI, query, reaped, soak, wait_for_iterations

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e

#: The watchdog must end a hung phase within its timeout plus this (the issue's bound).
HANG_SLACK_S = 5.0
REGION_RE = re.compile(re.escape(REGION_PREFIX) + r"[A-Za-z0-9_.\-]+")

#: One server, few inferences, no objgraph: a short iteration (~1.5 s, mostly the unload).
PROFILE = """
servers = 1
iterations = {iterations}
warmup = 1
inferences_per_model = {inferences}
[timeouts]
{timeouts}
[sampling]
{sampling}
"""


def write_profile(
    tmp_path: Path,
    iterations: int = 3,
    inferences: int = 2,
    timeouts: str = "",
    sampling: str = "objgraph_every = 0",
    extra: str = "",
) -> Path:
    path = tmp_path / "p.toml"
    text = PROFILE.format(
        iterations=iterations, inferences=inferences, timeouts=timeouts, sampling=sampling
    )
    path.write_text(extra + text)
    return path


def workdir(tmp_path: Path) -> Path:
    """TMPDIR of the soak processes: the run's work folder, and so its stubs, live under it."""
    path = tmp_path / "tmp"
    path.mkdir(exist_ok=True)
    return path


def soak_env(work: Path, env: dict | None = None) -> dict:
    out = {**os.environ, "TMPDIR": str(work), "COLUMNS": "200"}
    for key in ("SOAK_FAULT", "SOAK_STUB", "SOAK_TRITON_HOME"):
        out.pop(key, None)
    return {**out, **(env or {})}


def run_soak(
    track: Tracker,
    profile: Path,
    db: Path,
    *args: str,
    env: dict | None = None,
    timeout: float = 180,
    **popen,
) -> subprocess.CompletedProcess:
    proc = start_soak(
        track, profile, db, *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen
    )
    with reaped(proc):
        stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def start_soak(
    track: Tracker,
    profile: Path,
    db: Path,
    *args: str,
    log: Path | None = None,
    env: dict | None = None,
    **popen,
) -> subprocess.Popen:
    """`soak run PROFILE --db DB --no-progress ARGS`, its work folder under the test's."""
    if log is not None:
        sink = log.open("w")
        popen.update(stdout=sink, stderr=subprocess.STDOUT)
    try:
        proc = subprocess.Popen(
            [*SOAK_CLI, "run", str(profile), "--db", str(db), "--no-progress", *args],
            cwd=ROOT,
            text=True,
            env=soak_env(track.work, env),
            **popen,
        )
    finally:
        if log is not None:
            sink.close()
    track.watch(proc.pid)
    return proc


def soak_cli(*args: str) -> subprocess.CompletedProcess:
    return soak(*args, timeout=120, env={**os.environ, "COLUMNS": "200"})


def output(proc: subprocess.CompletedProcess) -> str:
    return f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


# -- leftovers: only this test's, whatever else runs on the machine ----------------------------


def _cmdline(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


class Tracker:
    """What this test's soak runs start, told apart from any other soak on the machine.

    A stub of this test names the test's work folder in its command line; the regions it
    names there are this test's. A watcher thread reads the command lines of the soak
    processes' descendants every 50 ms (cheap: /proc/<pid>/task/*/children), so it knows
    every stub and region even after a killed worker's stubs have gone. New regions that no
    stub of this test named count too, unless another soak's stubs ran meanwhile (then they
    may be its).
    """

    def __init__(self, tmp_path: Path) -> None:
        self.work = workdir(tmp_path)
        self.stubs_before = stub_processes()
        self.regions_before = shm_regions()
        self.regions: set[str] = set()
        self.foreign = False
        self._roots: list[int] = []
        self._stop = threading.Event()
        self._scan()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def watch(self, pid: int) -> None:
        self._roots.append(pid)

    def mine(self, pid: int) -> bool:
        return any(str(self.work) in arg for arg in _cmdline(pid))

    def _watch(self) -> None:
        rounds = 0
        while not self._stop.wait(0.05):
            for root in list(self._roots):
                for pid in descendant_pids(root):
                    args = " ".join(_cmdline(pid))
                    if str(self.work) in args:
                        self.regions.update(REGION_RE.findall(args))
            rounds += 1
            if rounds % 10 == 0:
                self._scan()

    def _scan(self) -> None:
        if any(not self.mine(p.pid) for p in all_stubs()):
            self.foreign = True

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def new_stubs(self) -> set[int]:
        return {pid for pid in stub_processes() - self.stubs_before if self.mine(pid)}

    def new_regions(self) -> set[str]:
        """Regions of this test's stubs still present, and unknown new ones (see above)."""
        now = shm_regions()
        unknown = set() if self.foreign else now - self.regions_before
        return (now & self.regions) | unknown

    def check(self) -> None:
        """Checked as soon as soak has exited: its supervisor must have cleaned up already."""
        self.stop()
        self._scan()
        stubs, regions = self.new_stubs(), self.new_regions()
        assert not stubs and not regions, (
            f"left behind stubs {sorted(stubs)}, regions {sorted(regions)}"
        )


@pytest.fixture
def track(tmp_path):
    tracker = Tracker(tmp_path)
    yield tracker
    tracker.stop()


def events(db: Path, run_id: int = 1) -> dict[str, int]:
    return dict(
        query(db, "SELECT kind, count(*) FROM events WHERE run_id = ? GROUP BY kind", run_id)
    )


def assert_committed_iterations_complete(db: Path, run_id: int = 1) -> int:
    """iterations rows == quiet samples == runs.iterations_done, numbered 0..n-1."""
    ((done,),) = query(db, "SELECT iterations_done FROM runs WHERE id = ?", run_id)
    rows = query(db, "SELECT iteration FROM iterations WHERE run_id = ? ORDER BY 1", run_id)
    its = [i for (i,) in rows]
    rows = query(
        db, "SELECT iteration FROM samples WHERE run_id = ? AND kind = 'quiet' ORDER BY 1", run_id
    )
    quiet = [i for (i,) in rows]
    assert its == quiet == list(range(done)), (its, quiet, done)
    return done


# -- the worker dies by a signal ----------------------------------------------------------------


def no_core_dumps() -> None:
    """A SIGSEGV/SIGABRT worker would dump a core of ~100 MB where `ulimit -c` allows it."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@pytest.mark.parametrize("phase", ["load", "infer", "unload", "delete"])
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGSEGV", "SIGABRT"])
def test_worker_killed_by_a_signal_in_a_phase(tmp_path, track, sig, phase):
    db = tmp_path / "r.db"
    proc = run_soak(
        track,
        write_profile(tmp_path),
        db,
        env={"SOAK_FAULT": f"{phase}:{sig}:1"},
        preexec_fn=no_core_dumps,
    )
    assert proc.returncode == 2, output(proc)
    assert "Traceback" not in proc.stdout + proc.stderr
    ((status, reason, ended),) = query(db, "SELECT status, reason, ended_at FROM runs")
    assert status == "crashed" and sig in reason and ended is not None, reason
    # The fault is in iteration 1: iteration 0 is committed, and nothing of iteration 1 is.
    assert assert_committed_iterations_complete(db) == 1
    kinds = events(db)
    assert kinds.get("signal") == 1, kinds
    assert not {"crash", "hang", "error"} & set(kinds), kinds
    ((message,),) = query(db, "SELECT message FROM events WHERE kind = 'signal'")
    assert f"killed by {sig}" in message
    assert f"'phase': '{phase}'" in message  # the worker's output says where it was hit
    if sig != "SIGKILL":  # faulthandler: every Python thread's stack at the fatal signal
        assert "Fatal Python error" in message and "most recent call first" in message, message
    assert query(db, "SELECT count(*) FROM findings")[0][0] > 0  # analysed what it had
    assert f"run 1: crashed: worker killed by {sig}" in proc.stdout
    track.check()


# -- hangs: the watchdog ------------------------------------------------------------------------

HANG_TIMEOUTS = "server_new = 2.0\nload = 3.0\ninfer = 2.0"
HANGS = {
    # kind: (SOAK_FAULT, phase, timeout of that phase, a frame the stack dump must show)
    "server_new": ("server_new:hang:1", "server_new", 2.0, "trigger_fault"),
    # A real hanging load: the model's initialize sleeps for an hour (Behaviour.INIT_HANGS).
    "load_init_hangs": ("load:init_hangs:1", "load", 3.0, "load_model"),
    "infer": ("infer:hang:1", "infer", 2.0, "trigger_fault"),
}


@pytest.mark.parametrize("kind", list(HANGS))
def test_watchdog_ends_a_hang_within_its_timeout(tmp_path, track, kind):
    fault, phase, timeout_s, frame = HANGS[kind]
    db = tmp_path / "r.db"
    proc = run_soak(
        track, write_profile(tmp_path, timeouts=HANG_TIMEOUTS), db, env={"SOAK_FAULT": fault}
    )
    assert proc.returncode == 2, output(proc)
    ((status, reason, run_ended),) = query(db, "SELECT status, reason, ended_at FROM runs")
    assert status == "hung" and f"phase {phase}" in reason and "iteration 2" in reason, reason
    assert assert_committed_iterations_complete(db) == 1
    # The hung phase began after iteration 0's quiet point (its row's ended_at) was taken; so
    # measuring from there overstates the time from the phase's start (by the phases before
    # it in iteration 1: milliseconds, or one model load for infer).
    ((phase_start,),) = query(db, "SELECT ended_at FROM iterations WHERE iteration = 0")
    ((hang_t, hang_phase),) = query(db, "SELECT t, phase FROM events WHERE kind = 'hang'")
    assert hang_phase == phase
    detected, ended = hang_t - phase_start, run_ended - phase_start
    print(
        f"\n{kind}: timeout {timeout_s:g} s, hang recorded {detected - timeout_s:+.2f} s and "
        f"run ended {ended - timeout_s:+.2f} s after the timeout"
    )
    assert detected >= timeout_s  # not before the timeout (give or take the phases before it)
    assert ended <= timeout_s + HANG_SLACK_S, f"ended {ended:.2f} s after the phase began"
    dumps = query(db, "SELECT message, phase FROM events WHERE kind = 'stack_dump'")
    assert len(dumps) == 1 and dumps[0][1] == phase
    assert "Thread" in dumps[0][0] and frame in dumps[0][0], dumps[0][0][:2000]
    track.check()


# -- the supervisor is killed ----------------------------------------------------------------------


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _kill_orphans(worker_pid: int, started_after: float, track: Tracker) -> None:
    """Kill the orphaned worker (if it is still ours) and its stubs; remove their regions."""
    victims: list[psutil.Process] = []
    regions: set[str] = set()
    try:
        worker = psutil.Process(worker_pid)
        if worker.create_time() >= started_after - 1:
            victims = [worker, *_descendants(worker_pid)]
    except psutil.Error:
        pass
    victims += [psutil.Process(pid) for pid in track.new_stubs() if psutil.pid_exists(pid)]
    for p in victims:
        try:
            regions.update(REGION_RE.findall(" ".join(p.cmdline())))
            p.kill()
        except psutil.Error:
            pass
    wait_ended(victims, timeout_s=10)
    for name in regions | track.regions | track.new_regions():
        (SHM / name).unlink(missing_ok=True)


def ended_within(pid: int, timeout_s: float) -> bool:
    """Ended: gone, or a zombie waiting for init to reap it."""
    try:
        return not wait_ended([psutil.Process(pid)], timeout_s)
    except psutil.NoSuchProcess:
        return True


def test_killed_supervisor_leaves_an_abandoned_run_that_triage_can_read(tmp_path, track):
    db = tmp_path / "r.db"
    started = time.time()
    proc = start_soak(track, write_profile(tmp_path, iterations=60), db, log=tmp_path / "log")
    worker = None
    try:
        wait_for_iterations(db, 1, proc)
        ((worker, supervisor),) = query(db, "SELECT worker_pid, supervisor_pid FROM runs")
        assert supervisor == proc.pid
        track.watch(worker)  # about to be orphaned: no longer below the soak process
        deadline = time.monotonic() + 30
        while not track.new_stubs():  # inside an iteration: models loaded
            assert time.monotonic() < deadline, "the worker never had live stubs"
            time.sleep(0.02)
        proc.kill()  # SIGKILL: no finally, no status, no cleanup
        proc.wait(timeout=10)
        killed_at = time.time()

        ro = open_readonly(db)  # the database opens (read-only, schema checked), intact
        try:
            assert ro.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            ro.conn.close()
        ((status, ended, beat, done),) = query(
            db, "SELECT status, ended_at, heartbeat_at, iterations_done FROM runs"
        )
        assert status == "running" and ended is None and done >= 1
        assert beat <= killed_at
        assert assert_committed_iterations_complete(db) == done
        # The orphaned worker notices its supervisor is gone and ends by itself.
        assert ended_within(worker, 10), "the orphaned worker outlived its supervisor by 10 s"

        # Its supervisor is provably gone on this host: `soak runs` calls it abandoned at
        # once, with a fresh heartbeat.
        shown = soak_cli("runs", "--db", str(db), "--json")
        assert shown.returncode == 0, output(shown)
        assert [r["status"] for r in json.loads(shown.stdout)] == ["abandoned"]
        assert [r["stored_status"] for r in json.loads(shown.stdout)] == ["running"]
        shown = soak_cli("show", "1", "--db", str(db), "--json")
        assert shown.returncode == 0, output(shown)
        header = json.loads(shown.stdout)["run"]
        assert header["status"] == "abandoned"
        assert f"supervisor pid {supervisor} is not alive" in header["abandoned_reason"]
        # A run of another host cannot have its pid checked: the heartbeat's age decides (the
        # library's clock).
        copy = tmp_path / "elsewhere.db"
        src, dst = sqlite3.connect(f"file:{db}?mode=ro", uri=True), sqlite3.connect(copy)
        src.backup(dst)
        src.close()
        dst.execute("UPDATE runs SET host = 'elsewhere'")
        dst.commit()
        dst.close()
        ro = open_readonly(copy)
        try:
            limit = triage.staleness_limit(None)
            before = triage.list_runs(ro, now=beat + limit - 1)
            after = triage.list_runs(ro, now=beat + limit + 1)
        finally:
            ro.conn.close()
        assert [r.status for r in before] == ["running"]
        assert [r.status for r in after] == ["abandoned"]
        assert "ran on elsewhere" in after[0].abandoned_reason

        # `soak analyze` judges what was stored and leaves the stored status alone.
        analysed = soak_cli("analyze", "1", "--db", str(db))
        assert analysed.returncode in (0, 1, 3), output(analysed)
        assert "Traceback" not in analysed.stdout + analysed.stderr
        # Every metric but the client's (sampled apart only for a tritonserver target).
        assert query(db, "SELECT count(*) FROM findings WHERE run_id = 1")[0][0] == len(
            default_thresholds()
        ) - len(CLIENT_METRICS)
        assert query(db, "SELECT status FROM runs")[0][0] == "running"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if worker is not None:
            _kill_orphans(worker, started, track)
    track.check()


# -- two runs, one database ------------------------------------------------------------------


def test_two_runs_writing_one_database_lose_no_row(tmp_path, track):
    db = tmp_path / "shared.db"  # created by whichever run comes first: the schema races too
    profile = write_profile(
        tmp_path, iterations=4, sampling="sample_interval_ms = 20\nobjgraph_every = 1"
    )
    procs = [start_soak(track, profile, db, log=tmp_path / f"log{i}") for i in range(2)]
    try:
        codes = [p.wait(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = [(tmp_path / f"log{i}").read_text() for i in range(2)]
    # Both ran to their end (what the verdict says of 4 iterations is not this test's concern).
    assert all(c in (0, 1, 3) for c in codes), (codes, logs)
    for text in ("soak: error", "Traceback", "locked", "busy"):
        assert not any(text in log_ for log_ in logs), logs
    runs = query(db, "SELECT id, status, iterations_done, ended_at FROM runs ORDER BY id")
    assert [r[0] for r in runs] == [1, 2]
    assert all(r[1] in ("passed", "leaked", "inconclusive") and r[2] == 4 and r[3] for r in runs)
    metrics = len(default_thresholds()) - len(CLIENT_METRICS)  # client ones: in-process NULL
    for run_id in (1, 2):
        assert assert_committed_iterations_complete(db, run_id) == 4
        assert query(db, "SELECT count(*) FROM phase_samples WHERE run_id = ?", run_id)[0][0] > 0
        assert query(db, "SELECT count(*) FROM heap_types WHERE run_id = ?", run_id)[0][0] > 0
        assert query(db, "SELECT count(*) FROM findings WHERE run_id = ?", run_id)[0][0] == metrics
    assert query(db, "SELECT count(*) FROM iterations")[0][0] == 8
    assert query(db, "SELECT count(*) FROM samples WHERE kind = 'quiet'")[0][0] == 8
    assert query(db, "SELECT count(*) FROM samples WHERE run_id NOT IN (1, 2)")[0][0] == 0
    assert query(db, "PRAGMA integrity_check")[0][0] == "ok"
    track.check()


# -- the database cannot be written ----------------------------------------------------------


def _bad_db(tmp_path: Path, kind: str) -> tuple[Path, str]:
    if kind == "proc":  # a folder nobody can create files in, root included
        return Path("/proc/soak-faults.db"), "cannot open for writing"
    if kind == "directory":
        path = tmp_path / "a-directory"
        path.mkdir()
        return path, "is a directory"
    if kind == "under_a_file":
        parent = tmp_path / "a-file"
        parent.write_text("not a folder\n")
        return parent / "soak.db", "is not a directory"
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is no sqlite database\n" * 200)
    return path, "not a soak results database"


@pytest.mark.parametrize("kind", ["proc", "directory", "under_a_file", "garbage"])
def test_unwritable_database_is_a_clear_error_before_any_iteration(tmp_path, track, kind):
    db, says = _bad_db(tmp_path, kind)
    before = db.read_bytes() if db.is_file() else None
    started = time.monotonic()
    proc = run_soak(track, write_profile(tmp_path), db, timeout=60)
    assert proc.returncode == 2, output(proc)
    assert time.monotonic() - started < 30
    assert proc.stderr.startswith("soak: error: ") and proc.stderr.count("\n") == 1, output(proc)
    assert says in proc.stderr and str(db.parent) in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "iteration" not in proc.stdout
    if before is not None:
        assert db.read_bytes() == before  # a foreign file is never overwritten
    assert not list(workdir(tmp_path).iterdir())  # no worker was started
    track.check()


def test_file_size_limit_mid_run_stops_cleanly_with_the_reason(tmp_path, track):
    """`ulimit -f` on soak: writes past the limit fail (EFBIG) as on a full disk.

    The database is made with 64 KiB pages, so every commit adds at least 64 KiB to the WAL
    and a 2 MiB limit is reached after a few iterations; the limit must also let the worker
    copy the python backend stub (1.4 MB) into its work folder.
    """
    from soak.store import Store
    from soak.triton import backends, capi

    db = tmp_path / "r.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA page_size = 65536")
    conn.execute("VACUUM")
    conn.close()
    Store(db).close()
    stub_size = backends.find_stub(capi.locate()).stat().st_size
    limit = max(2 * 2**20, stub_size + 2**18, db.stat().st_size + 2**18)

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death by signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    proc = run_soak(track, write_profile(tmp_path, iterations=40), db, preexec_fn=limit_file_size)
    assert proc.returncode == 2, output(proc)
    assert "Traceback" not in proc.stdout + proc.stderr
    error = proc.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"soak: error: {db}: "), output(proc)
    assert "disk is full" in error[0] or "file size limit" in error[0], error
    assert query(db, "PRAGMA integrity_check")[0][0] == "ok"
    ((status, reason, ended),) = query(db, "SELECT status, reason, ended_at FROM runs")
    assert status == "failed" and reason.startswith("results database write failed"), reason
    assert ended is not None
    done = assert_committed_iterations_complete(db)
    assert 1 <= done < 40  # mid-run: after the first iteration, long before the last
    track.check()


# -- the supervisor is told to stop, or loses its reader ----------------------------------


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_end_a_run_like_ctrl_c(tmp_path, track, sig):
    """A CI job's timeout (SIGTERM) or a closed SSH session (SIGHUP): the run ends after its
    iteration as `interrupted`, analysed, with its JUnit written and the README's exit code."""
    db, junit = tmp_path / "r.db", tmp_path / "j.xml"
    proc = start_soak(
        track,
        write_profile(tmp_path, iterations=60),
        db,
        "--junit",
        str(junit),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    with reaped(proc):
        wait_for_iterations(db, 1, proc)
        proc.send_signal(getattr(signal, sig))
        stdout, stderr = proc.communicate(timeout=60)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert proc.returncode in (1, 3), output(result)  # interrupted: never 0, never a crash
    assert "Traceback" not in stdout + stderr
    assert f"soak: {sig}: stopping after this iteration" in stderr, output(result)
    ((reason,),) = query(db, "SELECT reason FROM runs")
    assert reason.startswith(f"stopped by {sig} after iteration "), reason
    ((status, ended, done),) = query(db, "SELECT status, ended_at, iterations_done FROM runs")
    assert status == "interrupted" and ended is not None and 1 <= done < 60
    assert assert_committed_iterations_complete(db) == done
    assert query(db, "SELECT count(*) FROM findings")[0][0] > 0  # analysed
    assert "<testsuite" in junit.read_text()
    track.check()


def test_second_sigterm_stops_at_once(tmp_path, track):
    """The second signal, as a second Ctrl-C: the iteration under way is not awaited."""
    db = tmp_path / "r.db"
    proc = start_soak(
        track,
        write_profile(tmp_path, iterations=60, inferences=4000),
        db,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    with reaped(proc):
        wait_for_iterations(db, 1, proc)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert proc.returncode in (1, 3), output(result)
    ((status, done, reason),) = query(db, "SELECT status, iterations_done, reason FROM runs")
    assert status == "interrupted" and done < 60, output(result)
    assert reason == "stopped at once (second SIGTERM)", reason
    assert assert_committed_iterations_complete(db) == done
    track.check()


def test_a_run_piped_to_head_is_stored_and_analysed_as_it_would_be(tmp_path, track):
    """`soak run ... | head -3`: the reader goes away after the first lines; the run still
    completes, is analysed and stored, and soak ends quietly with its verdict's exit code."""
    db = tmp_path / "r.db"
    read, write = os.pipe()
    proc = start_soak(
        track, write_profile(tmp_path, iterations=4), db, stdout=write, stderr=subprocess.PIPE
    )
    os.close(write)
    with os.fdopen(read) as reader:
        first = reader.readline()  # the heading; then the reader is gone, as head's would be
    with reaped(proc):
        _, stderr = proc.communicate(timeout=180)
    assert first.startswith("soak: "), first
    assert "Traceback" not in stderr and "Broken pipe" not in stderr, stderr
    assert proc.returncode in (0, 1, 3), stderr
    ((status, done, reason),) = query(db, "SELECT status, iterations_done, reason FROM runs")
    # Judged as any completed run is (4 iterations: too few for a verdict).
    assert (status, done, reason) == ("inconclusive", 4, "all checks passed")
    assert query(db, "SELECT count(*) FROM findings")[0][0] > 0
    track.check()


def test_an_output_error_at_the_end_is_not_a_verdict(tmp_path, track):
    """The --json-file's folder vanishes during the run: one line, exit 2 (not 1, 'leak'),
    and the stored run and its verdict stay."""
    db, folder = tmp_path / "r.db", tmp_path / "out"
    folder.mkdir()
    proc = start_soak(
        track,
        write_profile(tmp_path, iterations=4),
        db,
        "--json-file",
        str(folder / "f.json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    with reaped(proc):
        wait_for_iterations(db, 1, proc)
        folder.rmdir()
        stdout, stderr = proc.communicate(timeout=180)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert proc.returncode == 2, output(result)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("soak: error: could not write "), output(result)
    assert str(folder / "f.json") in lines[0]
    ((status, verdict),) = query(db, "SELECT status, verdict FROM runs")
    assert status == "inconclusive" and verdict == "inconclusive"  # judged and stored
    track.check()


# -- a broken environment ------------------------------------------------------------------


@pytest.mark.parametrize("where", ["env", "profile", "no_lib"])
def test_missing_triton_library_is_a_one_line_error(tmp_path, track, where):
    nowhere = tmp_path / "no-triton-here"
    env, extra = {}, ""
    says = "which is not a directory"
    if where == "env":
        env = {"SOAK_TRITON_HOME": str(nowhere)}
    elif where == "profile":
        extra = f'triton_home = "{nowhere}"\n'
    else:
        nowhere.mkdir()  # a folder, but no lib/libtritonserver.so in it
        env = {"SOAK_TRITON_HOME": str(nowhere)}
        says = "no Triton library at"
    db = tmp_path / "r.db"
    proc = run_soak(track, write_profile(tmp_path, extra=extra), db, env=env, timeout=60)
    assert proc.returncode == 2, output(proc)
    assert proc.stderr.startswith("soak: error: ") and proc.stderr.count("\n") == 1, output(proc)
    assert says in proc.stderr and str(nowhere) in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not db.exists()  # refused before a run row exists


def _libc() -> Path:
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split()[-1]
        if re.search(r"/libc(\.so\.6|-[\d.]+\.so)$", path):
            return Path(path)
    raise AssertionError("libc not found in /proc/self/maps")


@pytest.mark.parametrize("library", ["empty", "libc"])
def test_wrong_kind_of_libtritonserver_fails_the_run_clearly(tmp_path, track, library):
    """A Triton home laid out right (python backend from the wheel), but lib/libtritonserver.so
    is an empty file or a copy of libc."""
    from soak.triton import backends, capi

    wheel = capi.locate()
    home = tmp_path / "home"
    (home / "lib").mkdir(parents=True)
    python = home / "backends" / "python"
    python.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        (python / name).symlink_to(wheel.backends_dir / "python" / name)
    (python / backends.STUB_EXECUTABLE).symlink_to(backends.find_stub(wheel))
    lib = home / "lib" / "libtritonserver.so"
    if library == "empty":
        lib.write_bytes(b"")
        says = "cannot load Triton library"
    else:
        shutil.copy(_libc(), lib)
        says = "is not a usable libtritonserver"
    db = tmp_path / "r.db"
    proc = run_soak(
        track, write_profile(tmp_path), db, env={"SOAK_TRITON_HOME": str(home)}, timeout=60
    )
    assert proc.returncode == 2, output(proc)
    assert "Traceback" not in proc.stdout + proc.stderr
    ((status, reason, done),) = query(db, "SELECT status, reason, iterations_done FROM runs")
    assert status == "failed" and says in reason and str(lib) in reason, reason
    assert "\n" not in reason and done == 0
    assert f"run 1: failed: {reason}" in proc.stdout
    assert events(db).get("error") == 1
    track.check()


# -- the model repository disappears; a model that is wrong only sometimes ------------------------


@pytest.mark.parametrize(
    "phase",
    [
        "server_new",  # gone before the server is created
        "load",  # gone after the server was created, before its models load
        "infer",  # gone while the models are loaded: unload can no longer be watched
    ],
)
def test_model_repository_disappearing_mid_run_fails_checks_not_the_run(tmp_path, track, phase):
    db = tmp_path / "r.db"
    proc = run_soak(track, write_profile(tmp_path), db, env={"SOAK_FAULT": f"{phase}:rmrepo:1"})
    assert proc.returncode == 2, output(proc)
    assert "Traceback" not in proc.stdout + proc.stderr
    ((status, reason),) = query(db, "SELECT status, reason FROM runs")
    assert status == "failed" and reason.endswith("check(s) failed"), reason
    assert assert_committed_iterations_complete(db) == 3  # the run carried on to its end
    failures = dict(query(db, "SELECT iteration, failures FROM iterations"))
    assert failures[0] == 0 and failures[1] >= 1 and failures[2] >= 1, failures
    kinds = events(db)
    assert not {"signal", "crash", "hang", "error"} & set(kinds), kinds
    # Nothing of a failed lifecycle may stay: the quiet points after the fault look like before
    # (a server that was never deleted keeps ~75 threads).
    quiet = query(
        db,
        "SELECT iteration, threads, stubs_alive, shm_regions FROM samples "
        "WHERE kind = 'quiet' ORDER BY iteration",
    )
    assert [q[1:] for q in quiet[1:]] == [quiet[0][1:]] * 2, quiet
    # Every failure says what went: the repository (no empty "cleanup after failure: ").
    messages = [m for (m,) in query(db, "SELECT message FROM events WHERE kind = 'failure'")]
    assert len(messages) == sum(failures.values())
    assert all("models/common" in m or "model repository" in m for m in messages), messages
    track.check()


def test_model_wrong_only_sometimes_is_caught_each_time(tmp_path, track):
    """From iteration 1 on, the common model answers wrongly on every 5th execute."""
    db = tmp_path / "r.db"
    proc = run_soak(
        track,
        write_profile(tmp_path, inferences=5),
        db,
        env={"SOAK_FAULT": "server_new:sometimes_wrong:1"},
    )
    assert proc.returncode == 2, output(proc)
    ((status, reason),) = query(db, "SELECT status, reason FROM runs")
    assert status == "failed" and reason == "2 check(s) failed", reason
    assert assert_committed_iterations_complete(db) == 3
    rows = query(db, "SELECT failures, inferences, model_loads FROM iterations ORDER BY iteration")
    assert rows == [(0, 10, 2), (1, 10, 2), (1, 10, 2)]  # 4 right answers, then a wrong one
    found = query(
        db, "SELECT iteration, phase, message FROM events WHERE kind = 'failure' ORDER BY iteration"
    )
    assert [(i, p) for i, p, _ in found] == [(1, "infer"), (2, "infer")]
    assert all(m.startswith("simple1: OUTPUT0 wrong: 16 of 16 values differ") for *_, m in found)
    track.check()
