"""The supervisor: starts the worker, samples it at each quiet point, watches the clock.

It owns the database writes of a run. Whatever the worker does (crash, hang, exit), the
supervisor records it, cleans up the worker's leftovers (stubs, shm regions) as findings,
and ends the run with a status; the analysis then runs on what was stored.
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from soak.errors import SoakError, StoreError
from soak.profile.profile import Profile
from soak.runner import endings, teardown, triton_choice, workdirs
from soak.runner import protocol as proto
from soak.runner.attribution import QuietWindows
from soak.runner.iteration_sampling import IterationSampling
from soak.runner.servers import ServerSampling, remove_client_regions
from soak.runner.tritonlog import TRITON_LOG_ROWS, log_events
from soak.runner.views import IterationView, PhaseView, RunOutcome, run_columns
from soak.runner.watch import Watch
from soak.sampling.gpu import GpuSampler
from soak.sampling.process import ProcessTreeSampler, WorkerGoneError
from soak.store import Store, event
from soak.triton.facts import LogReader

log = logging.getLogger(__name__)

#: How long a worker may take to exit after its last report before the teardown kills it.
_EXIT_AFTER_REPORT_S = 30.0
_EXIT_AFTER_DONE_S = 60.0

WATCHDOG_GRACE_S = 2.0
STARTUP_TIMEOUT_S = 120.0


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
        self.sampling = IterationSampling(
            store, self.gpu, self._log_rows, self.profile.run["iterations"]
        )
        # One handler per message kind; each returns True when the run has ended.
        self._handlers: dict[type[proto.Message], Callable[[Watch, Any], bool]] = {
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
                self.store.end_run_after_failure(
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
        watch = Watch(
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
            target=self.sampling.interval_loop,
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

    def _step(self, watch: Watch) -> bool:
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

    def _wait(self, watch: Watch) -> bool:
        """Wait up to 0.25 s for input; meanwhile check deadlines and that the worker lives."""
        channel = watch.channel
        ready, _, _ = select.select([channel], [], [], 0.25)
        if ready:
            if not channel.feed():
                endings.worker_ended(watch, self._recorder(watch))
                return True
            return False
        now = time.monotonic()
        expired = [(d, p, it, inst) for inst, (d, p, it) in watch.deadlines.items() if d < now]
        if expired:
            _, phase, it, inst = expired[0]
            endings.hang(watch, self._recorder(watch), it, inst, phase, watch.details.get(inst, ""))
            return True
        if not watch.got_hello and now > watch.hello_deadline:
            endings.hang(watch, self._recorder(watch), None, None, "startup")
            return True
        if watch.proc.poll() is not None and not select.select([channel], [], [], 0)[0]:
            endings.worker_ended(watch, self._recorder(watch))
            return True
        return False

    def _on_hello(self, watch: Watch, message: proto.Hello) -> bool:
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
        for note in message.notes:
            log.warning("%s", note)
        self.sampling.current_iteration = 0
        self.sampling.iteration_running.set()
        return False

    def _on_phase(self, watch: Watch, message: proto.Phase) -> bool:
        deadline = time.monotonic() + message.timeout_s + WATCHDOG_GRACE_S
        watch.deadlines[message.instance] = (deadline, message.phase, message.iteration)
        watch.details[message.instance] = message.detail
        if message.instance < 0:  # the preflight, before Hello: its timeout, not startup's
            watch.hello_deadline = max(watch.hello_deadline, deadline + STARTUP_TIMEOUT_S)
            return False
        self.sampling.current_phase = message.phase
        self.sampling.current_iteration = message.iteration
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

    def _on_quiet(self, watch: Watch, message: proto.Quiet) -> bool:
        quiet_began = time.time()
        watch.deadlines.clear()
        self.sampling.iteration_running.clear()
        try:
            view = self.sampling.quiet_point(watch, message)
        except WorkerGoneError:  # it ended just after its report: that is how the run ends
            endings.worker_ended(watch, self._recorder(watch))
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
        self.sampling.current_iteration = message.iteration + 1
        self._quiet_windows.hold(message.iteration, quiet_began)
        self.sampling.iteration_running.set()
        try:
            watch.channel.send(proto.Continue(stop=stop))
        except BrokenPipeError:
            # It ended after its report (a tritonserver it drove crashed: its Failed is
            # already in the pipe, read next); the pipe's end says how it ended.
            log.info("run %d: the worker ended after its quiet point", watch.run_id)
            return False
        if stop:
            watch.outcome.status = "interrupted"
            watch.outcome.reason = (
                f"stopped by {self.stopped_by} after iteration {message.iteration + 1}"
            )
        return False

    def _on_hung(self, watch: Watch, message: proto.Hung) -> bool:
        # What went wrong before the hang (a stub that died: "... is not healthy") is news too.
        self._record(
            watch.run_id,
            [
                event("failure", f["message"], message.iteration, f["instance"], f["phase"])
                for f in message.failures
            ],
        )
        endings.hang(
            watch,
            self._recorder(watch),
            message.iteration,
            message.instance,
            message.phase,
            message.detail,
        )
        return True

    def _on_failed(self, watch: Watch, message: proto.Failed) -> bool:
        detail = "\n" + message.traceback if message.traceback else ""
        self._record(watch.run_id, [event("error", message.error + detail)])
        self._await_exit(watch, _EXIT_AFTER_REPORT_S, "its failure")
        outcome = watch.outcome
        outcome.status = "failed" if message.setup else "crashed"
        outcome.reason = message.error
        outcome.events.append({"setup": message.setup})
        return True

    def _on_done(self, watch: Watch, message: proto.Done) -> bool:
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
        self._await_exit(watch, _EXIT_AFTER_DONE_S, "its end")
        if outcome.status != "interrupted":
            outcome.status = "failed" if outcome.failures else "passed"
            outcome.reason = (
                f"{outcome.failures} check(s) failed" if outcome.failures else "all checks passed"
            )
        return True

    def _await_exit(self, watch: Watch, seconds: float, reported: str) -> None:
        """The worker's report stands however long its exit takes: one that is still running
        `seconds` after it (stuck closing a client of a dead server) is noted and left to the
        teardown, which kills its tree."""
        try:
            watch.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            line = (
                f"the worker (pid {watch.proc.pid}) was still running {seconds:g} s after "
                f"reporting {reported}; it was killed"
            )
            log.warning("run %d: %s", watch.run_id, line)
            self._record(watch.run_id, [event("slow_exit", line)], tolerant=True)

    def _teardown(self, watch: Watch) -> None:
        """Whatever ended the run: end the worker's tree, store what is left, remove leftovers."""
        teardown.kill_tree(watch.proc)
        watch.channel.close()
        # A failing database (disk full) must not skip the cleanup of the worker's leftovers.
        self._record(
            watch.run_id,
            log_events(watch.log_reader.new_lines(), None, self._log_rows),
            tolerant=True,
        )
        unsaved = self.sampling.take_unsaved()
        if unsaved:  # taken during the iteration that crashed or hung: what led up to it
            try:
                self.store.add_interval_samples(watch.run_id, unsaved)
            except SoakError as exc:
                log.warning("interval samples of the last iteration not stored: %s", exc)
        if watch.servers is not None:
            orphans = watch.servers.end_orphans() + remove_client_regions(watch.proc.pid)
            self._record(watch.run_id, orphans, tolerant=True)
        self._record(watch.run_id, teardown.cleanup_leftovers(watch.sampler), tolerant=True)
        sites = self._quiet_windows.store_sites(self.store, watch.run_id, watch.workdir)
        self._record(watch.run_id, sites, tolerant=True)

    # -- endings ----------------------------------------------------------------------------
    def _record(self, run_id: int, events: list[dict[str, Any]], tolerant: bool = False) -> None:
        """Store events; `tolerant` (teardown): log a store failure instead of raising it."""
        try:
            self.store.add_events(run_id, events)
        except StoreError as exc:
            if not tolerant:
                raise
            log.warning("run %d: %d event(s) not stored: %s", run_id, len(events), exc)

    def _recorder(self, watch: Watch) -> endings.Record:
        return lambda events: self._record(watch.run_id, events)
