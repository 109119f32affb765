"""Which kind of server a run drives, behind one interface (`soak.target.interface`).

`make_target` is the one place a profile chooses: in-process servers (the C API),
`tritonserver` processes soak starts, or one a user started that soak attaches to. Nothing is
imported here eagerly, so the interface module stays free of any server library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from soak.runner.protocol import ProfileMessage
    from soak.target.interface import ServerTarget


def make_target(profile: ProfileMessage) -> ServerTarget:
    """The target a profile asks for; its `run` section is already validated."""
    run = profile.run
    server = profile.tritonserver or {}
    if run.get("target", "in_process") == "tritonserver" and server.get("url"):
        from soak.target.attached import AttachedServerTarget

        return AttachedServerTarget(
            url=server["url"],
            pid=server["pid"],
            protocol=run["protocol"],
            streaming=run["streaming"],
            shared_memory=run["shared_memory"],
        )
    if run.get("target", "in_process") == "tritonserver":
        from soak.target.remote import TritonServerTarget

        return TritonServerTarget(
            triton_home=run["triton_home"] or None,
            protocol=run["protocol"],
            streaming=run["streaming"],
            shared_memory=run["shared_memory"],
            concurrency=run.get("concurrency", 1),
            load_generator=run.get("load_generator", "soak"),
            args=tuple((profile.tritonserver or {}).get("args", ())),
            ready_timeout_s=profile.timeouts.get("wait_ready", 30.0),
            heaptrack=bool(profile.attribution.get("enabled")),
        )
    from soak.target.inprocess import InProcessTarget

    return InProcessTarget(
        triton_home=run["triton_home"] or None,
        serialize_new_delete=run["serialize_server_new_delete"],
    )


def default_target() -> ServerTarget:
    """In-process servers with default settings: for workloads built without a profile."""
    from soak.target.inprocess import InProcessTarget

    return InProcessTarget()
