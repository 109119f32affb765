"""A profile's matrix cells on a Ray cluster: one Ray task per cell, the driver the only writer.

On its node a cell runs the ordinary supervisor/worker pair into a node-local database, in a
process of its own session that is no child of the Ray worker: Ray kills a task's direct
children with its worker, and `ray.cancel(force=False)` does not interrupt a task that waits
(both seen with Ray 2.60). That cell process watches the Ray worker; when the worker is gone
(force-cancelled, or its node died) it ends its own worker's tree and removes the stubs' shm
regions, as a second Ctrl-C does locally. The task returns the run's rows; the driver imports
them tagged with the node (host, Ray node id, GPU) and the caller judges them as a local run.

Three modules, one per process: `placement` (which node can take a cell; no Ray), `node` (the
Ray task and the cell process) and `driver` (joins the cluster, starts and collects the cells).
Ray is optional: it is imported only through `import_ray`, and only when asked for.
"""

from __future__ import annotations

from typing import Any

from soak.errors import SoakError

INSTALL_LINE = "pip install 'soak[ray]'"


def import_ray() -> Any:
    """The ray module, or the one-line refusal that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise SoakError(
            f"--ray needs Ray, which is not installed here; install it with: {INSTALL_LINE}"
        ) from exc
    return ray
