"""The key reference (profiles/README.md), generated from the schema so it cannot drift."""

from __future__ import annotations

from typing import Any

from soak.profile.keys import Key, fmt_number, type_name
from soak.profile.schema import MATRIX_KEYS, all_keys
from soak.profile.thresholds import UNITS, default_thresholds


def _toml(value: Any) -> str:
    """A default as it would be written in a profile."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def _range(key: Key) -> str:
    if key.choices:
        return ", ".join(f"`{c}`" for c in key.choices)
    if key.low is None and key.high is None:
        return "any"
    return key.allowed().replace(" .. ", " to ")


def key_reference() -> str:
    """The text of profiles/README.md, generated from the schema so it cannot drift."""
    lines = [
        "# Profile keys",
        "",
        "<!-- Generated from soak/profile.py (soak.profile.key_reference()); do not edit. "
        'Regenerate: .venv/bin/python -c "import soak.profile as p; '
        "open('profiles/README.md', 'w').write(p.key_reference())\" -->",
        "",
        "A profile is a TOML file under `profiles/` (run it by name: `soak run smoke`) or "
        "anywhere (run it by path). Every key is optional; a key left out takes its default. "
        "Validation is strict: an unknown key, a wrong type (`2.0` or `true` where an integer "
        "is wanted, `1` where true or false is wanted) or a value out of range is an error "
        "naming the file, the key and what is allowed, and no run is recorded. `memory_type` "
        '`pinned` or `gpu`, `instance_kind = "gpu"` and `inject.gpu_bytes_per_server > 0` '
        "need an NVIDIA GPU and are refused on a machine without one. `warmup` must be "
        "smaller than `iterations`.",
        "",
        "| key | type | default | allowed | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, key in all_keys():
        default = "per metric (below)" if name.startswith("thresholds.") else _toml(key.default)
        kind = type_name(key.kind).removeprefix("an ").removeprefix("a ")
        lines.append(f"| `{name}` | {kind} | {default} | {_range(key)} | {key.doc} |")
    lines += [
        "",
        "## thresholds",
        "",
        "`[thresholds.<metric>]` changes how one metric is judged; unnamed fields keep these "
        "defaults. Memory metrics are judged by slope and growth budget (bytes), counters by "
        "how far above their post-warm-up baseline they end (tolerance). "
        "`slope_per_<unit>` (" + ", ".join(f"`{u}`" for u in UNITS) + ") judges a memory "
        "metric per unit instead of per iteration: the threshold per iteration becomes that "
        "value times the unit's mean count per analysed iteration (the smallest, when several "
        "are given); a run whose iterations hold none of that unit keeps slope_per_iteration. "
        "No metric has one by default.",
        "",
        "| metric | kind | slope_per_iteration | growth_budget | tolerance | enabled |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for metric, t in default_thresholds().items():
        cols = [t.slope_per_iteration, t.growth_budget, t.tolerance]
        shown = ["-" if c is None else fmt_number(c) for c in cols]
        lines.append(f"| `{metric}` | {t.kind} | {' | '.join(shown)} | {_toml(t.enabled)} |")
    lines += [
        "",
        "## matrix",
        "",
        "`[matrix]` runs one run per combination of the listed values (the product), e.g. "
        '`servers = [1, 4]` and `memory_type = ["system", "pinned"]` give four runs. '
        "Each list must be non-empty, hold allowed values of its key and name each value "
        "once. Keys that can vary: " + ", ".join(f"`{k}`" for k in MATRIX_KEYS) + ".",
        "",
    ]
    return "\n".join(lines)
