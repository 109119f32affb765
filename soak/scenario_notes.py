"""What each scenario's warm-up covers and which units it counts: the line `soak run` prints
under each cell's heading.

Plain data and one formatting function, no imports beyond the standard library, so that the
CLI can say it without loading the workload (and Triton's bindings with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ScenarioInfo:
    name: str
    units: tuple[str, ...]  # what a slope can be stated per (soak.store.UNIT_COLUMNS)
    warmup: str  # what the warm-up iterations cover, for the output and the README


SCENARIOS = {
    "servers": ScenarioInfo(
        "servers",
        ("server", "model_load", "failed_load", "inference", "error"),
        "each iteration creates and deletes its servers; the warm-up covers one-time costs of "
        "the process (Triton's and the backend's libraries, first allocator arenas).",
    ),
    "reload": ScenarioInfo(
        "reload",
        ("model_load", "failed_load", "inference", "error"),
        "iteration 1 also creates the long-lived servers, so the warm-up covers their creation "
        "and the first load cycles; later iterations are load-infer-unload cycles only.",
    ),
    "traffic": ScenarioInfo(
        "traffic",
        ("inference", "error"),
        "iteration 1 also creates the servers and loads their models, so the warm-up covers "
        "that and the first bursts; later iterations are bursts of inferences only.",
    ),
}


def describe(run: dict[str, Any]) -> str:
    """One line for the output: the scenario, what its warm-up covers, its units."""
    info = SCENARIOS[run["scenario"]]
    warmup = run["warmup"]
    behaviour = run["behaviour"]
    if behaviour in ("execute_raises", "error_response"):
        behaviour += f" on {run['error_fraction']:g} of the requests"
    units = ", ".join(u.replace("_", " ") for u in info.units)
    line = (
        f"scenario {info.name}, models {behaviour}; warm-up: {warmup} iteration(s) not judged: "
        f"{info.warmup} Slopes per iteration and per {units}."
    )
    if run.get("load_generator") == "perf_analyzer":
        line += " " + PERF_ANALYZER_NOTE
    return line


#: What a run with `load_generator = "perf_analyzer"` says under its heading.
PERF_ANALYZER_NOTE = (
    "Load: one perf_analyzer --request-count run per burst of the generated models, fed soak's "
    "inputs; perf_analyzer checks each answer against soak's expected outputs, except through "
    "shared memory, where answers are counted, not checked (perf_analyzer 2.51 fails correct "
    "ones there); a failed burst counts one failed request per perf_analyzer thread that "
    "reported one (it stops at the first)."
)
