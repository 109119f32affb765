"""Checks across keys, after each key passed its own: settings that contradict each other, or
that would do nothing in every scenario the run has (a user who wrote them expects them to
apply)."""

from __future__ import annotations

from typing import Any

from soak.analysis.verdict import MetricRule
from soak.errors import ProfileError
from soak.profile import targets
from soak.profile.keys import dotted, kind_of, show_value
from soak.profile.thresholds import FEATURE_UNITS, SCENARIO_UNITS, UNITS


def check_run(source: str, run: dict[str, Any], matrix: dict[str, tuple] | None = None) -> None:
    matrix = matrix or {}
    if run["triton_home"] and (run["triton"] or "triton" in matrix):
        label = "matrix.triton" if "triton" in matrix else "triton"
        raise ProfileError(
            f"{source}: {label} and triton_home both name the Triton to run; give one of them"
        )
    if any(not v.strip() for v in matrix.get("triton", ())):
        raise ProfileError(
            f"{source}: matrix.triton lists an empty value; name a version or a home in each"
        )
    if run["warmup"] >= run["iterations"]:
        raise ProfileError(
            f"{source}: warmup = {run['warmup']} leaves no iteration to analyse "
            f"(iterations = {run['iterations']}); warmup must be smaller than iterations"
        )
    matrix = matrix or {}
    targets.check_target(source, run, matrix)
    scenarios = matrix.get("scenario", (run["scenario"],))
    behaviours = matrix.get("behaviour", (run["behaviour"],))
    servers = max(matrix.get("servers", (run["servers"],)))
    in_process = "in_process" in matrix.get("target", (run["target"],))
    if run["response_cache"] != "none" and servers > 1 and in_process:
        raise ProfileError(
            f"{source}: response_cache = {run['response_cache']!r} needs servers = 1 with "
            "target 'in_process': Triton's cache manager is one per process, so a second "
            "in-process server with a cache fails to start ('TritonCacheManager already holds "
            "a cache', Triton 2.51); target 'tritonserver' gives each server its own process"
        )
    composed = [k for k in ("generated_ensemble", "bls") if run[k] not in (False, "off")]
    if composed and "init_raises" in behaviours:
        raise ProfileError(
            f"{source}: {composed[0]} needs the add/sub model it calls to load; it cannot go "
            "with behaviour = 'init_raises'"
        )
    if "traffic" in scenarios and "init_raises" in behaviours:
        label = lambda k: f"matrix.{k}" if k in matrix else k  # noqa: E731
        raise ProfileError(
            f"{source}: {label('behaviour')} = 'init_raises' cannot go with "
            f"{label('scenario')} = 'traffic' (its models load once, before any traffic); "
            "use scenario 'servers' or 'reload' for failing loads"
        )


def check_units(
    source: str,
    run: dict[str, Any],
    matrix: dict[str, tuple],
    thresholds: dict[str, MetricRule],
    given: Any,
) -> None:
    """Refuse keys that would do nothing in every scenario the run has: a user who wrote them
    expects them to apply."""
    scenarios = matrix.get("scenario", (run["scenario"],))
    where = "matrix.scenario" if "scenario" in matrix else "scenario"
    if run["reload_new_version"] and "reload" not in scenarios:
        raise ProfileError(
            f"{source}: reload_new_version = true does nothing with {where} = "
            f"{', '.join(map(repr, scenarios))} (only scenario 'reload' loads new versions)"
        )
    for metric, rule in (given or {}).items():
        for key in rule if isinstance(rule, dict) else ():
            unit = key.removeprefix("slope_per_")
            if key == "slope_per_iteration" or unit not in UNITS or unit in FEATURE_UNITS:
                continue
            if not any(unit in SCENARIO_UNITS[s] for s in scenarios):
                raise ProfileError(
                    f"{source}: {dotted('thresholds', metric, key)} does nothing with {where} = "
                    f"{', '.join(map(repr, scenarios))} (no {unit.replace('_', ' ')} counted per "
                    f"iteration; its units: {', '.join(SCENARIO_UNITS[scenarios[0]])}); use "
                    "slope_per_iteration"
                )


def check_ray_resources(source: str, resources: dict[str, Any]) -> None:
    """Custom resources are names with positive amounts; CPU and GPU come from the cell."""
    for name, amount in resources.items():
        label = dotted("ray", "resources", name)
        if name in ("CPU", "GPU", "memory", "object_store_memory"):
            raise ProfileError(
                f"{source}: {label} is set by soak from the cell (servers, GPU use); "
                "name custom resources only"
            )
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not amount > 0:
            raise ProfileError(
                f"{source}: {label} must be a number > 0, got {show_value(amount)} "
                f"({kind_of(amount)})"
            )
