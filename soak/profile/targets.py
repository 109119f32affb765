"""Checks of the keys that pick and configure the kind of server (`target`, the client's
`protocol`, `streaming`, `shared_memory`, `[tritonserver]`): over every matrix cell, one
line naming the key. Pure: nothing here starts a server (soak.runner.session probes one).
"""

from __future__ import annotations

import itertools
from typing import Any

from soak.errors import ProfileError
from soak.profile.keys import show_value


def check_target(source: str, run: dict[str, Any], matrix: dict[str, tuple]) -> None:
    """Client settings mean something only for a tritonserver process: every cell checked."""
    label = lambda k: f"matrix.{k}" if k in matrix else k  # noqa: E731
    names = ("target", "protocol", "streaming", "shared_memory", "memory_type", "load_generator")
    names += ("behaviour", "error_fraction")
    for combo in itertools.product(*(matrix.get(k, (run[k],)) for k in names)):
        target, protocol, streaming, shared_memory, memory_type, generator, *errors = combo
        if generator == "perf_analyzer":
            _check_perf_analyzer(source, label, target, *errors)
        if target != "tritonserver":
            if streaming or shared_memory != "none":
                what = "streaming" if streaming else "shared_memory"
                raise ProfileError(
                    f"{source}: {label(what)} needs {label('target')} = 'tritonserver' "
                    "(the in-process target has no client protocol)"
                )
            continue
        if streaming and protocol != "grpc":
            raise ProfileError(
                f"{source}: {label('streaming')} = true needs {label('protocol')} = 'grpc' "
                f"(HTTP has no stream), got {protocol!r}"
            )
        if streaming and run.get("response_cache", "none") != "none":
            raise ProfileError(
                f"{source}: {label('streaming')} = true cannot go with response_cache = "
                f"{run['response_cache']!r}: Triton 2.51's gRPC stream fails every cache miss "
                "('response output count mismatch'); use streaming = false (gRPC or HTTP)"
            )
        if memory_type != "system":
            raise ProfileError(
                f"{source}: {label('memory_type')} = {memory_type!r} is in-process only; "
                "target 'tritonserver' uses system memory (shared_memory = 'system' for regions)"
            )


def _check_perf_analyzer(
    source: str, label: Any, target: str, behaviour: str, error_fraction: float
) -> None:
    if target != "tritonserver":
        raise ProfileError(
            f"{source}: {label('load_generator')} = 'perf_analyzer' needs "
            f"{label('target')} = 'tritonserver' (perf_analyzer talks to a server process)"
        )
    if behaviour in ("execute_raises", "error_response") and error_fraction != 1:
        raise ProfileError(
            f"{source}: {label('error_fraction')} = {error_fraction:g} with "
            f"{label('load_generator')} = 'perf_analyzer': perf_analyzer ends at the first "
            "failed request and cannot say which it was; use error_fraction = 1"
        )


def check_injections(
    source: str, run: dict[str, Any], matrix: dict[str, tuple], inject: dict[str, Any]
) -> None:
    """Leaks made inside an in-process server have no meaning in a tritonserver process; a
    client leak means something only where the client is a process of its own."""
    targets = matrix.get("target", (run["target"],))
    if inject.get("client_bytes_per_request") and "in_process" in targets:
        label = "matrix.target" if "target" in matrix else "target"
        raise ProfileError(
            f"{source}: inject.client_bytes_per_request needs {label} = 'tritonserver': "
            "in-process the client is the servers' own process, so its leak could not be "
            "told from theirs"
        )
    if "tritonserver" not in targets:
        return
    for key in ("native_bytes_per_server", "gpu_bytes_per_server", "unreleased_response_fraction"):
        if inject[key]:
            raise ProfileError(
                f"{source}: inject.{key} is made inside an in-process server; "
                "target 'tritonserver' cannot inject it"
            )


def check_args(source: str, args: list[Any]) -> None:
    for i, arg in enumerate(args):
        if not isinstance(arg, str) or not arg.startswith("-"):
            raise ProfileError(
                f"{source}: tritonserver.args[{i}] must be a flag string such as "
                f"'--log-verbose=1', got {show_value(arg)}"
            )
