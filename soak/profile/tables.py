"""The profile's tables read against their key tables: a section's keys, [thresholds.<metric>],
[matrix], [models] with [model.<name>] (paths resolved against the profile's folder), and the
one line for a key that is none of them."""

from __future__ import annotations

import difflib
from dataclasses import replace
from pathlib import Path
from typing import Any

from soak.analysis.verdict import MetricRule
from soak.errors import ProfileError
from soak.profile.keys import Key, dotted, kind_of, show_value
from soak.profile.schema import MATRIX_KEYS, RUN_KEYS
from soak.profile.sections import MODEL_KEYS, SECTIONS
from soak.profile.thresholds import THRESHOLD_KEYS, UNITS


def unknown_top_level(source: str, key: str, run_keys: list[str]) -> str:
    """One line for a key that is neither a run key nor a section: the closest name, then the
    sections; the run keys are too many for one line (profiles/README.md lists them)."""
    sections = [
        *(f"[{s}]" for s in SECTIONS),
        "[thresholds]",
        "[matrix]",
        "[models]",
        "[model.<name>]",
    ]
    names = run_keys + [s.strip("[]") for s in sections]
    close = difflib.get_close_matches(key, names, n=1)
    guess = f" (did you mean {close[0]}?)" if close else ""
    return (
        f"{source}: unknown key {dotted(key)}{guess}; allowed: the run keys of "
        f"profiles/README.md and the sections {', '.join(sections)}"
    )


def model_tables(source: str, value: Any) -> dict[str, dict[str, Any]]:
    table = as_table(source, ("model",), value)
    out = {}
    for name, settings in table.items():
        values = {k.name: k.default for k in MODEL_KEYS}
        values.update(section(source, ("model", name), settings, MODEL_KEYS))
        shape = {}
        for tensor, dims in values["shape"].items():
            if (
                not isinstance(dims, list)
                or not dims
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims)
            ):
                raise ProfileError(
                    f"{source}: {dotted('model', name, 'shape', tensor)} must be a non-empty "
                    f"list of positive integers, got {show_value(dims)}"
                )
            shape[tensor] = list(dims)
        values["shape"] = shape
        out[name] = values
    return out


def user_models(
    source: str, models: dict[str, Any], model: dict[str, dict[str, Any]], strict: bool = True
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Resolve paths against the profile's folder and check that every name is there."""
    base = Path(source).parent if not source.startswith("<") else Path.cwd()
    repos = []
    for i, entry in enumerate(models["repositories"]):
        label = f"models.repositories[{i}]"
        if not isinstance(entry, str) or not entry:
            raise ProfileError(f"{source}: {label} must be a path, got {show_value(entry)}")
        path = (base / entry).resolve()
        if not path.is_dir():
            raise ProfileError(f"{source}: {label} = {entry!r}: {path} is not a directory")
        repos.append(path)
    load = models["load"]
    for i, name in enumerate(load):
        if not isinstance(name, str) or not name:
            raise ProfileError(
                f"{source}: models.load[{i}] must be a model name, got {show_value(name)}"
            )
        if "/" in name or "\\" in name or name in (".", ".."):
            raise ProfileError(
                f"{source}: models.load[{i}] = {name!r} is a path; a model is named by its "
                "folder's name inside one of models.repositories"
            )
        if load.count(name) > 1:
            raise ProfileError(f"{source}: models.load lists {name!r} more than once")
        if not repos:
            raise ProfileError(
                f"{source}: models.load names {name!r} but models.repositories is empty"
            )
        folder = next((r / name for r in repos if (r / name).is_dir()), None)
        if folder is None:
            raise ProfileError(
                f"{source}: models.load: no model {name!r} (a folder) in "
                + ", ".join(str(r) for r in repos)
            )
        if strict and not any((r / name / "config.pbtxt").is_file() for r in repos):
            raise ProfileError(
                f"{source}: models.load: model {name!r} ({folder}) has no config.pbtxt and "
                "strict_model_config = true (Triton's auto-complete off) refuses it; set "
                "strict_model_config = false to let its backend complete the config"
            )
    for name, settings in model.items():
        if name not in load:
            raise ProfileError(
                f"{source}: {dotted('model', name)} is not in models.load "
                f"({', '.join(map(repr, load)) or 'empty'})"
            )
        if settings["input_data"]:
            from soak.workload import perfdata  # numpy: only for profiles that need it

            path = (base / settings["input_data"]).resolve()
            try:
                perfdata.load(path)
            except ProfileError as exc:
                raise ProfileError(
                    f"{source}: {dotted('model', name, 'input_data')}: {exc}"
                ) from None
            settings["input_data"] = str(path)
    for name in load:  # every loaded model has its settings, defaults where not given
        model.setdefault(name, {k.name: k.default for k in MODEL_KEYS})
    return {"repositories": [str(r) for r in repos], "load": list(load)}, model


def as_table(source: str, path: tuple[str, ...], value: Any) -> dict:
    if not isinstance(value, dict):
        raise ProfileError(
            f"{source}: {dotted(*path)} must be a table ([{dotted(*path)}]), got "
            f"{show_value(value)} ({kind_of(value)})"
        )
    return value


def section(
    source: str, path: tuple[str, ...], value: Any, keys: tuple[Key, ...]
) -> dict[str, Any]:
    table = as_table(source, path, value)
    by_name = {k.name: k for k in keys}
    out = {}
    for key, item in table.items():
        if key not in by_name:
            raise ProfileError(
                f"{source}: unknown key {dotted(*path, key)}; allowed: {', '.join(by_name)}"
            )
        out[key] = by_name[key].check(source, item, dotted(*path, key))
    return out


def thresholds(source: str, value: Any, base: dict[str, MetricRule]) -> dict[str, MetricRule]:
    table = as_table(source, ("thresholds",), value)
    out = {}
    for metric, rule in table.items():
        if metric not in base:
            raise ProfileError(
                f"{source}: unknown metric {dotted('thresholds', metric)}; metrics: "
                + ", ".join(base)
            )
        values = section(source, ("thresholds", metric), rule, THRESHOLD_KEYS)
        per_unit = dict(base[metric].slope_per_unit)
        for unit in UNITS:
            if f"slope_per_{unit}" in values:
                per_unit[unit] = values.pop(f"slope_per_{unit}")
        out[metric] = replace(base[metric], **values, slope_per_unit=per_unit)
    return out


def matrix(source: str, value: Any) -> dict[str, tuple]:
    table = as_table(source, ("matrix",), value)
    if not table:
        raise ProfileError(
            f"{source}: [matrix] is empty (it varies nothing); name a key with a list of "
            f"values, or remove the table; matrix keys: {', '.join(MATRIX_KEYS)}"
        )
    keys = {k.name: k for k in RUN_KEYS}
    out = {}
    for key, values in table.items():
        label = dotted("matrix", key)
        if key not in MATRIX_KEYS:
            raise ProfileError(
                f"{source}: {label} cannot vary; matrix keys: {', '.join(MATRIX_KEYS)}"
            )
        if not isinstance(values, list) or not values:
            raise ProfileError(
                f"{source}: {label} must be a non-empty list of values, got {show_value(values)}; "
                f"each allowed {keys[key].allowed()}"
            )
        checked = tuple(keys[key].check(source, v, label) for v in values)
        if len(set(checked)) != len(checked):
            twice = sorted({v for v in checked if checked.count(v) > 1}, key=str)
            raise ProfileError(
                f"{source}: {label} lists {', '.join(repr(v) for v in twice)} more than once; "
                "each value must appear once"
            )
        out[key] = checked
    return out
