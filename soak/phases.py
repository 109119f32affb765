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
