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


def gpu_problem() -> str | None:
    """Why pinned/GPU memory cannot work here (None: a GPU answers). Loads only libcudart."""
    from soak.triton import capi
    from soak.triton.memory import Cuda

    try:
        install = capi.locate()
    except Exception as exc:  # noqa: BLE001 - the worker reports a missing core in detail
        return str(exc)
    return Cuda(install.library_dir).problem


def prepare(profile: Profile, db: str | Path, ray_address: str | None = None) -> Store:
    """Everything that can be refused is refused here, before a run row exists.

    On Ray (``ray_address``) the cluster is joined here, and the GPUs checked are the nodes':
    a cell that no live node can take is refused.
    """
    if ray_address:
        from soak.runner import ray_cells

        ray_cells.connect(ray_address)
        ray_cells.check_placeable(profile)
    elif profile.uses_gpu:
        check_machine(profile, gpu_problem())
    check_triton_home(profile)
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


# -- Ray (soak run --ray): the same cells, placed on a cluster; see soak.runner.ray_cells -------
def ray_matrix(
    profile: Profile,
    store: Store,
    address: str,
    on_progress: Callable[[Any], None] | None = None,
) -> Any:
    """The cells of ``profile`` as Ray tasks on the cluster at ``address`` (`auto`, `local` or
    an address): call ``run()`` for the outcomes, ``cancel()`` on Ctrl-C."""
    from soak.runner.ray_cells import RayMatrix

    return RayMatrix(profile, store, address, on_progress)
