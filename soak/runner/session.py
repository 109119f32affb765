"""A `soak run` as a library call: validate, then one supervised, judged run per matrix cell.

Nothing here prints; progress goes through the callbacks the caller passes in::

    import soak.profile, soak.runner.session as session

    prof = soak.profile.load("smoke")
    analyses = session.run(prof, session.prepare(prof, "results/soak.db"))
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from soak.errors import ProfileError
from soak.profile.profile import Profile, flag_name
from soak.run_analysis import RunAnalysis, analyze_and_store
from soak.runner import triton_choice
from soak.runner.supervisor import Supervisor
from soak.runner.views import IterationView, PhaseView, RunOutcome
from soak.store import Store

if TYPE_CHECKING:  # Ray is optional: soak.runner.ray is imported only for a run on it
    from soak.runner.ray.driver import CellsProgress

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


def check_gpu_settings(profile: Profile, gpu_problem: str | None) -> None:
    """The profile's GPU settings (memory_type `pinned` or `gpu`, instance_kind `gpu`,
    inject.gpu_bytes_per_server > 0) on a machine without a usable GPU (``gpu_problem`` says
    why; None: a GPU answers) are a profile error, raised before any run row. The error names
    each such setting as it was given (file key, matrix axis or flag)."""
    if gpu_problem is None or not profile.uses_gpu:
        return
    settings = []
    for key in ("memory_type", "instance_kind"):
        values = {profile.run[key], *profile.matrix.get(key, ())}
        bad = sorted(v for v in values if v in ("gpu", "pinned"))
        if bad and key in profile.overrides:
            settings.append(f"{flag_name(key)} {profile.overrides[key]}")
        elif bad:
            label = f"matrix.{key}" if key in profile.matrix else key
            settings.append(f"{label} = {', '.join(bad)}")
    if profile.inject.get("gpu_bytes_per_server", 0) > 0:
        settings.append(f"inject.gpu_bytes_per_server = {profile.inject['gpu_bytes_per_server']}")
    problem = " ".join(gpu_problem.split())
    raise ProfileError(
        f"{profile.source}: {'; '.join(settings)} needs an NVIDIA GPU, but {problem}; "
        "allowed on this machine: memory_type = 'system', instance_kind = 'cpu', "
        "inject.gpu_bytes_per_server = 0"
    )


def prepare(profile: Profile, db: str | Path, ray_address: str | None = None) -> Store:
    """Everything that can be refused is refused here, before a run row exists.

    On Ray (``ray_address``) the cluster is joined here and every cell is checked against the
    live nodes' resources (GPUs included) instead of this machine's GPU: a cell that no node
    can take is refused.
    """
    triton_choice.check(profile)  # first: a wrong triton or triton_home is that, not a GPU
    check_triton_home(profile)
    if ray_address and profile.attached:
        raise ProfileError(
            f"--ray {ray_address}: an attached server (tritonserver.url) is on this machine's "
            "loopback, which a Ray node cannot reach; run without --ray"
        )
    check_tritonserver(profile)
    if ray_address:
        from soak.runner.ray import driver

        driver.connect(ray_address)
        driver.check_placeable(profile)
    elif profile.uses_gpu:
        check_gpu_settings(profile, gpu_problem(triton_choice.resolved(profile.cells()[0])))
    check_attribution(profile)
    return Store(db)


def check_attribution(profile: Profile) -> None:
    """Attribution needs its tracer, refused before any run: memray (Linux and macOS) for
    in-process servers, heaptrack for tritonserver processes, which it reads at quiet points
    where a server lives (not the `servers` scenario, whose processes end every iteration)."""
    from soak.sampling import heaptrack, memray_sites

    if not profile.attribution.get("enabled"):
        return
    where = (
        "--attribute"
        if profile.overrides.get("attribute")
        else f"{profile.source}: attribution.enabled = true"
    )
    if profile.attached:
        raise ProfileError(
            f"{where}: heaptrack traces a tritonserver it starts; an attached server "
            "(tritonserver.url) was started by someone else, so its allocation sites cannot be "
            "traced; attribute a run that starts its servers"
        )
    cells = profile.cells()
    if any(c.run["target"] == "tritonserver" and c.run["scenario"] == "servers" for c in cells):
        raise ProfileError(
            f"{where}: target 'tritonserver' in scenario 'servers' ends every server process "
            "within its iteration, so no process lives at a quiet point to read allocation "
            "sites from; attribute scenario 'reload' or 'traffic'"
        )
    targets = {c.run["target"] for c in cells}
    problems = [
        memray_sites.unavailable() if "in_process" in targets else None,
        heaptrack.unavailable() if "tritonserver" in targets else None,
    ]
    for problem in problems:
        if problem is not None:
            raise ProfileError(f"{where}: {problem}")


def check_triton_home(profile: Profile) -> None:
    """A triton_home or $SOAK_TRITON_HOME that names no Triton install is refused at once.

    Only finds the library (no loading: the supervisor never hosts Triton); a file there that
    is no libtritonserver is reported by the worker, as a failed run.
    """
    from soak.triton import capi

    for cell in profile.cells():
        capi.locate(triton_choice.resolved(cell).run["triton_home"] or None)


def check_tritonserver(profile: Profile) -> None:
    """A cell with target tritonserver needs the executable, and its `args` must be flags
    tritonserver takes: refused here in one line (soak.target.remote.check_executable)."""
    if "tritonserver" not in {c.run["target"] for c in profile.cells()}:
        return
    if profile.attached:
        check_attached_server(profile)
        return
    from soak.target.remote import check_executable

    try:
        check_executable(profile.run["triton_home"] or None, profile.tritonserver["args"])
    except ProfileError as exc:
        raise ProfileError(f"{profile.source}: {exc}") from None


def check_attached_server(profile: Profile) -> None:
    """An attached server (`[tritonserver] url`/`pid`, or --url/--pid) must be running and be
    the process listening on that url: one line naming the key or flag otherwise."""
    from soak.target.attached import check_attached

    server, flags = profile.tritonserver, profile.overrides
    url_label = "--url" if "url" in flags else "tritonserver.url"
    pid_label = "--pid" if "pid" in flags else "tritonserver.pid"
    try:
        check_attached(server["url"], server["pid"], profile.run["protocol"], url_label, pid_label)
    except ProfileError as exc:
        raise ProfileError(f"{profile.source}: {exc}") from None


class Stoppable(Protocol):
    """What a :class:`Stopper` stops: a Supervisor, or the RayMatrix of a run on Ray."""

    def request_stop(self, by: str = "Ctrl-C") -> None: ...


class Stopper:
    """How a caller (the CLI's Ctrl-C handler) stops a :func:`run` from another frame.

    The first :meth:`stop` lets the running cell finish its iteration and starts no further
    cell; a second one asks the supervisor to stop at once. On Ray the same two steps apply to
    every cell of the matrix (pending cells are cancelled at the first).
    """

    def __init__(self) -> None:
        self.requested = False
        self.by = "Ctrl-C"
        self._supervisor: Stoppable | None = None

    def stop(self, by: str = "Ctrl-C") -> None:
        """Safe from a signal handler: sets a flag and tells the running supervisor; ``by``
        (Ctrl-C, SIGTERM, ...) is named in the run's stored reason."""
        if not self.requested:
            self.by = by
        self.requested = True
        if self._supervisor is not None:
            self._supervisor.request_stop(by)

    def _attach(self, supervisor: Stoppable | None) -> None:
        self._supervisor = supervisor
        if supervisor is not None and self.requested:  # a stop that came while it was built
            supervisor.request_stop(self.by)


def run(
    profile: Profile,
    store: Store,
    on_cell: Callable[[Profile], None] | None = None,
    on_iteration: Callable[[IterationView], None] | None = None,
    on_done: Callable[[RunOutcome, RunAnalysis], None] | None = None,
    stopper: Stopper | None = None,
    on_phase: Callable[[PhaseView], None] | None = None,
    ray_address: str | None = None,
    on_cells: Callable[[CellsProgress], None] | None = None,
) -> list[RunAnalysis]:
    """Run every cell of ``profile`` (one for a plain profile), judge each and store its
    findings and status; the one library entry point of a soak run.

    Stops after a cell that was interrupted (or when ``stopper`` was asked to stop between
    cells). ``on_cell`` hears of each cell before it starts, ``on_iteration`` of each
    iteration, ``on_phase`` of each phase a server enters (keep it light: the supervisor
    calls it between messages), ``on_done`` of each cell's outcome and analysis once they
    are stored. Validate the profile with :func:`prepare` first (it also opens the store,
    and joins the cluster).

    With ``ray_address`` (`auto`, `local` or an address, as given to :func:`prepare`) the cells
    run at once as tasks on a Ray cluster (:mod:`soak.runner.ray`) and are judged as they
    come home, in the order they end; ``on_cells`` then hears how many are pending, running
    (and where) and done, instead of ``on_cell``, ``on_iteration`` and ``on_phase``.
    """
    stopper = stopper or Stopper()
    if ray_address:
        return _run_on_ray(profile, store, ray_address, on_done, stopper, on_cells)
    analyses = []
    for cell in profile.cells():
        if stopper.requested:
            break
        tags = cell.matrix_tags
        if on_cell:
            on_cell(cell)
        supervisor = Supervisor(cell, store, on_iteration, tags, on_phase=on_phase)
        stopper._attach(supervisor)
        try:
            outcome = supervisor.run()
        finally:
            stopper._attach(None)
        analysis = analyze_and_store(store, outcome.run_id)
        analyses.append(analysis)
        if on_done:
            on_done(outcome, analysis)
        if outcome.status == "interrupted":
            break
    return analyses


def _run_on_ray(
    profile: Profile,
    store: Store,
    address: str,
    on_done: Callable[[RunOutcome, RunAnalysis], None] | None,
    stopper: Stopper,
    on_cells: Callable[[CellsProgress], None] | None,
) -> list[RunAnalysis]:
    """The cells as Ray tasks; the driver imports each cell's rows and judges them here."""
    from soak.runner.ray.driver import RayMatrix

    analyses = []

    def judge(outcome: RunOutcome) -> None:
        analysis = analyze_and_store(store, outcome.run_id)
        analyses.append(analysis)
        if on_done:
            on_done(outcome, analysis)

    matrix = RayMatrix(profile, store, address, on_progress=on_cells, on_outcome=judge)
    stopper._attach(matrix)
    try:
        matrix.run()
    finally:
        stopper._attach(None)
    return analyses
