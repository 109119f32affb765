"""Tests of the process-tree sampler against real processes: a fake worker (a python process
driven over stdin) and fake stubs (a python script named triton_python_backend_stub)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from soak.sampling import process as process_module
from soak.sampling.process import (
    Leftovers,
    ProcessSample,
    ProcessTreeSampler,
    WorkerGoneError,
    measure_sample_cost,
)
from soak.sampling.procfs import descendant_pids
from soak.sampling.stubs import find_stub_processes, is_stub_process, region_names_in
from soak.sampling.waiting import wait_ended
from soak.triton.backends import STUB_EXECUTABLE
from soak.triton.facts import REGION_PREFIX

log = logging.getLogger(__name__)

MIB = 1024 * 1024
LIFETIME_S = 120  # every helper process ends by itself after this, whatever happens to a test

STUB_SCRIPT = f"""#!{sys.executable}
# A fake python backend stub: argv like the real one; maps its region like the real one.
import mmap, os, sys, time
region = sys.argv[2].rsplit("/", 1)[-1]
path = os.path.join(os.environ.get("FAKE_SHM_DIR", "/dev/shm"), region)
if os.path.exists(path):
    fd = os.open(path, os.O_RDWR)
    mapped = mmap.mmap(fd, os.fstat(fd).st_size)
time.sleep({LIFETIME_S})
"""

WORKER_SCRIPT = f"""
import json, mmap, os, subprocess, sys, threading, time, uuid
shm_dir, stub_path, prefix = sys.argv[1:4]
os.environ["FAKE_SHM_DIR"] = shm_dir
event = threading.Event()
threading.Thread(target=lambda: (time.sleep({LIFETIME_S}), os._exit(3)), daemon=True).start()
held, fds, procs, zombies = {{}}, [], [], []

def proc_state(pid):
    with open(f"/proc/{{pid}}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]

def churn():
    while True:
        subprocess.run(["true"])

def region():
    name = prefix + str(uuid.uuid4())
    fd = os.open(os.path.join(shm_dir, name), os.O_CREAT | os.O_RDWR | os.O_EXCL, 0o600)
    os.ftruncate(fd, {MIB})
    held[name] = (fd, mmap.mmap(fd, {MIB}))
    return name

def stub_argv(name):
    return [stub_path, "/models/m/1/model.py", "/" + name, "{MIB}", "{MIB}",
            str(os.getpid()), "/backends/python", "0", "m_0_0", "DEFAULT"]

for line in sys.stdin:
    cmd, *args = line.split()
    n = int(args[0]) if args else 0
    out = {{}}
    if cmd == "fds":
        fds += [os.open(os.devnull, os.O_RDONLY) for _ in range(n)]
    elif cmd == "threads":
        for _ in range(n):
            threading.Thread(target=event.wait, daemon=True).start()
    elif cmd == "children":
        code = "import time; time.sleep({LIFETIME_S})"
        new = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
        procs += new
        out["pids"] = [p.pid for p in new]
    elif cmd == "tree":
        code = ("import subprocess, sys, time; "
                "c = subprocess.Popen([sys.executable, '-c', "
                "'import time; time.sleep({LIFETIME_S})']); "
                "print(c.pid, flush=True); time.sleep({LIFETIME_S})")
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        procs.append(p)
        out["pids"] = [p.pid, int(p.stdout.readline())]
    elif cmd == "zombie":
        z = subprocess.Popen([sys.executable, "-c", "pass"])
        while proc_state(z.pid) != "Z":
            time.sleep(0.01)
        zombies.append(z)
        out["pids"] = [z.pid]
    elif cmd == "churn":  # short-lived children, appearing and vanishing all the time
        threading.Thread(target=churn, daemon=True).start()
    elif cmd == "stubs" or cmd == "bash_stubs":
        names = [region() for _ in range(n)]
        argvs = [stub_argv(name) for name in names]
        if cmd == "bash_stubs":  # the way libtriton_python launches them
            argvs = [["bash", "-c", "sleep 0.3; exec " + " ".join(a)] for a in argvs]
        new = [subprocess.Popen(a) for a in argvs]
        procs += new
        out["pids"] = [p.pid for p in new]
        out["regions"] = names
    elif cmd == "region":
        out["regions"] = [region() for _ in range(n)]
    elif cmd == "release":  # unmap and close, but do not unlink: a leak nobody holds
        for fd, mapped in held.values():
            mapped.close()
            os.close(fd)
        held.clear()
    elif cmd == "killstubs":
        for p in procs:
            p.kill()
            p.wait()
    print(json.dumps(out), flush=True)
"""


class FakeWorker:
    """A real process that opens fds, starts threads, children and fake stubs on request."""

    def __init__(self, script: Path, stub: Path, shm_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(shm_dir), str(stub), REGION_PREFIX],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid
        self.shm_dir = shm_dir
        self.spawned: list[psutil.Process] = []
        self.regions: list[str] = []
        self.cmd("ping")  # ready: interpreter started, lifetime thread running

    def cmd(self, line: str) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        for pid in reply.get("pids", []):
            try:
                self.spawned.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        self.regions += reply.get("regions", [])
        return reply

    def kill(self) -> None:
        """SIGKILL the worker only: its stubs are orphaned, its regions stay."""
        self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        self.kill()
        _kill_all(self.spawned)
        for name in self.regions:
            (self.shm_dir / name).unlink(missing_ok=True)


def _kill_all(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            proc.kill()  # psutil checks the create time: a reused pid is never hit
        except psutil.NoSuchProcess:
            pass
    # Orphans are reaped by init, which can take seconds here; a zombie has ended already.
    _wait_for(lambda: all(_ended(p) for p in procs))


def _ended(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def stub_exe(tmp_path: Path) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    stub = folder / STUB_EXECUTABLE
    stub.write_text(STUB_SCRIPT)
    stub.chmod(0o755)
    return stub


@pytest.fixture
def shm_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "shm"
    folder.mkdir()
    return folder


@pytest.fixture
def make_worker(tmp_path: Path, stub_exe: Path, shm_dir: Path) -> Iterator:
    script = tmp_path / "fake_worker.py"
    script.write_text(WORKER_SCRIPT)
    workers: list[FakeWorker] = []

    def make(shm: Path = shm_dir) -> FakeWorker:
        worker = FakeWorker(script, stub_exe, shm)
        workers.append(worker)
        return worker

    try:
        yield make
    finally:
        for worker in workers:
            worker.close()


@pytest.fixture
def foreign_stub(stub_exe: Path, shm_dir: Path) -> Iterator[tuple[psutil.Process, Path]]:
    """A stub of 'another run': not a descendant of any worker here, with its own region."""
    name = REGION_PREFIX + str(uuid.uuid4())
    path = shm_dir / name
    path.write_bytes(b"\0" * MIB)
    argv = [str(stub_exe), "/other/model.py", "/" + name, str(MIB), str(MIB), "1", "/x", "0"]
    popen = subprocess.Popen(argv, env={**os.environ, "FAKE_SHM_DIR": str(shm_dir)})
    proc = psutil.Process(popen.pid)
    try:
        yield proc, path
    finally:
        popen.kill()
        popen.wait()
        path.unlink(missing_ok=True)


def _wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def _settled(sampler: ProcessTreeSampler, **expected: int) -> ProcessSample:
    """Sample until the named fields have the expected values (processes start asynchronously)."""
    last: list[ProcessSample] = []

    def check() -> bool:
        last[:] = [sampler.sample()]
        return all(getattr(last[0], k) == v for k, v in expected.items())

    try:
        _wait_for(check)
    except AssertionError:
        raise AssertionError(f"expected {expected}, last sample {last[0]}") from None
    return last[0]


# --- pure helpers ---------------------------------------------------------------------------


def test_region_names_are_found_in_every_form() -> None:
    uid = str(uuid.uuid4())
    name = REGION_PREFIX + uid
    args = ["/x/model.py", "/" + name, f"/dev/shm/{name}", name, "1048576", f"{name} (deleted)"]
    assert region_names_in(args) == (name,)
    assert region_names_in(["/dev/shm/other_region", "sem.mp-123"]) == ()
    maps_line = f"7f00-7f10 rw-s 00000000 00:1a 42   /dev/shm/{name}\n"
    assert region_names_in([maps_line]) == (name,)


def test_sample_fields_and_as_dict(make_worker) -> None:
    worker = make_worker()
    sample = ProcessTreeSampler(worker.pid).sample()
    row = sample.as_dict()
    assert list(row) == [
        "rss_bytes",
        "uss_bytes",
        "pss_bytes",
        "vms_bytes",
        "fds",
        "threads",
        "children",
        "children_rss_bytes",
        "stubs_alive",
        "shm_regions",
        "shm_bytes",
        "sample_cost_s",
    ]
    assert sample.rss_bytes > 0 and sample.vms_bytes >= sample.rss_bytes
    assert sample.uss_bytes is not None and 0 < sample.uss_bytes <= sample.rss_bytes
    assert sample.pss_bytes is not None and sample.pss_bytes > 0
    assert sample.fds >= 3 and sample.threads >= 2
    assert sample.children == 0 and sample.stubs_alive == 0 and sample.shm_regions == 0
    assert sample.sample_cost_s > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.rss_bytes = 1  # type: ignore[misc]


# --- counts follow the real process -----------------------------------------------------------


def test_fds_threads_and_children_follow_the_worker(make_worker) -> None:
    worker = make_worker()
    sampler = ProcessTreeSampler(worker.pid)
    before = sampler.sample()

    worker.cmd("fds 10")
    after_fds = sampler.sample()
    assert abs(after_fds.fds - before.fds - 10) <= 1

    worker.cmd("threads 5")
    after_threads = sampler.sample()
    assert after_threads.threads - before.threads == 5

    worker.cmd("children 3")
    sample = _settled(sampler, children=3)
    assert sample.children_rss_bytes > 0
    assert sample.stubs_alive == 0

    worker.cmd("tree")  # a child with a grandchild: all descendants count
    sample = _settled(sampler, children=5)
    assert sorted(descendant_pids(worker.pid)) == sorted(p.pid for p in worker.spawned)


def test_a_zombie_child_counts_without_memory(make_worker) -> None:
    worker = make_worker()
    sampler = ProcessTreeSampler(worker.pid)
    worker.cmd("zombie")
    sample = sampler.sample()
    assert sample.children == 1
    assert sample.children_rss_bytes == 0


def test_children_that_vanish_while_sampling_are_skipped(make_worker) -> None:
    worker = make_worker()
    sampler = ProcessTreeSampler(worker.pid)
    worker.cmd("children 2")
    _settled(sampler, children=2)
    worker.cmd("churn")
    counts = {sampler.sample().children for _ in range(200)}
    assert counts <= {2, 3}  # the two sleepers, plus at most one short-lived 'true'


def test_sampling_a_worker_that_ended_raises(make_worker) -> None:
    worker = make_worker()
    sampler = ProcessTreeSampler(worker.pid)
    sampler.sample()
    worker.kill()
    with pytest.raises(WorkerGoneError):
        sampler.sample()


def test_a_worker_that_is_an_unreaped_zombie_has_ended() -> None:
    popen = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        sampler = ProcessTreeSampler(popen.pid)
        _wait_for(lambda: psutil.Process(popen.pid).status() == psutil.STATUS_ZOMBIE)
        with pytest.raises(WorkerGoneError):
            sampler.sample()
        assert sampler.leftovers().empty
    finally:
        popen.wait()


# --- stubs and regions --------------------------------------------------------------------------


def test_stubs_and_their_regions_are_counted(make_worker, shm_dir: Path) -> None:
    worker = make_worker()
    sampler = ProcessTreeSampler(worker.pid, shm_dir=shm_dir)
    reply = worker.cmd("stubs 3")
    sample = _settled(sampler, stubs_alive=3)
    assert sample.children == 3
    assert sample.shm_regions == 3
    assert sample.shm_bytes == 3 * MIB
    assert {s.pid for s in sampler.stubs_seen} == set(reply["pids"])
    assert sampler.regions_attributed == set(reply["regions"])
    assert {s.parent_pid_arg for s in sampler.stubs_seen} == {worker.pid}

    worker.cmd("killstubs")
    sample = _settled(sampler, stubs_alive=0)
    assert sample.shm_regions == 3  # the worker has not removed them: a leak to be seen
    assert len(sampler.stubs_seen) == 3  # remembered after they ended


def test_stubs_launched_through_bash_exec_are_recognised(make_worker, shm_dir: Path) -> None:
    """libtriton_python forks 'bash -c "exec stub ..."': same pid before and after exec."""
    worker = make_worker()
    sampler = ProcessTreeSampler(worker.pid, shm_dir=shm_dir)
    reply = worker.cmd("bash_stubs 2")
    first = sampler.sample()  # still bash (and its 'sleep'): no stub yet
    assert first.stubs_alive == 0 and first.children >= 2
    _settled(sampler, stubs_alive=2)
    assert {s.pid for s in sampler.stubs_seen} == set(reply["pids"])


def test_observe_remembers_a_stub_that_lives_between_samples(make_worker, shm_dir: Path) -> None:
    worker = make_worker()
    sampler = ProcessTreeSampler(worker.pid, shm_dir=shm_dir)
    assert sampler.sample().shm_regions == 0
    reply = worker.cmd("stubs 1")
    worker.cmd("release")  # the worker lets go of the region; only the stub holds it now
    _wait_for(lambda: sampler.observe() == 1)
    worker.cmd("killstubs")  # the stub ends; its region file stays: a leak
    sample = sampler.sample()
    assert (sample.stubs_alive, sample.shm_regions) == (0, 1)
    assert sampler.regions_attributed == set(reply["regions"])


def test_a_region_held_only_by_the_worker_is_attributed(make_worker, shm_dir: Path) -> None:
    worker = make_worker()
    sampler = ProcessTreeSampler(worker.pid, shm_dir=shm_dir)
    name = worker.cmd("region 1")["regions"][0]
    sample = sampler.sample()
    assert (sample.shm_regions, sample.shm_bytes) == (1, MIB)
    assert name in sampler.regions_attributed
    worker.cmd("release")  # nobody holds it any more, but it was attributed while held
    assert sampler.sample().shm_regions == 1


def test_other_runs_are_not_counted_reported_or_cleaned(
    make_worker, foreign_stub, shm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process_module, "_FOREIGN_AFTER_S", 0.0)
    other_proc, other_region = foreign_stub
    stale = shm_dir / (REGION_PREFIX + str(uuid.uuid4()))  # left by some earlier crash
    stale.write_bytes(b"\0" * 4096)

    worker = make_worker()
    sampler = ProcessTreeSampler(worker.pid, shm_dir=shm_dir)
    worker.cmd("stubs 1")
    sample = _settled(sampler, stubs_alive=1)
    assert (sample.shm_regions, sample.shm_bytes) == (1, MIB)
    assert other_region.name not in sampler.regions_attributed
    assert stale.name not in sampler.regions_attributed
    assert other_proc.pid not in {s.pid for s in sampler.stubs_seen}
    assert other_proc.pid in {s.pid for s in find_stub_processes()}

    worker.kill()
    leftovers = sampler.leftovers()
    assert other_proc.pid not in leftovers.stub_pids
    assert str(other_region) not in leftovers.shm_paths
    assert str(stale) not in leftovers.shm_paths
    sampler.cleanup(leftovers)
    # Even when asked explicitly, cleanup refuses what is not this run's.
    refused = sampler.cleanup(
        Leftovers(stub_pids=[other_proc.pid], shm_paths=[str(other_region), str(stale)])
    )
    assert refused.empty
    assert other_proc.is_running() and other_proc.status() != psutil.STATUS_ZOMBIE
    assert other_region.exists() and stale.exists()


def test_leftovers_of_a_killed_worker_are_found_and_cleaned(
    make_worker, foreign_stub, shm_dir: Path
) -> None:
    other_proc, other_region = foreign_stub
    worker = make_worker()
    sampler = ProcessTreeSampler(worker.pid, shm_dir=shm_dir)
    seen = worker.cmd("stubs 2")
    _settled(sampler, stubs_alive=2)
    unseen = worker.cmd("stubs 1")  # started after the last sample: found through its argv
    _wait_for(lambda: all(p.name() != "bash" for p in worker.spawned))
    worker.kill()
    for pid in seen["pids"] + unseen["pids"]:
        _wait_for(lambda pid=pid: psutil.Process(pid).ppid() != worker.pid)  # reparented

    leftovers = sampler.leftovers()
    assert leftovers.stub_pids == sorted(seen["pids"] + unseen["pids"])
    expected_paths = sorted(str(shm_dir / n) for n in seen["regions"] + unseen["regions"])
    assert leftovers.shm_paths == expected_paths

    removed = sampler.cleanup(leftovers, timeout_s=5.0)
    assert removed.stub_pids == leftovers.stub_pids
    assert removed.shm_paths == leftovers.shm_paths
    for pid in leftovers.stub_pids:
        assert not psutil.pid_exists(pid) or _ended(psutil.Process(pid))
    assert not any(Path(p).exists() for p in leftovers.shm_paths)
    assert sampler.leftovers().empty
    assert other_proc.is_running() and other_region.exists()


def test_real_dev_shm_with_unique_names(make_worker) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm")
    worker = make_worker(shm)
    try:
        sampler = ProcessTreeSampler(worker.pid)  # default shm_dir is /dev/shm
        worker.cmd("stubs 2")
        sample = _settled(sampler, stubs_alive=2)
        assert sample.shm_regions == 2 and sample.shm_bytes == 2 * MIB
        worker.kill()
        leftovers = sampler.leftovers()
        assert sorted(leftovers.shm_paths) == sorted(f"/dev/shm/{n}" for n in worker.regions)
        removed = sampler.cleanup(leftovers)
        assert sorted(removed.shm_paths) == sorted(leftovers.shm_paths)
    finally:
        worker.close()
        for name in worker.regions:
            assert not (shm / name).exists()


# --- cost -------------------------------------------------------------------------------------


def test_sample_cost_is_reported_with_eight_children(make_worker) -> None:
    """Prints the median cost; a benchmark, not an assertion (machines differ)."""
    worker = make_worker()
    sampler = ProcessTreeSampler(worker.pid)
    idle = statistics.median(measure_sample_cost(sampler, 50))
    worker.cmd("children 8")
    _settled(sampler, children=8)
    busy = measure_sample_cost(sampler, 50)
    assert len(busy) == 50 and all(cost > 0 for cost in busy)
    log.info(
        "median sample cost: %.2f ms with 0 children, %.2f ms with 8",
        idle * 1e3,
        statistics.median(busy) * 1e3,
    )


def test_stub_script_runs_as_a_named_process(stub_exe: Path) -> None:
    """The fake stub must look like a stub to psutil, else every other test proves nothing."""
    popen = subprocess.Popen([str(stub_exe), "/m.py", "/" + REGION_PREFIX + "x", "1", "1", "1"])
    try:
        proc = psutil.Process(popen.pid)
        _wait_for(lambda: proc.cmdline()[1:2] == [str(stub_exe)])
        assert proc.name().startswith(STUB_EXECUTABLE[:15])
        assert is_stub_process(proc)
    finally:
        popen.kill()
        popen.wait()


def test_wait_ended_counts_a_zombie_as_ended_and_reaps_only_when_asked():
    quick = subprocess.Popen([sys.executable, "-c", "pass"])
    proc = psutil.Process(quick.pid)
    assert wait_ended([proc], timeout_s=30) == []
    assert proc.status() == psutil.STATUS_ZOMBIE  # not reaped: Popen still reads its status
    assert quick.wait(timeout=5) == 0
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        victim = psutil.Process(sleeper.pid)
        assert wait_ended([victim], timeout_s=0.2) == [victim]
        victim.kill()
        assert wait_ended([victim], timeout_s=30, reap=True) == []
        with pytest.raises(psutil.NoSuchProcess):
            psutil.Process(sleeper.pid).status()
    finally:
        sleeper.kill()
        sleeper.wait()
