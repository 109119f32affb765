"""A run's samples of the worker (or the servers apart from it): interval samples while an
iteration runs, kept until its quiet point stores them with the quiet sample, the iteration's
events and Triton's new log lines, in one transaction."""

from __future__ import annotations

import threading
from dataclasses import asdict
from typing import Any

import psutil

from soak.errors import SoakError
from soak.runner import protocol as proto
from soak.runner.tritonlog import log_events
from soak.runner.views import IterationView
from soak.runner.watch import Watch
from soak.sampling.gpu import GpuSampler
from soak.store import Store, event, sample_row

OBSERVE_EVERY_S = 0.1


class IterationSampling:
    def __init__(self, store: Store, gpu: GpuSampler, log_rows: int, iterations: int) -> None:
        self.store = store
        self.gpu = gpu
        self.log_rows = log_rows  # Triton log rows kept per message (soak.runner.tritonlog)
        self.iterations = iterations
        self._interval_samples: list[dict[str, Any]] = []
        self._interval_lock = threading.Lock()
        self.current_phase: str | None = None
        self.current_iteration: int | None = None
        self.iteration_running = threading.Event()

    def take_unsaved(self) -> list[dict[str, Any]]:
        """The interval samples no quiet point stored (the iteration crashed or hung)."""
        with self._interval_lock:
            unsaved, self._interval_samples = self._interval_samples, []
        return unsaved

    def quiet_point(self, watch: Watch, message: proto.Quiet) -> IterationView:
        """Sample the quiet worker and store its iteration (one transaction); returns what a
        progress display shows."""
        run_id, outcome = watch.run_id, watch.outcome
        apart: list[dict[str, Any]] = []  # each server process's own row (client apart)
        if watch.servers is not None:
            sample, client, apart = watch.servers.sample(message.server_pids)
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
        events += log_events(watch.log_reader.new_lines(), message.iteration, self.log_rows)
        events += [event(kind, text, message.iteration) for kind, text in message.server_leftovers]
        events += [event("gpu_sampling", note, message.iteration) for note in gpu.notes]
        self.store.write_quiet_point(run_id, asdict(message), [*interval_rows, row], events, apart)
        if message.triton_version and outcome.iterations_done == 0:
            self.store.update_run(run_id, triton_version=message.triton_version)
        outcome.iterations_done = message.iteration + 1
        outcome.failures += len(message.failures)
        return IterationView(
            iteration=message.iteration,
            iterations=self.iterations,
            wall_s=message.wall_s,
            rss_bytes=sample.get("rss_bytes"),
            rss_delta_bytes=None,
            fds=sample.get("fds"),
            threads=sample.get("threads"),
            failures_total=outcome.failures,
            phase_max_s=message.phase_max_s,
            failures=message.failures,
        )

    def interval_loop(self, watch: Watch, interval: float, stopper: threading.Event) -> None:
        """Interval samples when asked for; otherwise only observe new stubs every 100 ms."""
        while not stopper.wait(interval or OBSERVE_EVERY_S):
            if not self.iteration_running.is_set():
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
                "interval", self.current_iteration, self.current_phase, watch.started, sample
            )
            with self._interval_lock:
                self._interval_samples.append(row)
