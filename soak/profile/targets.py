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


LOOPBACK_NAMES = ("127.0.0.1", "localhost")


def attach_address(url: str, protocol: str, label: str = "tritonserver.url") -> str:
    """`url` as the client's "127.0.0.1:PORT" for `protocol`, or a ProfileError (no source)
    naming `label`: a scheme that is not the protocol's, a host that is not loopback (soak
    speaks only to 127.0.0.1), a missing or bad port."""
    rest = url.strip()
    scheme = ""
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        if scheme not in ("http", "grpc"):
            raise ProfileError(f"{label} = {url!r}: scheme {scheme!r} is neither 'http' nor 'grpc'")
        if scheme != protocol:
            raise ProfileError(
                f"{label} = {url!r} is a {scheme} address but protocol = {protocol!r}; "
                f"give the server's {protocol} address or set protocol = {scheme!r}"
            )
    rest = rest.rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        raise ProfileError(f"{label} = {url!r} has no port: write 127.0.0.1:PORT")
    if host not in LOOPBACK_NAMES:
        raise ProfileError(
            f"{label} = {url!r}: host {host!r} is not loopback; soak speaks only to "
            "127.0.0.1 (run it on the server's machine, or in its container)"
        )
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ProfileError(f"{label} = {url!r}: port {port!r} is not 1 .. 65535")
    return f"127.0.0.1:{int(port)}"


def check_attach(
    source: str,
    run: dict[str, Any],
    matrix: dict[str, tuple],
    tritonserver: dict[str, Any],
    models: dict[str, Any],
    labels: dict[str, str] | None = None,
) -> None:
    """An attached server (`[tritonserver] url` and `pid`) is someone else's: soak cannot
    start one (scenario 'servers', a matrix over target or protocol), write its repository
    (the generated models and what builds on them) or pass it flags. `labels` names the keys
    as given (`--url` for the flag)."""
    url, pid = tritonserver.get("url", ""), tritonserver.get("pid", 0)
    if not url and not pid:
        return
    names = {"url": "tritonserver.url", "pid": "tritonserver.pid", **(labels or {})}
    at = f"{source}: " if source else ""
    if not url or not pid:
        have, need = ("url", "pid") if url else ("pid", "url")
        raise ProfileError(
            f"{at}{names[have]} attaches to a running tritonserver and needs {names[need]} too "
            "(soak samples that process and talks to it at that url)"
        )
    label = lambda k: f"matrix.{k}" if k in matrix else k  # noqa: E731
    for key in ("target", "protocol", "servers"):
        if key in matrix:
            raise ProfileError(
                f"{at}matrix.{key} cannot vary with {names['url']}: an attached server is one "
                "server, of one kind, at one address"
            )
    if run["target"] != "tritonserver":
        raise ProfileError(
            f"{at}{names['url']} needs target = 'tritonserver' (got {run['target']!r})"
        )
    try:
        attach_address(url, run["protocol"], names["url"])
    except ProfileError as exc:
        raise ProfileError(f"{at}{exc}") from None
    scenarios = matrix.get("scenario", (run["scenario"],))
    if "servers" in scenarios:
        raise ProfileError(
            f"{at}{label('scenario')} = 'servers' starts and stops servers; an attached server "
            f"({names['url']}) is soaked with scenario 'reload' or 'traffic'"
        )
    if run["servers"] != 1:
        raise ProfileError(
            f"{at}servers = {run['servers']}: an attached server ({names['url']}) is one "
            "server; set servers = 1"
        )
    if not models.get("load"):
        raise ProfileError(
            f"{at}{names['url']}: soak cannot write into an attached server's repository; "
            "name the models it serves in models.load (and its repository in "
            "models.repositories)"
        )
    behaviours = matrix.get("behaviour", (run["behaviour"],))
    refused = [
        (key, value)
        for key, value in (
            ("behaviour", next((b for b in behaviours if b != "correct"), None)),
            ("generated_ensemble", run.get("generated_ensemble") or None),
            ("bls", run.get("bls") if run.get("bls", "off") != "off" else None),
            ("reload_new_version", run.get("reload_new_version") or None),
        )
        if value is not None
    ]
    if refused:
        key, value = refused[0]
        raise ProfileError(
            f"{at}{label(key)} = {show_value(value)} applies to the models soak writes, which an "
            f"attached server ({names['url']}) does not have"
        )
    if tritonserver.get("args"):
        raise ProfileError(
            f"{at}tritonserver.args are flags of a server soak starts; an attached server "
            f"({names['url']}) runs with its own"
        )
