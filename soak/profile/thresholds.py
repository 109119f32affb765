"""The metrics the verdict judges, with their default rules, the work units a slope can be
stated per, and the keys of a `[thresholds.<metric>]` table."""

from __future__ import annotations

from soak.analysis.verdict import MetricRule
from soak.profile.keys import Key

#: What a slope can be stated per: the unit counts stored with each iteration.
#: Units every scenario counts when the feature is in use (decoupled responses, the cache).
FEATURE_UNITS = ("response", "cache_hit", "cache_insertion")
UNITS = ("server", "model_load", "failed_load", "inference", "error", *FEATURE_UNITS)
# What each scenario counts per iteration besides FEATURE_UNITS
# (soak.scenario_notes.SCENARIOS[...].units).
SCENARIO_UNITS = {
    "servers": ("server", "model_load", "failed_load", "inference", "error"),
    "reload": ("model_load", "failed_load", "inference", "error"),
    "traffic": ("inference", "error"),
}

# Metrics the verdict judges, with default rules: memory metrics by slope and growth budget,
# counters by whether they return to their post-warm-up baseline.
MEMORY_METRICS = {
    "rss_bytes": (256 * 1024, 256 * 1024 * 1024),
    "uss_bytes": (256 * 1024, 256 * 1024 * 1024),
    "pss_bytes": (256 * 1024, 256 * 1024 * 1024),
    "children_rss_bytes": (256 * 1024, 256 * 1024 * 1024),
    "shm_bytes": (0.0, 0.0),
    "tracemalloc_bytes": (16 * 1024, 64 * 1024 * 1024),
    "mallinfo_inuse_bytes": (256 * 1024, 256 * 1024 * 1024),
    "gpu_process_bytes": (256 * 1024, 256 * 1024 * 1024),
    "gpu_used_bytes": (1024 * 1024, 512 * 1024 * 1024),
    "client_rss_bytes": (256 * 1024, 256 * 1024 * 1024),
}
COUNTER_METRICS = (
    "fds",
    "threads",
    "children",
    "stubs_alive",
    "shm_regions",
    "gc_objects",
    "client_fds",
    "client_threads",
)
#: Metrics of soak's client process, sampled apart from the servers only where the servers are
#: other processes (target tritonserver); a run without them is not judged on them.
CLIENT_METRICS = ("client_rss_bytes", "client_fds", "client_threads")
COUNTER_TOLERANCE = {"gc_objects": 2000.0}
THRESHOLD_KEYS = (
    Key(
        "slope_per_iteration",
        float,
        0.0,
        "Memory: largest acceptable growth per iteration "
        "(units of the metric; the slope's 95% lower bound is compared).",
        0.0,
    ),
    Key(
        "growth_budget",
        float,
        0.0,
        "Total growth allowed from the post-warm-up baseline to the end (counters too).",
        0.0,
    ),
    Key("tolerance", float, 0.0, "Counters: how far above baseline the end may be.", 0.0),
    Key("enabled", bool, True, "Judge this metric at all."),
    *(
        Key(
            f"slope_per_{unit}",
            float,
            None,
            f"Memory: largest acceptable growth per {unit.replace('_', ' ')}; replaces "
            "slope_per_iteration (times this unit's count per iteration) where the run has it.",
            0.0,
        )
        for unit in UNITS
    ),
)


def default_thresholds() -> dict[str, MetricRule]:
    """The rule of every judged metric when a profile says nothing about it."""
    out = {m: MetricRule(m, "memory", s, g) for m, (s, g) in MEMORY_METRICS.items()}
    for m in COUNTER_METRICS:
        out[m] = MetricRule(m, "counter", None, None, COUNTER_TOLERANCE.get(m, 0.0))
    return out
