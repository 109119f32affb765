"""Progress: plain lines off a terminal, a rich bar on one; both carry the run's vital signs."""

from __future__ import annotations

import io
import re

from rich.console import Console

from soak.report.progress import BarProgress, PlainProgress
from soak.runner.views import IterationView, PhaseView


def view(i: int, failures: list | None = None) -> IterationView:
    return IterationView(
        iteration=i,
        iterations=10,
        wall_s=1.5,
        rss_bytes=100 * 2**20,
        rss_delta_bytes=2**20,
        fds=7,
        threads=3,
        failures_total=len(failures or []),
        phase_max_s={"load": 0.5},
        failures=failures or [],
    )


def test_plain_progress_prints_one_line_per_iteration_with_failures():
    out = io.StringIO()
    progress = PlainProgress(out)
    progress.update(view(0))
    progress.update(view(1, [{"instance": 1, "phase": "infer", "message": "OUTPUT0 wrong"}]))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("iteration 1/10 1.50s ok rss=100.0 MiB (+1.00 MiB) fds=7 threads=3")
    assert "FAILED (1)" in lines[1] and "load=500ms" in lines[1]
    assert lines[2] == "  instance 1 infer: OUTPUT0 wrong"


def test_bar_progress_shows_iteration_rss_and_failures():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    with BarProgress(10, console) as bar:
        bar.update(view(4, [{"instance": 0, "phase": "load", "message": "boom"}]))
        bar.progress.refresh()
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue())
    assert "iteration 5/10" in text
    assert "rss 100.0 MiB (+1.00 MiB)" in text and "failures 1" in text
    assert "instance 0 load: boom" in text


def phase_view(phases: dict[int, str]) -> PhaseView:
    return PhaseView(0, 10, 2, list(phases.values())[-1], phases)


def test_bar_progress_shows_the_phase_and_servers_done_within_an_iteration():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    with BarProgress(10, console) as bar:
        bar.phase(phase_view({0: "delete", 1: "load"}))
        bar.progress.refresh()
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue())
    assert "iteration 1: load, 1/2 servers done" in text


def test_plain_progress_stays_one_line_per_iteration():
    out = io.StringIO()
    progress = PlainProgress(out)
    progress.phase(phase_view({0: "load"}))
    assert out.getvalue() == ""
    progress.update(view(0))
    assert len(out.getvalue().splitlines()) == 1
