"""The supervisor: starts the worker, samples it at each quiet point, watches the clock.

It owns the database writes of a run. Whatever the worker does (crash, hang, exit), the
supervisor records it, cleans up the worker's leftovers (stubs, shm regions) as findings,
and ends the run with a status; the analysis then runs on what was stored.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from soak.errors import SoakError, StoreError
from soak.profile.loading import Profile
from soak.runner import protocol as proto
from soak.runner import teardown, triton_choice, workdirs
from soak.runner.attribution import QuietWindows
from soak.runner.servers import ServerSampling, remove_client_regions
from soak.runner.tritonlog import TRITON_LOG_ROWS, log_events
from soak.runner.views import IterationView, PhaseView, RunOutcome, run_columns
from soak.sampling.gpu import GpuSampler
from soak.sampling.process import ProcessTreeSampler, WorkerGoneError
from soak.store import Store, event, sample_row
from soak.triton.facts import LogReader

log = logging.getLogger(__name__)

WATCHDOG_GRACE_S = 2.0
OBSERVE_EVERY_S = 0.1
STARTUP_TIMEOUT_S = 120.0


@dataclass
class _Watch:
    """What the supervisor tracks while one worker runs; the handlers share it."""

    run_id: int
    workdir: Path
    proc: subprocess.Popen
    channel: proto.Channel
    sampler: ProcessTreeSampler  # of the processes that hold the servers (Hello says which)
    log_reader: LogReader
    outcome: RunOutcome
    started: float
    hello_deadline: float
    got_hello: bool = False
    first_rss: int | None = None
    servers: ServerSampling | None = None  # servers apart from the worker (Hello says so)
    deadlines: dict[int, tuple[float, str, int]] = field(default_factory=dict)
    """instance -> (monotonic deadline, phase, iteration) of the phase it is in."""
    details: dict[int, str] = field(default_factory=dict)
    """instance -> what its phase does, naming the model, where the worker said (Phase.detail)."""


class Supervisor:
    def __init__(
        self,
        profile: Profile,
        store: Store,
        on_iteration: Callable[[IterationView], None] | None = None,
        run_tags: dict[str, Any] | None = None,
        stub: Path | None = None,
        on_phase: Callable[[PhaseView], None] | None = None,
    ) -> None:
        # A `triton` version or home becomes the triton_home the worker loads (on a Ray node
        # too: it is resolved where the cell runs).
        self.profile = triton_choice.resolved(profile)
        self._log_rows = profile.sampling.get("triton_log_rows", TRITON_LOG_ROWS)
        self.store = store
        self.on_iteration = on_iteration
        self.on_phase = on_phase
        self.run_tags = run_tags or {}
        self.stub = stub or (Path(os.environ["SOAK_STUB"]) if os.environ.get("SOAK_STUB") else None)
        self.stop_requested = False
        self.kill_requested = False
        self.stopped_by = "Ctrl-C"  # or the signal's name: said in the run's reason
        self.gpu = GpuSampler()
        self._interval_samples: list[dict[str, Any]] = []
        self._interval_lock = threading.Lock()
        self._current_phase: str | None = None
        self._current_iteration: int | None = None
        self._iteration_running = threading.Event()
        # One handler per message kind; each returns True when the run has ended.
        self._handlers: dict[type[proto.Message], Callable[[_Watch, Any], bool]] = {
            proto.Hello: self._on_hello,
            proto.Phase: self._on_phase,
            proto.Quiet: self._on_quiet,
            proto.Hung: self._on_hung,
            proto.Failed: self._on_failed,
            proto.Done: self._on_done,
        }
        self._quiet_windows = QuietWindows(profile.attribution, profile.run["warmup"])

    # -- signals ----------------------------------------------------------------------------
    def request_stop(self, by: str = "Ctrl-C") -> None:
        """First Ctrl-C (or SIGTERM, SIGHUP): stop after the current iteration. Second: at
        once."""
        if self.stop_requested:
            self.kill_requested = True
        else:
            self.stopped_by = by
        self.stop_requested = True

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> RunOutcome:
        prof = self.profile
        gpu_info = self.gpu.describe()
        run_id = self.store.create_run(
            {
                **run_columns(prof),
                "triton_home": triton_choice.home_column(prof),
                "python_version": sys.version.split()[0],
                "gpu_name": ", ".join(gpu_info.get("gpu_names") or []) or None,
                "gpu_driver": gpu_info.get("driver_version"),
                **self.run_tags,
            }
        )
        workdirs.remove_abandoned()
        try:
            with tempfile.TemporaryDirectory(prefix=f"{workdirs.PREFIX}{run_id}-") as tmp:
                workdirs.mark(Path(tmp))
                outcome = self._supervise(run_id, Path(tmp))
        except Exception as exc:
            # The worker is gone and its leftovers removed (see _supervise); say on the run
            # why it ended, if the database still takes a write, then let the caller report.
            self.gpu.close()
            what = "supervisor error"
            if isinstance(exc, StoreError):
                what = "results database write failed"
            try:
                self.store.update_run(
                    run_id, status="failed", reason=f"{what}: {exc}", ended_at=time.time()
                )
            except StoreError:
                log.warning("could not record the end of run %d", run_id)
            raise
        self.gpu.close()
        self.store.update_run(
            run_id,
            status=outcome.status,
            reason=outcome.reason,
            ended_at=time.time(),
            iterations_done=outcome.iterations_done,
        )
        return outcome

    def _start_worker(self, workdir: Path) -> tuple[subprocess.Popen, proto.Channel]:
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        log_file = open(workdir / "worker.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "soak.runner.worker", str(to_worker_r), str(from_worker_w)],
            pass_fds=(to_worker_r, from_worker_w),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor only
            cwd=workdir,
        )
        log_file.close()
        os.close(to_worker_r)
        os.close(from_worker_w)
        channel = proto.Channel(from_worker_r, to_worker_w)
        channel.send(
            proto.Start(
                proto.ProfileMessage.of(self.profile),
                str(workdir),
                str(self.stub) if self.stub else None,
            )
        )
        return proc, channel

    def _supervise(self, run_id: int, workdir: Path) -> RunOutcome:
        proc, channel = self._start_worker(workdir)
        self.store.update_run(run_id, worker_pid=proc.pid)
        watch = _Watch(
            run_id=run_id,
            workdir=workdir,
            proc=proc,
            channel=channel,
            # The worker until its Hello names the processes that hold the servers.
            sampler=ProcessTreeSampler(proc.pid),
            log_reader=LogReader(workdir / "triton.log"),
            outcome=RunOutcome(run_id, "running", "", 0, 0),
            started=time.time(),
            hello_deadline=time.monotonic() + STARTUP_TIMEOUT_S,
        )
        interval = self.profile.sampling["sample_interval_ms"] / 1000.0
        stopper = threading.Event()
        # Always watch the tree during iterations: a stub that starts and ends between two
        # quiet points must still be known, or its leftovers could not be attributed.
        sampling_thread = threading.Thread(
            target=self._interval_loop,
            args=(watch, interval, stopper),
            daemon=True,
        )
        sampling_thread.start()
        try:
            while not self._step(watch):
                pass
        finally:
            stopper.set()
            sampling_thread.join(timeout=5)
            self._teardown(watch)
        return watch.outcome

    def _step(self, watch: _Watch) -> bool:
        """Handle one message, or wait a little for one; True when the run has ended."""
        if self.kill_requested:
            teardown.kill_tree(watch.proc)
            watch.outcome.status = "interrupted"
            watch.outcome.reason = f"stopped at once (second {self.stopped_by})"
            return True
        message = watch.channel.pending()
        if message is None:
            return self._wait(watch)
        handler = self._handlers.get(type(message))
        return handler(watch, message) if handler is not None else False

    def _wait(self, watch: _Watch) -> bool:
        """Wait up to 0.25 s for input; meanwhile check deadlines and that the worker lives."""
        channel = watch.channel
        ready, _, _ = select.select([channel], [], [], 0.25)
        if ready:
            if not channel.feed():
                self._worker_ended(watch)
                return True
            return False
        now = time.monotonic()
        expired = [(d, p, it, inst) for inst, (d, p, it) in watch.deadlines.items() if d < now]
        if expired:
            _, phase, it, inst = expired[0]
            self._hang(watch, it, inst, phase, watch.details.get(inst, ""))
            return True
        if not watch.got_hello and now > watch.hello_deadline:
            self._hang(watch, None, None, "startup")
            return True
        if watch.proc.poll() is not None and not select.select([channel], [], [], 0)[0]:
            self._worker_ended(watch)
            return True
        return False

    def _on_hello(self, watch: _Watch, message: proto.Hello) -> bool:
        watch.got_hello = True
        watch.deadlines.clear()  # the preflight's phases (instance -1) are over
        watch.details.clear()
        # Sample what holds the servers ([]: the worker itself); the worker is still the one
        # killed, dumped and cleaned up after. Apart: each Quiet names the live servers.
        servers = message.server_pids or [message.pid]
        if message.client_apart:
            watch.servers = ServerSampling(watch.sampler)
        elif servers != [watch.sampler.pid]:
            if len(servers) != 1:
                raise SoakError(f"the worker named server processes {servers}; one is sampled")
            watch.sampler = ProcessTreeSampler(servers[0])
        self.store.update_run(watch.run_id, triton_library=message.triton_library)
        self._current_iteration = 0
        self._iteration_running.set()
        return False

    def _on_phase(self, watch: _Watch, message: proto.Phase) -> bool:
        deadline = time.monotonic() + message.timeout_s + WATCHDOG_GRACE_S
        watch.deadlines[message.instance] = (deadline, message.phase, message.iteration)
        watch.details[message.instance] = message.detail
        if message.instance < 0:  # the preflight, before Hello: its timeout, not startup's
            watch.hello_deadline = max(watch.hello_deadline, deadline + STARTUP_TIMEOUT_S)
            return False
        self._current_phase = message.phase
        self._current_iteration = message.iteration
        if self.on_phase:
            phases = {i: p for i, (_, p, it) in watch.deadlines.items() if it == message.iteration}
            self.on_phase(
                PhaseView(
                    message.iteration,
                    self.profile.run["iterations"],
                    self.profile.run["servers"],
                    message.phase,
                    phases,
                )
            )
        return False

    def _on_quiet(self, watch: _Watch, message: proto.Quiet) -> bool:
        quiet_began = time.time()
        watch.deadlines.clear()
        self._iteration_running.clear()
        try:
            view = self._quiet_point(watch, message)
        except WorkerGoneError:  # it ended just after its report: that is how the run ends
            self._worker_ended(watch)
            return True
        if watch.first_rss is None:
            watch.first_rss = view.rss_bytes
        view.rss_delta_bytes = (
            view.rss_bytes - watch.first_rss
            if view.rss_bytes is not None and watch.first_rss is not None
            else None
        )
        if self.on_iteration:
            self.on_iteration(view)
        stop = self.stop_requested
        self._current_iteration = message.iteration + 1
        self._quiet_windows.hold(message.iteration, quiet_began)
        self._iteration_running.set()
        watch.channel.send(proto.Continue(stop=stop))
        if stop:
            watch.outcome.status = "interrupted"
            watch.outcome.reason = (
                f"stopped by {self.stopped_by} after iteration {message.iteration + 1}"
            )
        return False

    def _on_hung(self, watch: _Watch, message: proto.Hung) -> bool:
        # What went wrong before the hang (a stub that died: "... is not healthy") is news too.
        self._record(
            watch.run_id,
            [
                event("failure", f["message"], message.iteration, f["instance"], f["phase"])
                for f in message.failures
            ],
        )
        self._hang(watch, message.iteration, message.instance, message.phase, message.detail)
        return True

    def _on_failed(self, watch: _Watch, message: proto.Failed) -> bool:
        detail = "\n" + message.traceback if message.traceback else ""
        self._record(watch.run_id, [event("error", message.error + detail)])
        watch.proc.wait(timeout=30)
        outcome = watch.outcome
        outcome.status = "failed" if message.setup else "crashed"
        outcome.reason = message.error
        outcome.events.append({"setup": message.setup})
        return True

    def _on_done(self, watch: _Watch, message: proto.Done) -> bool:
        outcome = watch.outcome
        if message.failures:  # closing the long-lived servers (reload, traffic)
            last = max(outcome.iterations_done - 1, 0)
            self._record(
                watch.run_id,
                [
                    event("failure", f["message"], last, f["instance"], f["phase"])
                    for f in message.failures
                ],
            )
            outcome.failures += len(message.failures)
        watch.proc.wait(timeout=60)
        if outcome.status != "interrupted":
            outcome.status = "failed" if outcome.failures else "passed"
            outcome.reason = (
                f"{outcome.failures} check(s) failed" if outcome.failures else "all checks passed"
            )
        return True

    def _teardown(self, watch: _Watch) -> None:
        """Whatever ended the run: end the worker's tree, store what is left, remove leftovers."""
        teardown.kill_tree(watch.proc)
        watch.channel.close()
        # A failing database (disk full) must not skip the cleanup of the worker's leftovers.
        self._record(
            watch.run_id, _log_events(watch.log_reader, None, self._log_rows), tolerant=True
        )
        with self._interval_lock:
            unsaved, self._interval_samples = self._interval_samples, []
        if unsaved:  # taken during the iteration that crashed or hung: what led up to it
            try:
                self.store.add_samples(watch.run_id, unsaved)
            except SoakError as exc:
                log.warning("interval samples of the last iteration not stored: %s", exc)
        if watch.servers is not None:
            orphans = watch.servers.end_orphans() + remove_client_regions(watch.proc.pid)
            self._record(watch.run_id, orphans, tolerant=True)
        self._record(watch.run_id, teardown.cleanup_leftovers(watch.sampler), tolerant=True)
        sites = self._quiet_windows.store_sites(self.store, watch.run_id, watch.workdir)
        self._record(watch.run_id, sites, tolerant=True)

    # -- quiet point ------------------------------------------------------------------------
    def _quiet_point(self, watch: _Watch, message: proto.Quiet) -> IterationView:
        """Sample the quiet worker and store its iteration (one transaction); returns what a
        progress display shows."""
        run_id, outcome = watch.run_id, watch.outcome
        if watch.servers is not None:
            sample, client = watch.servers.sample(message.server_pids)
            sample = {**sample, **client}
        else:
            sample = watch.sampler.sample().as_dict()
        gpu = self.gpu.sample(watch.sampler.pid)
        row = sample_row(
            "quiet", message.iteration, None, watch.started, sample, message.heap, gpu.as_dict()
        )
        with self._interval_lock:
            interval_rows, self._interval_samples = self._interval_samples, []
        events = [
            event("failure", f["message"], message.iteration, f["instance"], f["phase"])
            for f in message.failures
        ]
        events += _log_events(watch.log_reader, message.iteration, self._log_rows)
        events += [
            event("server_cleanup", note, message.iteration) for note in message.server_notes
        ]
        events += [event("gpu_sampling", note, message.iteration) for note in gpu.notes]
        self.store.write_quiet_point(run_id, asdict(message), [*interval_rows, row], events)
        if message.triton_version and outcome.iterations_done == 0:
            self.store.update_run(run_id, triton_version=message.triton_version)
        outcome.iterations_done = message.iteration + 1
        outcome.failures += len(message.failures)
        return IterationView(
            iteration=message.iteration,
            iterations=self.profile.run["iterations"],
            wall_s=message.wall_s,
            rss_bytes=sample.get("rss_bytes"),
            rss_delta_bytes=None,
            fds=sample.get("fds"),
            threads=sample.get("threads"),
            failures_total=outcome.failures,
            phase_max_s=message.phase_max_s,
            failures=message.failures,
        )

    def _interval_loop(self, watch: _Watch, interval: float, stopper: threading.Event) -> None:
        """Interval samples when asked for; otherwise only observe new stubs every 100 ms."""
        while not stopper.wait(interval or OBSERVE_EVERY_S):
            if not self._iteration_running.is_set():
                continue
            sampler = watch.sampler
            try:
                if watch.servers is not None:
                    watch.servers.note_servers()
                if not interval or watch.servers is not None:
                    sampler.observe()
                    continue
                sample = sampler.sample().as_dict()
            except (psutil.Error, SoakError):
                continue
            row = sample_row(
                "interval", self._current_iteration, self._current_phase, watch.started, sample
            )
            with self._interval_lock:
                self._interval_samples.append(row)

    # -- endings ----------------------------------------------------------------------------
    def _record(self, run_id: int, events: list[dict[str, Any]], tolerant: bool = False) -> None:
        """Store events; `tolerant` (teardown): log a store failure instead of raising it."""
        try:
            self.store.add_events(run_id, events)
        except StoreError as exc:
            if not tolerant:
                raise
            log.warning("run %d: %d event(s) not stored: %s", run_id, len(events), exc)

    def _worker_ended(self, watch: _Watch) -> None:
        proc, outcome = watch.proc, watch.outcome
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            teardown.kill_tree(proc)
            code = proc.wait()
        tail = teardown.tail(watch.workdir / "worker.log")
        if code < 0:
            name = signal.Signals(-code).name
            reason = f"worker killed by {name} after {outcome.iterations_done} iteration(s)"
            kind = "signal"
        else:
            reason = (
                f"worker exited with status {code} after {outcome.iterations_done} iteration(s)"
            )
            kind = "crash"
        self._record(
            watch.run_id,
            [event(kind, reason + ("\n--- worker output ---\n" + tail if tail else ""))],
        )
        outcome.status, outcome.reason = "crashed", reason

    def _hang(
        self,
        watch: _Watch,
        iteration: int | None,
        instance: int | None,
        phase: str,
        detail: str = "",
    ) -> None:
        stacks = teardown.dump_stacks(watch.proc, watch.workdir)
        try:
            # While the worker still lives: attribute every region it holds, so that what the
            # kill leaves behind is known to be this run's and can be removed.
            watch.sampler.sample()
            died = watch.sampler.died_holding_regions()
            if watch.servers is not None:
                watch.servers.hold_regions()
        except (psutil.Error, SoakError):
            died = []
        self._record(watch.run_id, [teardown.stub_died(s, iteration) for s in died])
        what = f"phase {phase}" + (
            f" of instance {instance}" if instance is not None and instance >= 0 else ""
        )
        when = (
            "before iteration 1"
            if instance == -1 and not watch.got_hello
            else f"in iteration {(iteration or 0) + 1}"
        )
        reason = f"{what} exceeded its timeout {when}" + (f" ({detail})" if detail else "")
        reason += "; worker killed"
        self._record(
            watch.run_id,
            [
                event("hang", reason, iteration, instance, phase),
                event(
                    "stack_dump",
                    stacks or "(no stacks: the worker did not answer SIGUSR1)",
                    iteration,
                    instance,
                    phase,
                ),
            ],
        )
        teardown.kill_tree(watch.proc)
        watch.outcome.status, watch.outcome.reason = "hung", reason


def _log_events(reader: LogReader, iteration: int | None, ceiling: int) -> list[dict[str, Any]]:
    """Triton's new warning and error lines as events of the iteration they came in, the
    same message once with its count (soak.runner.tritonlog)."""
    return log_events(reader.new_lines(), iteration, ceiling)
