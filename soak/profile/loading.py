"""Loading profiles: a file (or a shipped profile's name) read, parsed and validated into a Profile.

Every value is checked against `soak.profile.schema`; an error names the file, the key and
what is allowed, in one line.
"""

from __future__ import annotations

import difflib
import itertools
import stat
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from soak.analysis.verdict import MetricRule
from soak.errors import ProfileError
from soak.profile import targets
from soak.profile.schema import (
    ATTRIBUTION_KEYS,
    FEATURE_UNITS,
    MATRIX_KEYS,
    MODEL_KEYS,
    MODELS_KEYS,
    RUN_KEYS,
    SCENARIO_UNITS,
    SECTIONS,
    THRESHOLD_KEYS,
    UNITS,
    Key,
    _dotted,
    _kind_of,
    _show,
    default_thresholds,
)

PROFILES_DIR = Path(__file__).resolve().parent.parent.parent / "profiles"


@dataclass(frozen=True)
class Profile:
    name: str
    source: str  # path or "<builtin>"
    text: str
    run: dict[str, Any]
    timeouts: dict[str, float]
    sampling: dict[str, Any]
    inject: dict[str, Any]
    thresholds: dict[str, MetricRule]
    matrix: dict[str, tuple] = field(default_factory=dict)
    cell: dict[str, Any] = field(default_factory=dict)  # values of this matrix cell
    overrides: dict[str, Any] = field(default_factory=dict)  # command-line flags applied
    # [models] (repositories as absolute paths) and [model.<name>] (input_data absolute).
    models: dict[str, Any] = field(default_factory=lambda: {"repositories": [], "load": []})
    model: dict[str, dict[str, Any]] = field(default_factory=dict)
    # [attribution]: allocation sites traced with memray (soak.sampling.memray_sites).
    attribution: dict[str, Any] = field(
        default_factory=lambda: {k.name: k.default for k in ATTRIBUTION_KEYS}
    )
    ray: dict[str, Any] = field(default_factory=lambda: {"resources": {}})  # [ray] section
    # [tritonserver]: extra flags of the server processes (target tritonserver)
    tritonserver: dict[str, Any] = field(default_factory=lambda: {"args": []})

    @property
    def uses_gpu(self) -> bool:
        values = [self.run["memory_type"], self.run["instance_kind"]]
        for key in ("memory_type", "instance_kind"):
            values += list(self.matrix.get(key, ()))
        return (
            any(v in ("gpu", "pinned") for v in values)
            or self.inject.get("gpu_bytes_per_server", 0) > 0
        )

    def with_overrides(self, **values: Any) -> Profile:
        """Command-line overrides, validated like the file; None means not given.

        An error names the flag (``--servers``), not the file: the flag is what is wrong.
        """
        run = dict(self.run)
        keys = {k.name: k for k in RUN_KEYS}
        given = dict(self.overrides)
        for name, value in values.items():
            if value is None:
                continue
            run[name] = keys[name].check("", value, flag_name(name))
            given[name] = run[name]
        flags = " ".join(f"{flag_name(k)} {v}" for k, v in given.items())
        matrix = {k: v for k, v in self.matrix.items() if values.get(k) is None}
        _check_run(f"{self.source} with {flags}" if flags else self.source, run, matrix)
        return replace(self, run=run, matrix=matrix, overrides=given)

    def with_tritons(self, versions: tuple[str, ...]) -> Profile:
        """`--triton V` (repeatable): one value sets `triton`, several make the matrix's
        `triton` axis (replacing the file's); every other axis stays."""
        if not versions:
            return self
        key = {k.name: k for k in RUN_KEYS}["triton"]
        checked = tuple(key.check("", v, "--triton") for v in versions)
        if len(set(checked)) != len(checked):
            raise ProfileError(f"--triton names {', '.join(checked)}: each version once")
        run, matrix = dict(self.run), dict(self.matrix)
        matrix.pop("triton", None)
        if len(checked) == 1:
            run["triton"] = checked[0]
        else:
            run["triton"] = ""
            matrix["triton"] = checked
        flags = " ".join(f"--triton {v}" for v in checked)
        _check_run(f"{self.source} with {flags}", run, matrix)
        return replace(
            self, run=run, matrix=matrix, overrides={**self.overrides, "triton": list(checked)}
        )

    def with_attribution(self) -> Profile:
        """`--attribute`: allocation sites traced whatever the profile says."""
        return replace(
            self,
            attribution={**self.attribution, "enabled": True},
            overrides={**self.overrides, "attribute": True},
        )

    @property
    def matrix_tags(self) -> dict[str, Any]:
        """What a cell's run row records of its matrix (nothing for a run outside one)."""
        return {"matrix": self.name, "cell": self.cell} if self.cell else {}

    def cells(self) -> list[Profile]:
        """One profile per matrix cell (itself when it has no matrix)."""
        if not self.matrix:
            return [self]
        names = list(self.matrix)
        out = []
        for combo in itertools.product(*(self.matrix[n] for n in names)):
            cell = dict(zip(names, combo, strict=False))
            out.append(replace(self, run={**self.run, **cell}, matrix={}, cell=cell))
        return out


def flag_name(name: str) -> str:
    """The command-line flag of a run key (`servers` -> `--servers`), as errors name it."""
    return f"--{name.replace('_', '-')}"


#: A profile is a small text file; anything larger is a mistake (a log, a device, a dump).
MAX_PROFILE_BYTES = 1 << 20


def resolve_path(name_or_path: str) -> Path:
    """A bare name ('smoke') is a shipped profile under profiles/; a path is a path.

    Anything with a '/' or a '.toml' suffix is a path, so a file or folder named like a shipped
    profile in the working directory never shadows it (`./smoke` runs that file).
    """
    if "/" in name_or_path or name_or_path.endswith(".toml"):
        return Path(name_or_path)
    return PROFILES_DIR / f"{name_or_path}.toml"


def shipped_names() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def _shown(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load(name_or_path: str) -> Profile:
    """Read and validate a profile: a regular UTF-8 file of at most MAX_PROFILE_BYTES."""
    path = resolve_path(name_or_path)
    bare = path.parent == PROFILES_DIR and "/" not in name_or_path
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        if bare:
            local = ""
            try:
                if Path(name_or_path).exists():
                    local = f"; to run the file {name_or_path} here, give a path: ./{name_or_path}"
            except OSError:
                pass
            raise ProfileError(
                f"{_shown(name_or_path)}: no shipped profile of that name (shipped: "
                f"{', '.join(shipped_names())}){local}"
            ) from None
        raise ProfileError(
            f"{_shown(str(path))}: no such profile file (profiles available by name: "
            f"{', '.join(shipped_names())})"
        ) from None
    except OSError as exc:
        raise ProfileError(f"{_shown(str(path))}: cannot read: {exc.strerror}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise ProfileError(f"{path}: is a directory, not a profile file")
    if not stat.S_ISREG(info.st_mode):
        raise ProfileError(
            f"{path}: not a regular file ({_file_kind(info.st_mode)}); a profile is a TOML file"
        )
    if info.st_size > MAX_PROFILE_BYTES:
        raise ProfileError(
            f"{path}: {info.st_size} bytes is too large for a profile (at most "
            f"{MAX_PROFILE_BYTES} bytes)"
        )
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_PROFILE_BYTES + 1)
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror}") from exc
    if len(raw) > MAX_PROFILE_BYTES:
        raise ProfileError(f"{path}: too large for a profile (at most {MAX_PROFILE_BYTES} bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ProfileError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line}, column "
            f"{column}); profiles are TOML, which must be UTF-8"
        ) from exc
    if _sets_nothing(text):
        raise ProfileError(
            f"{path}: the profile sets nothing (an empty file would run every default); "
            "set at least a description, or run the shipped profile 'smoke'"
        )
    return parse(text, str(path), path.stem)


def _sets_nothing(text: str) -> bool:
    """True when the text is a TOML document with no key at all (blank or comments only)."""
    try:
        return not tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a plain file"


def parse(text: str, source: str = "<string>", name: str = "profile") -> Profile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # One line: the decoder's message carries the line and column.
        detail = " ".join(str(exc).split())
        raise ProfileError(f"{source}: malformed TOML: {detail}") from exc
    run = {k.name: k.default for k in RUN_KEYS}
    run_keys = {k.name: k for k in RUN_KEYS}
    sections: dict[str, dict[str, Any]] = {
        s: {k.name: k.default for k in keys} for s, keys in SECTIONS.items()
    }
    thresholds = default_thresholds()
    matrix: dict[str, tuple] = {}
    models: dict[str, Any] = {"repositories": [], "load": []}
    model: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key in run_keys:
            run[key] = run_keys[key].check(source, value)
        elif key in SECTIONS:
            sections[key].update(_section(source, (key,), value, SECTIONS[key]))
        elif key == "thresholds":
            thresholds.update(_thresholds(source, value, thresholds))
        elif key == "matrix":
            matrix = _matrix(source, value)
        elif key == "models":
            models.update(_section(source, ("models",), value, MODELS_KEYS))
        elif key == "model":
            model = _model_tables(source, value)
        else:
            raise ProfileError(_unknown_top_level(source, key, list(run_keys)))
    _check_run(source, run, matrix)
    _check_units(source, run, matrix, thresholds, data.get("thresholds"))
    models, model = _user_models(source, models, model, run["strict_model_config"])
    _check_ray_resources(source, sections["ray"]["resources"])
    targets.check_args(source, sections["tritonserver"]["args"])
    targets.check_injections(source, run, matrix, sections["inject"])
    return Profile(
        name=name,
        source=source,
        text=text,
        run=run,
        timeouts=sections["timeouts"],
        sampling=sections["sampling"],
        inject=sections["inject"],
        thresholds=thresholds,
        matrix=matrix,
        models=models,
        model=model,
        attribution=sections["attribution"],
        ray=sections["ray"],
        tritonserver=sections["tritonserver"],
    )


def _unknown_top_level(source: str, key: str, run_keys: list[str]) -> str:
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
        f"{source}: unknown key {_dotted(key)}{guess}; allowed: the run keys of "
        f"profiles/README.md and the sections {', '.join(sections)}"
    )


def _model_tables(source: str, value: Any) -> dict[str, dict[str, Any]]:
    table = _table(source, ("model",), value)
    out = {}
    for name, settings in table.items():
        values = {k.name: k.default for k in MODEL_KEYS}
        values.update(_section(source, ("model", name), settings, MODEL_KEYS))
        shape = {}
        for tensor, dims in values["shape"].items():
            if (
                not isinstance(dims, list)
                or not dims
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims)
            ):
                raise ProfileError(
                    f"{source}: {_dotted('model', name, 'shape', tensor)} must be a non-empty "
                    f"list of positive integers, got {_show(dims)}"
                )
            shape[tensor] = list(dims)
        values["shape"] = shape
        out[name] = values
    return out


def _user_models(
    source: str, models: dict[str, Any], model: dict[str, dict[str, Any]], strict: bool = True
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Resolve paths against the profile's folder and check that every name is there."""
    base = Path(source).parent if not source.startswith("<") else Path.cwd()
    repos = []
    for i, entry in enumerate(models["repositories"]):
        label = f"models.repositories[{i}]"
        if not isinstance(entry, str) or not entry:
            raise ProfileError(f"{source}: {label} must be a path, got {_show(entry)}")
        path = (base / entry).resolve()
        if not path.is_dir():
            raise ProfileError(f"{source}: {label} = {entry!r}: {path} is not a directory")
        repos.append(path)
    load = models["load"]
    for i, name in enumerate(load):
        if not isinstance(name, str) or not name:
            raise ProfileError(
                f"{source}: models.load[{i}] must be a model name, got {_show(name)}"
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
                f"{source}: {_dotted('model', name)} is not in models.load "
                f"({', '.join(map(repr, load)) or 'empty'})"
            )
        if settings["input_data"]:
            from soak.workload import perfdata  # numpy: only for profiles that need it

            path = (base / settings["input_data"]).resolve()
            try:
                perfdata.load(path)
            except ProfileError as exc:
                raise ProfileError(
                    f"{source}: {_dotted('model', name, 'input_data')}: {exc}"
                ) from None
            settings["input_data"] = str(path)
    for name in load:  # every loaded model has its settings, defaults where not given
        model.setdefault(name, {k.name: k.default for k in MODEL_KEYS})
    return {"repositories": [str(r) for r in repos], "load": list(load)}, model


def _table(source: str, path: tuple[str, ...], value: Any) -> dict:
    if not isinstance(value, dict):
        raise ProfileError(
            f"{source}: {_dotted(*path)} must be a table ([{_dotted(*path)}]), got "
            f"{_show(value)} ({_kind_of(value)})"
        )
    return value


def _section(
    source: str, path: tuple[str, ...], value: Any, keys: tuple[Key, ...]
) -> dict[str, Any]:
    table = _table(source, path, value)
    by_name = {k.name: k for k in keys}
    out = {}
    for key, item in table.items():
        if key not in by_name:
            raise ProfileError(
                f"{source}: unknown key {_dotted(*path, key)}; allowed: {', '.join(by_name)}"
            )
        out[key] = by_name[key].check(source, item, _dotted(*path, key))
    return out


def _thresholds(source: str, value: Any, base: dict[str, MetricRule]) -> dict[str, MetricRule]:
    table = _table(source, ("thresholds",), value)
    out = {}
    for metric, rule in table.items():
        if metric not in base:
            raise ProfileError(
                f"{source}: unknown metric {_dotted('thresholds', metric)}; metrics: "
                + ", ".join(base)
            )
        values = _section(source, ("thresholds", metric), rule, THRESHOLD_KEYS)
        per_unit = dict(base[metric].slope_per_unit)
        for unit in UNITS:
            if f"slope_per_{unit}" in values:
                per_unit[unit] = values.pop(f"slope_per_{unit}")
        out[metric] = replace(base[metric], **values, slope_per_unit=per_unit)
    return out


def _matrix(source: str, value: Any) -> dict[str, tuple]:
    table = _table(source, ("matrix",), value)
    if not table:
        raise ProfileError(
            f"{source}: [matrix] is empty (it varies nothing); name a key with a list of "
            f"values, or remove the table; matrix keys: {', '.join(MATRIX_KEYS)}"
        )
    keys = {k.name: k for k in RUN_KEYS}
    out = {}
    for key, values in table.items():
        label = _dotted("matrix", key)
        if key not in MATRIX_KEYS:
            raise ProfileError(
                f"{source}: {label} cannot vary; matrix keys: {', '.join(MATRIX_KEYS)}"
            )
        if not isinstance(values, list) or not values:
            raise ProfileError(
                f"{source}: {label} must be a non-empty list of values, got {_show(values)}; "
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


def _check_run(source: str, run: dict[str, Any], matrix: dict[str, tuple] | None = None) -> None:
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


def _check_units(
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
                    f"{source}: {_dotted('thresholds', metric, key)} does nothing with {where} = "
                    f"{', '.join(map(repr, scenarios))} (no {unit.replace('_', ' ')} counted per "
                    f"iteration; its units: {', '.join(SCENARIO_UNITS[scenarios[0]])}); use "
                    "slope_per_iteration"
                )


def _check_ray_resources(source: str, resources: dict[str, Any]) -> None:
    """Custom resources are names with positive amounts; CPU and GPU come from the cell."""
    for name, amount in resources.items():
        label = _dotted("ray", "resources", name)
        if name in ("CPU", "GPU", "memory", "object_store_memory"):
            raise ProfileError(
                f"{source}: {label} is set by soak from the cell (servers, GPU use); "
                "name custom resources only"
            )
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not amount > 0:
            raise ProfileError(
                f"{source}: {label} must be a number > 0, got {_show(amount)} ({_kind_of(amount)})"
            )
