"""Proof that soak finds leaks: real leaks of known size, injected into real Triton runs.

Each case runs ``soak run`` end to end (supervisor, worker, one real in-process Triton server
per iteration) with one ``[inject]`` key switched on, then reads the findings from the
database. It must say: exit code 1, status 'leaked'; the metric the injection leaks through
judged 'leak', with a slope close to the injected size; and no metric judged 'leak' that the
injection cannot move (its ALLOWED set, explained per case below). A control run of the very
same profile, with nothing injected, is judged by the very same thresholds; its counters must
come back, and what its memory metrics show is printed (see ``test_control_run_without_injection``).

Every run uses one profile text (``profile_text``) and one set of thresholds (``THRESHOLDS``),
chosen once for the whole file: nothing is tuned per case.

What the less obvious injections turned out to show (libtritonserver 2.51, CPU, 1 server):

* ``skip_server_delete``: a stopped but never deleted server keeps 4 threads of its own (Triton
  internals; they carry the process's name), so ``threads`` grows by 4 per iteration. Its memory
  (~130 KiB RSS, ~45 KiB malloc'd, 4 Python objects per server) is below the memory thresholds.
* ``unreleased_response_fraction``: a response that is never deleted keeps its *model* alive
  (Triton's InferenceResponse owns a shared_ptr to its model), so the model never gets past
  UNLOADING: its python backend stub process, its shm region, its ~35 backend threads and its
  fd all stay. One kept response per model is enough; every further response only adds its own
  heap (~2 KiB each: the response object, its output metadata and the two 64-byte output
  buffers). On ``mallinfo_inuse_bytes`` that is ~390 KiB/iteration with the 50 responses per
  iteration kept here, of which ~300 KiB is the two pinned models (measured with 2 kept
  responses per iteration). The loudest and most specific sign is therefore ``stubs_alive``
  (+1 per model load). Before soak's lifecycle knew this, the pinned model made the unload
  phase wait for its timeout and the run ended 'hung', with no verdict at all.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from soak.sampling.stubs import find_stub_processes
from tests.conftest import shm_regions
from tests.e2e import query, soak

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e

KiB = 1 << 10
MiB = 1 << 20

ITERATIONS = 16
WARMUP = 4
SERVERS = 1
INFERENCES_PER_MODEL = 25
MODEL_LOADS_PER_ITERATION = 2 * SERVERS  # the common model and the server's own model
RUN_TIMEOUT_S = 300

# The thresholds of every run in this file, control included: chosen once, never per case.
#
# * Memory (rss, uss, mallinfo_inuse, children_rss): a leak is a slope whose 95% lower bound
#   is above 256 KiB per iteration (with a rising Mann-Kendall trend), or growth past 256 MiB.
#   With 12 analysed iterations that finds any steady leak of about 300 KiB per iteration or
#   more; the native (4 MiB/server) and Python (1 MiB/iteration) injections are 16x and 4x
#   that. The control run's own drift (allocator and page-cache settling, ~40 KiB/iteration
#   and slowing) stays well below it.
# * tracemalloc: 16 KiB per iteration, so 1 MiB of Python objects per iteration is 64x above.
# * shm_bytes: none may be left (at a quiet point every model is unloaded).
# * pss_bytes: not judged here. PSS divides each shared page by the number of processes that
#   map it, so it moves whenever any other process on the machine that maps the same libraries
#   (another soak run, another test) starts or ends: not a property of the worker. USS (pages
#   only the worker maps) and RSS judge the same memory without that noise.
# * Counters (fds, threads, children, stubs_alive, shm_regions): tolerance 0, so a single fd,
#   thread, process or region per iteration that does not come back is a leak.
# * gc_objects: tolerance 2000 live objects (soak's default), i.e. it finds a leak of some
#   150 Python objects per iteration or more over 12 iterations.
# * GPU (judged only where NVML answers): 256 KiB/iteration per process, 1 MiB/iteration
#   device-wide (soak's defaults).
THRESHOLDS = f"""
[thresholds.rss_bytes]
slope_per_iteration = {256 * KiB}
growth_budget = {256 * MiB}
[thresholds.uss_bytes]
slope_per_iteration = {256 * KiB}
growth_budget = {256 * MiB}
[thresholds.pss_bytes]
enabled = false
[thresholds.mallinfo_inuse_bytes]
slope_per_iteration = {256 * KiB}
growth_budget = {256 * MiB}
[thresholds.children_rss_bytes]
slope_per_iteration = {256 * KiB}
growth_budget = {256 * MiB}
[thresholds.tracemalloc_bytes]
slope_per_iteration = {16 * KiB}
growth_budget = {64 * MiB}
[thresholds.shm_bytes]
slope_per_iteration = 0
growth_budget = 0
[thresholds.gpu_process_bytes]
slope_per_iteration = {256 * KiB}
growth_budget = {256 * MiB}
[thresholds.gpu_used_bytes]
slope_per_iteration = {1 * MiB}
growth_budget = {512 * MiB}
[thresholds.fds]
tolerance = 0
[thresholds.threads]
tolerance = 0
[thresholds.children]
tolerance = 0
[thresholds.stubs_alive]
tolerance = 0
[thresholds.shm_regions]
tolerance = 0
[thresholds.gc_objects]
tolerance = 2000
"""


def profile_text(name: str, inject: dict[str, object]) -> str:
    """The one profile of this file; only the [inject] table differs between runs."""
    lines = [f"{key} = {_toml(value)}" for key, value in inject.items()]
    return f"""
description = "injection proof: {name}"
servers = {SERVERS}
iterations = {ITERATIONS}
warmup = {WARMUP}
inferences_per_model = {INFERENCES_PER_MODEL}
memory_type = "system"
instance_kind = "cpu"
[sampling]
objgraph_every = 0  # triage only (never judged); keeps each run short
[inject]
{chr(10).join(lines)}
{THRESHOLDS}"""


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


MEMORY = {"rss_bytes", "uss_bytes", "pss_bytes", "mallinfo_inuse_bytes"}


@dataclass(frozen=True)
class Case:
    name: str
    inject: dict[str, object]
    metric: str  # the metric this injection must be found on
    per_iteration: float  # the injected amount, in that metric's units per iteration
    allowed: frozenset[str] = field(default_factory=frozenset)  # may also be 'leak'
    gpu: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", frozenset(self.allowed) | {self.metric})


CASES = [
    # malloc'd and memset, never freed: resident native heap. Shows as the worker's RSS and
    # USS (private pages; PSS too, were it judged) and as glibc's in-use bytes. Nothing else.
    Case(
        "native_bytes_per_server",
        {"native_bytes_per_server": 4 * MiB},
        "rss_bytes",
        4 * MiB * SERVERS,
        MEMORY,
    ),
    # bytearrays kept in a list: tracemalloc sees them exactly; CPython takes blocks that big
    # from malloc, so they are native heap and resident memory as well.
    Case(
        "python_bytes_per_iteration",
        {"python_bytes_per_iteration": 1 * MiB},
        "tracemalloc_bytes",
        1 * MiB,
        MEMORY | {"tracemalloc_bytes"},
    ),
    # os.open of /dev/null, never closed: file descriptors and nothing else (the kernel's
    # file objects are not the worker's memory).
    Case("fds_per_iteration", {"fds_per_iteration": 3}, "fds", 3),
    # Threads blocked forever: the thread count; each also has a stack (a few touched pages:
    # RSS/USS/PSS), glibc bookkeeping (mallinfo) and Python objects (Thread, its Event and
    # locks: gc_objects, tracemalloc).
    Case(
        "threads_per_iteration",
        {"threads_per_iteration": 2},
        "threads",
        2,
        MEMORY | {"tracemalloc_bytes", "gc_objects"},
    ),
    # A stopped server that is never deleted keeps Triton's own threads (4 per server in
    # libtritonserver 2.51) and its memory (native: RSS/USS/PSS/mallinfo; the Python Server
    # wrapper: gc_objects/tracemalloc); a server may also hold files open (fds). Its models are
    # unloaded by the stop, so no stub, child process or shm region may stay.
    Case(
        "skip_server_delete",
        {"skip_server_delete": True},
        "threads",
        4 * SERVERS,
        MEMORY | {"tracemalloc_bytes", "gc_objects", "fds"},
    ),
    # Never-deleted responses pin their models (module docstring): per model load one stub
    # process stays (stubs_alive, children, children_rss_bytes), with its shm region
    # (shm_regions, shm_bytes), the backend's threads and fd for it, and the model's and the
    # responses' memory (RSS/USS/PSS/mallinfo); the list of kept response handles is Python
    # memory (tracemalloc).
    Case(
        "unreleased_response_fraction",
        {"unreleased_response_fraction": 1.0},
        "stubs_alive",
        MODEL_LOADS_PER_ITERATION,
        MEMORY
        | {
            "tracemalloc_bytes",
            "children",
            "children_rss_bytes",
            "shm_regions",
            "shm_bytes",
            "threads",
            "fds",
        },
    ),
    # cudaMalloc'd, never freed: the worker's GPU memory (NVML per process) and the device's;
    # the CUDA runtime's host-side bookkeeping may show as native memory.
    Case(
        "gpu_bytes_per_server",
        {"gpu_bytes_per_server": 16 * MiB},
        "gpu_process_bytes",
        16 * MiB * SERVERS,
        MEMORY | {"gpu_used_bytes"},
        gpu=True,
    ),
]

# Counters that must come back in a run without injection (every server deleted, every model
# unloaded at each quiet point).
MUST_COME_BACK = ("fds", "threads", "children", "stubs_alive", "shm_regions")
MEMORY_REPORTED = (
    "rss_bytes",
    "uss_bytes",
    "pss_bytes",
    "mallinfo_inuse_bytes",
    "tracemalloc_bytes",
    "children_rss_bytes",
    "shm_bytes",
    "gpu_process_bytes",
    "gpu_used_bytes",
)


@dataclass
class Run:
    returncode: int
    output: str
    status: str
    verdict: str
    reason: str
    iterations_done: int
    failures: int
    worker_pid: int | None
    findings: dict[str, dict]
    events: dict[str, int]
    seconds: float

    def leaks(self) -> set[str]:
        return {m for m, f in self.findings.items() if f["verdict"] == "leak"}

    def describe(self) -> str:
        lines = [
            f"status {self.status}, exit {self.returncode}, {self.iterations_done} iterations, "
            f"{self.failures} failures, {self.seconds:.1f} s"
        ]
        for metric, f in sorted(self.findings.items()):
            if f["verdict"] == "no_data":
                continue
            lines.append(
                f"  {metric:22} {f['verdict']:12} slope {_show(f['slope'], metric)}/it "
                f"(low {_show(f['slope_low'], metric)}), growth {_show(f['total_growth'], metric)}"
            )
        return "\n".join(lines)


def _show(value: float | None, metric: str) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if metric.endswith("_bytes"):
        return f"{value / KiB:.1f} KiB" if abs(value) < MiB else f"{value / MiB:.2f} MiB"
    return f"{value:.3g}"


def run_soak(tmp_path: Path, name: str, inject: dict[str, object]) -> Run:
    """One `soak run` of this file's profile; the run's results, and no stub or region left."""
    profile = tmp_path / f"{name}.toml"
    profile.write_text(profile_text(name, inject))
    db = tmp_path / "soak.db"
    regions_before = shm_regions()
    started = time.monotonic()
    proc = soak("run", str(profile), "--db", str(db), "--no-progress", timeout=RUN_TIMEOUT_S)
    seconds = time.monotonic() - started
    output = proc.stdout + proc.stderr
    assert db.exists(), output
    ((run_id, status, verdict, reason, done, worker),) = query(
        db, "SELECT id, status, verdict, reason, iterations_done, worker_pid FROM runs"
    )
    failures = query(
        db, "SELECT coalesce(sum(failures), 0) FROM iterations WHERE run_id = ?", run_id
    )
    columns = ("metric", "verdict", "slope", "slope_low", "slope_high", "total_growth", "reason")
    findings = {
        row[0]: dict(zip(columns, row, strict=True))
        for row in query(db, f"SELECT {', '.join(columns)} FROM findings WHERE run_id = ?", run_id)
    }
    events = dict(
        query(db, "SELECT kind, count(*) FROM events WHERE run_id = ? GROUP BY kind", run_id)
    )
    run = Run(
        proc.returncode,
        output,
        status,
        verdict,
        reason,
        done,
        failures[0][0],
        worker,
        findings,
        events,
        seconds,
    )
    print(f"\n[{name}] {run.describe()}")
    assert_nothing_left(worker, regions_before)
    return run


def assert_nothing_left(
    worker_pid: int | None, regions_before: set[str], wait_s: float = 10
) -> None:
    """No stub of this run's worker alive, no new shm region that no live stub names.

    Other runs may be going on the machine at the same time, so stubs count as ours by the
    worker pid they were started for (their argv), and a new region counts as left behind only
    while no live stub names it.
    """
    deadline = time.monotonic() + wait_s
    while True:
        stubs = find_stub_processes()
        ours = [s.pid for s in stubs if worker_pid in (s.parent_pid_arg, s.ppid)]
        named = {r for s in stubs for r in s.region_names}
        orphans = shm_regions() - regions_before - named
        if not ours and not orphans:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the run left stubs {ours} and shm regions {sorted(orphans)}")
        time.sleep(0.2)


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.name, marks=[pytest.mark.gpu] if c.gpu else []) for c in CASES],
)
def test_injected_leak_is_found_on_its_metric(case: Case, tmp_path, request):
    if case.gpu:
        request.getfixturevalue("gpu")  # skips, with the reason, where no GPU answers
    run = run_soak(tmp_path, case.name, case.inject)
    context = f"{case.name}:\n{run.describe()}\n{run.output[-3000:]}"

    assert run.returncode == 1, context
    assert (run.status, run.verdict) == ("leaked", "leak"), context
    assert run.iterations_done == ITERATIONS, context
    assert run.failures == 0, context  # the injection breaks no lifecycle check

    metric = case.metric
    if case.gpu and run.findings[metric]["verdict"] == "no_data" and run.events.get("gpu_sampling"):
        # In a container with its own PID namespace NVML names host pids, so per-process GPU
        # memory is unknown (soak.sampling.gpu says so in that event); the device's used
        # memory carries the injected bytes instead.
        metric = "gpu_used_bytes"
    found = run.findings[metric]
    assert found["verdict"] == "leak", context
    # The slope is stated per iteration; it must match the injected amount within 2x.
    assert 0.5 * case.per_iteration <= found["slope"] <= 2 * case.per_iteration, (
        f"{metric} slope {_show(found['slope'], metric)}/iteration, injected "
        f"{_show(case.per_iteration, metric)}/iteration\n{context}"
    )
    blamed = run.leaks() - case.allowed
    assert not blamed, f"blamed without cause: {sorted(blamed)}\n{context}"


def test_control_run_without_injection(tmp_path):
    """The same profile and thresholds with nothing injected.

    It must run to its end, and the counters must come back. Its memory metrics are reported,
    not asserted: if they show a leak with these thresholds, that is what Triton does here, and
    it is printed and warned about rather than hidden by looser thresholds.
    """
    run = run_soak(tmp_path, "control", {})
    context = f"control:\n{run.describe()}\n{run.output[-3000:]}"

    assert run.status in ("passed", "leaked", "inconclusive"), context
    assert run.returncode in (0, 1, 3), context
    assert run.iterations_done == ITERATIONS, context
    assert run.failures == 0, context
    for metric in MUST_COME_BACK:
        assert run.findings[metric]["verdict"] in ("pass", "inconclusive"), (
            f"{metric}: {run.findings[metric]['reason']}\n{context}"
        )

    memory = {m: run.findings[m] for m in MEMORY_REPORTED if m in run.findings}
    leaking = sorted(m for m, f in memory.items() if f["verdict"] == "leak")
    if leaking:
        warnings.warn(
            "control run without injection shows memory growth: "
            + "; ".join(f"{m}: {memory[m]['reason']}" for m in leaking),
            stacklevel=1,
        )
