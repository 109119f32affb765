"""Profiles: TOML files that say what a run does and how it is judged, validated strictly.

Every key lives in one schema table below (type, range, default, meaning); the table is
the validation, the defaults and the documentation (profiles/README.md is generated from
it by `key_reference`).
An error names the file, the key and what is allowed.
"""

from __future__ import annotations

import itertools
import math
import re
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
from soak.phases import PHASE_TIMEOUTS_S, PHASES

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"
MEMORY_TYPES = ("system", "pinned", "gpu")
INSTANCE_KINDS = ("cpu", "gpu")
DATATYPES = ("int32", "fp32")
SCENARIOS = ("servers", "reload", "traffic")  # soak.workload.scenarios
BEHAVIOURS = ("correct", "execute_raises", "error_response", "init_raises")  # workload.repos
#: What a slope can be stated per: the unit counts stored with each iteration.
UNITS = ("server", "model_load", "failed_load", "inference", "error")


@dataclass(frozen=True)
class Key:
    name: str
    kind: type
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None

    def check(self, where: str, value: Any, label: str | None = None) -> Any:
        """Return the value (ints widened to float where floats are wanted) or raise.

        ``where`` is the file (or "" for a command-line flag), ``label`` how the key is
        written there (``timeouts.load``, ``--servers``; default: the key's name).
        """
        at = f"{where}: " if where else ""
        label = label or self.name
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.kind is int and isinstance(value, bool) or not isinstance(value, self.kind):
            raise ProfileError(
                f"{at}{label} must be {_type_name(self.kind)}, got {_show(value)} "
                f"({_kind_of(value)}){self._limits()}"
            )
        if self.kind is float and not math.isfinite(value):
            raise ProfileError(
                f"{at}{label} must be a finite number, got {value!r}{self._limits()}"
            )
        if self.choices is not None and value not in self.choices:
            raise ProfileError(
                f"{at}{label} = {_show(value)} is not allowed; use one of "
                + ", ".join(repr(c) for c in self.choices)
            )
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            raise ProfileError(f"{at}{label} = {value!r} is out of range; allowed {self.allowed()}")
        return value

    def _limits(self) -> str:
        bounded = self.choices or self.low is not None or self.high is not None
        return f"; allowed {self.allowed()}" if bounded else ""

    def allowed(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.low is not None and self.high is not None:
            return f"{_fmt(self.low)} .. {_fmt(self.high)}"
        if self.low is not None:
            return f">= {_fmt(self.low)}"
        return _type_name(self.kind)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _type_name(t: type) -> str:
    return {
        int: "an integer",
        float: "a number",
        bool: "true or false",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(t, t.__name__)


def _kind_of(value: Any) -> str:
    """What a value read from TOML is, in the words of an error message."""
    return "a boolean" if isinstance(value, bool) else _type_name(type(value))


def _show(value: Any, limit: int = 60) -> str:
    """A value as it appears in an error: TOML's true/false, else repr (one line), cut when long."""
    text = ("true" if value else "false") if isinstance(value, bool) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dotted(*parts: str) -> str:
    """A dotted TOML key; parts that are not bare keys are quoted, so it stays one line."""
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else repr(p) for p in parts)


RUN_KEYS = (
    Key("description", str, "", "One line saying what the profile is for."),
    Key(
        "purpose",
        str,
        "leaks",
        "`leaks`: judge leaks (too few iterations: inconclusive, exit 3). `machinery`: a "
        "short check that the machinery works; a run that completes with every check "
        "passing and no leak found passes (exit 0) without a leak verdict.",
        choices=("leaks", "machinery"),
    ),
    Key("servers", int, 2, "Concurrent Triton servers per iteration (N).", 1, 64),
    Key("iterations", int, 3, "Iterations to run (each: N full server lifecycles).", 1, 1_000_000),
    Key("warmup", int, 1, "Iterations ignored by the analysis at the start.", 0, 100_000),
    Key("memory_type", str, "system", "Where inputs and outputs live.", choices=MEMORY_TYPES),
    Key(
        "instance_kind",
        str,
        "cpu",
        "Model instance kind (KIND_CPU or KIND_GPU).",
        choices=INSTANCE_KINDS,
    ),
    Key(
        "gpu_device",
        int,
        0,
        "GPU of KIND_GPU instances (`gpus: [k]`) and GPU buffers: a CUDA index, counted "
        "among the devices CUDA_VISIBLE_DEVICES shows.",
        0,
        63,
    ),
    Key(
        "inferences_per_model",
        int,
        10,
        "Inferences on each loaded model per lifecycle.",
        0,
        100_000,
    ),
    Key("datatype", str, "int32", "Tensor datatype of the add/sub models.", choices=DATATYPES),
    Key(
        "scenario",
        str,
        "servers",
        "servers: N servers created and deleted per iteration; reload: N long-lived servers "
        "load, infer and unload per iteration; traffic: N long-lived servers with loaded "
        "models, a burst of inferences per iteration.",
        choices=SCENARIOS,
    ),
    Key(
        "behaviour",
        str,
        "correct",
        "What the models do: correct (results checked), execute_raises / error_response "
        "(marked requests fail; counted as expected errors), init_raises (every load fails; "
        "servers and reload only).",
        choices=BEHAVIOURS,
    ),
    Key(
        "error_fraction",
        float,
        1.0,
        "Share of requests an error behaviour fails, chosen deterministically from the seed.",
        0.0,
        1.0,
    ),
    Key(
        "error_message_chars",
        int,
        100,
        "Length of the models' error messages (a leak on an error path grows with it).",
        20,
        1_000_000,
    ),
    Key(
        "reload_new_version",
        bool,
        False,
        "reload: write version k+1 of each model before the load of iteration k.",
    ),
    Key(
        "serialize_server_new_delete",
        bool,
        True,
        "Take one process-wide lock around each TRITONSERVER_ServerNew and ServerDelete. "
        "Triton 2.51 creates and destroys its process-wide pinned memory manager there without "
        "a lock, and concurrent calls crash the process at random (README: findings); false "
        "makes them concurrent, as in Triton's own multi-server test.",
    ),
    Key(
        "triton_home",
        str,
        "",
        "Triton install to use (<home>/lib/libtritonserver.so); empty: "
        "$SOAK_TRITON_HOME, /opt/tritonserver, then the nvidia-pytriton wheel.",
    ),
)
TIMEOUT_KEYS = tuple(
    Key(
        p,
        float,
        PHASE_TIMEOUTS_S[p],
        f"Seconds the {p} phase may take before the run is declared hung.",
        0.1,
        86_400,
    )
    for p in PHASES
)
SAMPLING_KEYS = (
    Key(
        "sample_interval_ms",
        int,
        0,
        "Also sample every this many ms during iterations (0: off).",
        0,
        3_600_000,
    ),
    Key(
        "objgraph_every",
        int,
        10,
        "Record the top growing Python object types every K iterations (0: never).",
        0,
        1_000_000,
    ),
    Key("malloc_trim", bool, True, "Call malloc_trim(0) just before each quiet-point sample."),
    Key(
        "tracemalloc",
        bool,
        True,
        "Trace Python allocations in the worker (slower, but shows Python heap growth).",
    ),
)
INJECT_KEYS = (
    Key(
        "native_bytes_per_server", int, 0, "malloc'd, resident, never freed, per server.", 0, 2**34
    ),
    Key(
        "unreleased_response_fraction",
        float,
        0.0,
        "Share of inference responses never deleted.",
        0.0,
        1.0,
    ),
    Key("python_bytes_per_iteration", int, 0, "Python bytes kept alive per iteration.", 0, 2**34),
    Key(
        "fds_per_iteration",
        int,
        0,
        "File descriptors opened and never closed per iteration.",
        0,
        1000,
    ),
    Key("threads_per_iteration", int, 0, "Threads started and never ended per iteration.", 0, 100),
    Key("skip_server_delete", bool, False, "Stop servers but never delete them."),
    Key(
        "gpu_bytes_per_server",
        int,
        0,
        "cudaMalloc'd and never freed, per server (GPU only).",
        0,
        2**36,
    ),
)

ATTRIBUTION_KEYS = (
    Key(
        "enabled",
        bool,
        False,
        "Trace native and Python allocation sites (memray) from the end of the warm-up "
        "(also: soak run --attribute); up to 2x slower.",
    ),
    Key("top_sites", int, 50, "Allocation sites kept per run (those that grew most).", 1, 10_000),
    Key("stack_depth", int, 8, "Frames a site is keyed on, after allocator frames.", 1, 64),
    Key(
        "slope_per_iteration",
        float,
        1024.0,
        "A site grows when its live bytes rise faster than this per iteration (95% lower bound).",
        0.0,
    ),
    Key(
        "allocations_per_iteration",
        float,
        1.0,
        "... and its live allocations by at least this many per iteration.",
        0.0,
    ),
)

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
}
COUNTER_METRICS = ("fds", "threads", "children", "stubs_alive", "shm_regions", "gc_objects")
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
MATRIX_KEYS = (
    "servers",
    "memory_type",
    "instance_kind",
    "inferences_per_model",
    "datatype",
    "scenario",
    "behaviour",
    "error_fraction",
)
# The user's own models: `[models]` names repositories and models, `[model.<name>]` says how
# to feed one of them (soak.workload.models.ModelSettings).
MODELS_KEYS = (
    Key(
        "repositories",
        list,
        [],
        "Model repositories of your own (paths relative to the profile file), given to every "
        "server alongside the generated models.",
    ),
    Key("load", list, [], "Models of those repositories to load and infer in every lifecycle."),
)
MODEL_KEYS = (
    Key(
        "batch_size",
        int,
        1,
        "Batch size of each request (models with max_batch_size > 0).",
        1,
        1_000_000,
    ),
    Key(
        "shape",
        dict,
        {},
        "Sizes of an input's dimensions, batch dimension left out: { INPUT = [4, 16] }; "
        "required for every -1 unless input_data gives the shape.",
    ),
    Key(
        "input_data",
        str,
        "",
        "perf_analyzer --input-data JSON file (relative to the profile file); empty: seeded "
        "random data.",
    ),
    Key("rtol", float, 1e-5, "Relative tolerance of floating-point output checks.", 0.0),
    Key("atol", float, 1e-8, "Absolute tolerance of floating-point output checks.", 0.0),
)
RAY_KEYS = (
    Key(
        "resources",
        dict,
        {},
        "With `soak run --ray`: custom Ray resources each cell asks for, to choose its nodes "
        "(e.g. `{gpu_h100 = 1}`; numbers > 0).",
    ),
)
SECTIONS = {
    "timeouts": TIMEOUT_KEYS,
    "sampling": SAMPLING_KEYS,
    "inject": INJECT_KEYS,
    "attribution": ATTRIBUTION_KEYS,
    "ray": RAY_KEYS,
}


def default_thresholds() -> dict[str, MetricRule]:
    """The rule of every judged metric when a profile says nothing about it."""
    out = {m: MetricRule(m, "memory", s, g) for m, (s, g) in MEMORY_METRICS.items()}
    for m in COUNTER_METRICS:
        out[m] = MetricRule(m, "counter", None, None, COUNTER_TOLERANCE.get(m, 0.0))
    return out


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
    # [attribution]: allocation sites traced with memray (soak.sampling.sites).
    attribution: dict[str, Any] = field(
        default_factory=lambda: {k.name: k.default for k in ATTRIBUTION_KEYS}
    )
    ray: dict[str, Any] = field(default_factory=lambda: {"resources": {}})  # [ray] section

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
            run[name] = keys[name].check("", value, _flag(name))
            given[name] = run[name]
        flags = " ".join(f"{_flag(k)} {v}" for k, v in given.items())
        matrix = {k: v for k, v in self.matrix.items() if values.get(k) is None}
        _check_run(f"{self.source} with {flags}" if flags else self.source, run, matrix)
        return replace(self, run=run, matrix=matrix, overrides=given)

    def with_attribution(self) -> Profile:
        """`--attribute`: allocation sites traced whatever the profile says."""
        return replace(
            self,
            attribution={**self.attribution, "enabled": True},
            overrides={**self.overrides, "attribute": True},
        )

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


def _flag(name: str) -> str:
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
    return parse(text, str(path), path.stem)


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
            raise ProfileError(
                f"{source}: unknown key {_dotted(key)}; allowed: "
                + ", ".join(
                    [
                        *run_keys,
                        *(f"[{s}]" for s in SECTIONS),
                        "[thresholds]",
                        "[matrix]",
                        "[models]",
                        "[model.<name>]",
                    ]
                )
            )
    _check_run(source, run, matrix)
    models, model = _user_models(source, models, model)
    _check_ray_resources(source, sections["ray"]["resources"])
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
    source: str, models: dict[str, Any], model: dict[str, dict[str, Any]]
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
        if load.count(name) > 1:
            raise ProfileError(f"{source}: models.load lists {name!r} more than once")
        if not repos:
            raise ProfileError(
                f"{source}: models.load names {name!r} but models.repositories is empty"
            )
        if not any((r / name / "config.pbtxt").is_file() for r in repos):
            raise ProfileError(
                f"{source}: models.load: no model {name!r} (a folder with a config.pbtxt) in "
                + ", ".join(str(r) for r in repos)
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
    if run["warmup"] >= run["iterations"]:
        raise ProfileError(
            f"{source}: warmup = {run['warmup']} leaves no iteration to analyse "
            f"(iterations = {run['iterations']}); warmup must be smaller than iterations"
        )
    matrix = matrix or {}
    scenarios = matrix.get("scenario", (run["scenario"],))
    behaviours = matrix.get("behaviour", (run["behaviour"],))
    if "traffic" in scenarios and "init_raises" in behaviours:
        label = lambda k: f"matrix.{k}" if k in matrix else k  # noqa: E731
        raise ProfileError(
            f"{source}: {label('behaviour')} = 'init_raises' cannot go with "
            f"{label('scenario')} = 'traffic' (its models load once, before any traffic); "
            "use scenario 'servers' or 'reload' for failing loads"
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


def check_machine(profile: Profile, gpu_problem: str | None) -> None:
    """A GPU setting on a machine without a usable GPU is a profile error, before any run row."""
    if gpu_problem is None or not profile.uses_gpu:
        return
    settings = []
    for key in ("memory_type", "instance_kind"):
        values = {profile.run[key], *profile.matrix.get(key, ())}
        bad = sorted(v for v in values if v in ("gpu", "pinned"))
        if bad and key in profile.overrides:
            settings.append(f"{_flag(key)} {profile.overrides[key]}")
        elif bad:
            label = f"matrix.{key}" if key in profile.matrix else key
            settings.append(f"{label} = {', '.join(bad)}")
    if profile.inject.get("gpu_bytes_per_server", 0) > 0:
        settings.append(f"inject.gpu_bytes_per_server = {profile.inject['gpu_bytes_per_server']}")
    problem = " ".join(gpu_problem.split())
    raise ProfileError(
        f"{profile.source}: {'; '.join(settings)} needs an NVIDIA GPU, but {problem}; "
        "allowed on this machine: memory_type = 'system', instance_kind = 'cpu', "
        "inject.gpu_bytes_per_server = 0"
    )


def all_keys() -> list[tuple[str, Key]]:
    """(qualified name, key) for documentation."""
    out = [(k.name, k) for k in RUN_KEYS]
    for section, keys in SECTIONS.items():
        out += [(f"{section}.{k.name}", k) for k in keys]
    out += [(f"models.{k.name}", k) for k in MODELS_KEYS]
    out += [(f"model.<name>.{k.name}", k) for k in MODEL_KEYS]
    out += [(f"thresholds.<metric>.{k.name}", k) for k in THRESHOLD_KEYS]
    return out


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
        kind = _type_name(key.kind).removeprefix("an ").removeprefix("a ")
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
        shown = ["-" if c is None else _fmt(c) for c in cols]
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
