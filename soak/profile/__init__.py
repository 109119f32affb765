"""Profiles: TOML files that say what a run does and how it is judged, validated strictly.

Every key lives in one schema table (`schema`: type, range, default, meaning); the table is
the validation (`loading`), the defaults and the documentation (profiles/README.md is
generated from it by `reference.key_reference`). An error names the file, the key and what
is allowed.
"""

from soak.profile.keys import Key
from soak.profile.loading import (
    MAX_PROFILE_BYTES,
    PROFILES_DIR,
    load,
    parse,
    resolve_path,
    shipped_names,
)
from soak.profile.profile import Profile, flag_name
from soak.profile.reference import key_reference
from soak.profile.schema import (
    BEHAVIOURS,
    DATATYPES,
    INSTANCE_KINDS,
    MATRIX_KEYS,
    MEMORY_TYPES,
    RUN_KEYS,
    SCENARIOS,
    all_keys,
)
from soak.profile.sections import (
    ATTRIBUTION_KEYS,
    INJECT_KEYS,
    MODEL_KEYS,
    MODELS_KEYS,
    RAY_KEYS,
    SAMPLING_KEYS,
    SECTIONS,
    TIMEOUT_KEYS,
)
from soak.profile.thresholds import (
    CLIENT_METRICS,
    COUNTER_METRICS,
    COUNTER_TOLERANCE,
    MEMORY_METRICS,
    THRESHOLD_KEYS,
    UNITS,
    default_thresholds,
)

__all__ = [
    "ATTRIBUTION_KEYS",
    "BEHAVIOURS",
    "CLIENT_METRICS",
    "COUNTER_METRICS",
    "COUNTER_TOLERANCE",
    "DATATYPES",
    "INJECT_KEYS",
    "INSTANCE_KINDS",
    "MATRIX_KEYS",
    "MAX_PROFILE_BYTES",
    "MEMORY_METRICS",
    "MEMORY_TYPES",
    "MODEL_KEYS",
    "MODELS_KEYS",
    "PROFILES_DIR",
    "Profile",
    "RAY_KEYS",
    "RUN_KEYS",
    "SAMPLING_KEYS",
    "SCENARIOS",
    "SECTIONS",
    "THRESHOLD_KEYS",
    "TIMEOUT_KEYS",
    "UNITS",
    "Key",
    "all_keys",
    "default_thresholds",
    "flag_name",
    "key_reference",
    "load",
    "parse",
    "resolve_path",
    "shipped_names",
]
