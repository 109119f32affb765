"""A `soak run` as a library call: validate, then one supervised run per matrix cell.

Nothing here prints; progress goes through the callback the caller passes in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from soak.profile import Profile, check_machine
from soak.runner.supervisor import IterationView, RunOutcome, Supervisor
from soak.store import Store

log = logging.getLogger(__name__)


def gpu_problem(profile: Profile | None = None) -> str | None:
    """Why the profile's GPU settings cannot work here (None: a GPU answers, and CUDA sees its
    `gpu_device`). Loads only libcudart, from the profile's own Triton install (`triton_home`),
    which may be the only one on the machine."""
    from soak.triton import capi
    from soak.triton.memory import Cuda

    run = profile.run if profile is not None else {}
    try:
        install = capi.locate(run.get("triton_home") or None)
    except Exception as exc:  # noqa: BLE001 - the worker reports a missing core in detail
        return str(exc)
    cuda = Cuda(install.library_dir)
    device = run.get("gpu_device", 0)
    if cuda.problem is None and device >= cuda.device_count:
        return f"gpu_device = {device} names no device: CUDA sees {cuda.device_count}"
    return cuda.problem


def prepare(profile: Profile, db: str | Path) -> Store:
    """Everything that can be refused is refused here, before a run row exists."""
    check_triton_home(profile)  # first: a wrong triton_home is that, not a missing GPU
    if profile.uses_gpu:
        check_machine(profile, gpu_problem(profile))
    return Store(db)


def check_triton_home(profile: Profile) -> None:
    """A triton_home or $SOAK_TRITON_HOME that names no Triton install is refused at once.

    Only finds the library (no loading: the supervisor never hosts Triton); a file there that
    is no libtritonserver is reported by the worker, as a failed run.
    """
    from soak.triton import capi

    capi.locate(profile.run["triton_home"] or None)


def run_cells(
    profile: Profile,
    store: Store,
    on_start: Callable[[Profile], None] | None = None,
    on_iteration: Callable[[IterationView], None] | None = None,
    supervisor_hook: Callable[[Supervisor], None] | None = None,
) -> list[RunOutcome]:
    """Run each cell of the profile (one for a plain profile); stop early on interruption."""
    outcomes = []
    for cell in profile.cells():
        tags: dict[str, Any] = {}
        if cell.cell:
            tags = {"matrix": profile.name, "cell": cell.cell}
        supervisor = Supervisor(cell, store, on_iteration, tags)
        if supervisor_hook:
            supervisor_hook(supervisor)
        if on_start:
            on_start(cell)
        outcome = supervisor.run()
        outcomes.append(outcome)
        if outcome.status == "interrupted":
            break
    return outcomes
