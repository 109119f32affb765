"""The phases of one server lifecycle, in order: shared by the workload, profiles and store."""

PHASES = (
    "server_new",
    "wait_ready",
    "load",
    "infer",
    "statistics",
    "unload",
    "isolation",
    "stop",
    "delete",
)

#: Seconds each phase may take before a run is declared hung, when the profile says nothing.
PHASE_TIMEOUTS_S = {
    p: {"load": 60.0, "unload": 60.0, "stop": 60.0, "delete": 60.0}.get(p, 30.0) for p in PHASES
}
