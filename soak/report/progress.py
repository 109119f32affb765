"""Progress while a run goes: a rich bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from soak.formatting import mib
from soak.runner.views import IterationView, PhaseView


def _mib(value: int | None) -> str:
    return "?" if value is None else mib(value)


def _delta(value: int | None) -> str:
    return "?" if value is None else f"{value / 2**20:+.2f} MiB"


class PlainProgress:
    """One line per iteration: what a CI log or `--no-progress` gets."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream = stream
        self.started = time.monotonic()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def phase(self, view: PhaseView) -> None:
        """Plain output stays one line per iteration."""

    def update(self, view: IterationView) -> None:
        elapsed = time.monotonic() - self.started
        per_min = (view.iteration + 1) / elapsed * 60 if elapsed > 0 else 0.0
        phases = " ".join(f"{k}={v * 1000:.0f}ms" for k, v in view.phase_max_s.items() if v)
        status = "ok" if not view.failures else f"FAILED ({len(view.failures)})"
        print(
            f"iteration {view.iteration + 1}/{view.iterations} {view.wall_s:.2f}s {status} "
            f"rss={_mib(view.rss_bytes)} ({_delta(view.rss_delta_bytes)}) fds={view.fds} "
            f"threads={view.threads} failures={view.failures_total} {per_min:.1f}/min | {phases}",
            file=self.stream,
            flush=True,
        )
        for f in view.failures:
            print(f"  instance {f['instance']} {f['phase']}: {f['message']}", file=self.stream)


class BarProgress:
    """A rich progress bar: iteration i/N, rate, ETA, RSS and its change, fds, threads, failures."""

    def __init__(self, total: int, console: Console | None = None) -> None:
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]iteration {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            TextColumn("{task.fields[phase]}"),
            console=self.console,
        )
        self.task = self.progress.add_task("soak", total=total, rate="", stats="", phase="")
        self.started = time.monotonic()

    def __enter__(self) -> BarProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def phase(self, view: PhaseView) -> None:
        """Within an iteration: the phase just entered and the servers done, so that the
        first iteration (seconds before any quiet point) shows that work goes on."""
        self.progress.update(
            self.task,
            phase=f"| iteration {view.iteration + 1}: {view.phase}, "
            f"{view.servers_done}/{view.servers} servers done",
        )

    def update(self, view: IterationView) -> None:
        elapsed = time.monotonic() - self.started
        per_min = (view.iteration + 1) / elapsed * 60 if elapsed > 0 else 0.0
        stats = (
            f"rss {_mib(view.rss_bytes)} ({_delta(view.rss_delta_bytes)}) fds {view.fds} "
            f"threads {view.threads} failures {view.failures_total}"
        )
        self.progress.update(
            self.task, completed=view.iteration + 1, rate=f"{per_min:.1f} it/min", stats=stats
        )
        for f in view.failures:
            self.console.print(f"[red]instance {f['instance']} {f['phase']}: {f['message']}")


def make_progress(total: int, plain: bool) -> PlainProgress | BarProgress:
    if plain or not sys.stdout.isatty():
        return PlainProgress()
    return BarProgress(total)
