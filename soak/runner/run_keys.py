"""Where each profile run key goes: its `runs` column, its `WorkloadConfig` field (with the
conversion from the profile's plain value), or the one reader that takes it otherwise.

One table, so that a key added to `soak.profile.schema.RUN_KEYS` without a home fails
tests/runner/test_run_keys.py instead of being silently dropped on the way to the worker or
the store. `soak.runner.views.run_columns` and `soak.runner.worker.workload_config` are
derived from it. The conversions import their types when called: the supervisor reads the
columns without loading the workload.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _memory_type(value: str) -> Any:
    from soak.target.interface import MemoryType

    return MemoryType(value)


def _behaviour(value: str) -> Any:
    from soak.workload.repos import Behaviour

    return Behaviour(value)


@dataclass(frozen=True)
class RunKeyHome:
    """One run key's consumers. ``read_by`` names the reader of a key with neither a column
    nor a field (the target factory, the supervisor, the judging)."""

    key: str
    column: str | None = None  # in soak.store.schema.TABLES["runs"]
    field: str | None = None  # of soak.workload.iteration.WorkloadConfig
    convert: Callable[[Any], Any] | None = None  # profile value -> field value
    read_by: str = ""


RUN_KEY_HOMES: tuple[RunKeyHome, ...] = (
    RunKeyHome("description", read_by="the profile text stored with the run"),
    RunKeyHome("purpose", read_by="soak.run_settings.purpose_of"),
    RunKeyHome("servers", "servers", "servers"),
    RunKeyHome("iterations", "iterations_planned", read_by="supervisor and worker loop"),
    RunKeyHome("warmup", read_by="supervisor quiet windows, soak.run_settings.warmup_of"),
    RunKeyHome("memory_type", "memory_type", "memory_type", _memory_type),
    RunKeyHome("instance_kind", "instance_kind", "instance_kind"),
    RunKeyHome("gpu_device", field="gpu_device"),
    RunKeyHome("inferences_per_model", "inferences_per_model", "inferences_per_model"),
    RunKeyHome("concurrency", field="concurrency", read_by="soak.target.make_target"),
    RunKeyHome("datatype", "datatype", "datatype"),
    RunKeyHome("scenario", "scenario", "scenario"),
    RunKeyHome("behaviour", "behaviour", "behaviour", _behaviour),
    RunKeyHome("error_fraction", "error_fraction", "error_fraction"),
    RunKeyHome("error_message_chars", field="error_message_chars"),
    RunKeyHome("reload_new_version", field="reload_new_version"),
    RunKeyHome("strict_model_config", read_by="soak.runner.worker.server_features"),
    RunKeyHome("generated_ensemble", field="generated_ensemble"),
    RunKeyHome("bls", field="bls"),
    RunKeyHome("response_cache", read_by="soak.runner.worker.server_features"),
    RunKeyHome("response_cache_bytes", read_by="soak.runner.worker.server_features"),
    RunKeyHome("serialize_server_new_delete", read_by="soak.target.make_target"),
    RunKeyHome("triton_home", read_by="soak.target.make_target"),
    RunKeyHome("target", read_by="soak.target.make_target"),
    RunKeyHome("protocol", read_by="soak.target.make_target"),
    RunKeyHome("streaming", read_by="soak.target.make_target"),
    RunKeyHome("shared_memory", read_by="soak.target.make_target"),
    RunKeyHome("load_generator", read_by="soak.target.make_target"),
    RunKeyHome("triton", read_by="soak.runner.triton_choice"),
)

#: WorkloadConfig fields filled from something other than one run key.
NOT_RUN_KEY_FIELDS = ("timeouts", "injection", "user_models", "features", "target")


def run_key_columns(run: dict[str, Any]) -> dict[str, Any]:
    """The `runs` columns of a profile's run section."""
    return {h.column: run[h.key] for h in RUN_KEY_HOMES if h.column}


def run_key_fields(run: dict[str, Any]) -> dict[str, Any]:
    """The `WorkloadConfig` fields of a profile's run section, converted; a key a message
    lacks takes its schema default."""
    from soak.profile.schema import RUN_KEYS

    defaults = {k.name: k.default for k in RUN_KEYS}
    out = {}
    for h in RUN_KEY_HOMES:
        if h.field:
            value = run.get(h.key, defaults[h.key])
            out[h.field] = h.convert(value) if h.convert else value
    return out
