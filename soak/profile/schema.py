"""The profile schema: every key's type, range, default and meaning, in one table per section.

The table is the validation (`Key.check`), the defaults and the documentation
(`soak.profile.reference` renders it); nothing here reads a file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from soak.analysis.verdict import MetricRule
from soak.errors import ProfileError
from soak.phases import PHASE_TIMEOUTS_S, PHASES

MEMORY_TYPES = ("system", "pinned", "gpu")
INSTANCE_KINDS = ("cpu", "gpu")
DATATYPES = ("int32", "fp32")
SCENARIOS = ("servers", "reload", "traffic")  # soak.workload.scenarios
TARGETS = ("in_process", "tritonserver")  # soak.target.make_target
PROTOCOLS = ("http", "grpc")  # soak.tritonserver.client
SHARED_MEMORY = ("none", "system")
LOAD_GENERATORS = ("soak", "perf_analyzer")
BEHAVIOURS = ("correct", "execute_raises", "error_response", "init_raises")  # workload.repos
BLS_MODES = ("off", "sync", "async")  # soak.workload.repos
RESPONSE_CACHES = ("none", "local")
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
    Key(
        "concurrency",
        int,
        1,
        "Requests in flight per server: each model's inferences are sent asynchronously, at "
        "most this many at a time, every response still checked (1: one at a time).",
        1,
        1024,
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
        "strict_model_config",
        bool,
        True,
        "Triton's --strict-model-config: false lets a backend complete a model's config "
        "(python models' auto_complete_config), so a model folder needs no config.pbtxt; "
        "soak plans the model from the config Triton completed.",
    ),
    Key(
        "generated_ensemble",
        bool,
        False,
        "Also generate an ensemble over the add/sub model (`simple1_ensemble`, one step), "
        "exercised and checked like it: the ensemble scheduler in every lifecycle.",
    ),
    Key(
        "bls",
        str,
        "off",
        "Also generate a python model (`simple1_bls`) that calls the add/sub model through "
        "pb_utils.InferenceRequest: exec() (sync) or async_exec() (async); results checked.",
        choices=BLS_MODES,
    ),
    Key(
        "response_cache",
        str,
        "none",
        "The server's response cache: local (the cache library in the install's caches/); "
        "models with `response_cache { enable: true }` use it. Cache hits and insertions "
        "(misses) are counted per iteration from the model statistics.",
        choices=RESPONSE_CACHES,
    ),
    Key(
        "response_cache_bytes",
        int,
        1 << 20,
        "Size of the local response cache in bytes.",
        1,
        2**40,
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
    Key(
        "target",
        str,
        "in_process",
        "in_process: servers inside the worker through the C API; tritonserver: each server "
        "is a `tritonserver` process (<triton_home>/bin/tritonserver, else the wheel's) on "
        "loopback ports soak picks, driven over `protocol` with tritonclient.",
        choices=TARGETS,
    ),
    Key(
        "protocol",
        str,
        "http",
        "tritonserver target: how the client talks to the servers.",
        choices=PROTOCOLS,
    ),
    Key(
        "streaming",
        bool,
        False,
        "tritonserver target, protocol grpc: every request through one gRPC stream (how "
        "decoupled models are served).",
    ),
    Key(
        "shared_memory",
        str,
        "none",
        "tritonserver target: system = inputs and outputs through system shared-memory "
        "regions registered with the server.",
        choices=SHARED_MEMORY,
    ),
    Key(
        "load_generator",
        str,
        "soak",
        "tritonserver target: who sends a burst of the generated models. soak: its own "
        "client; perf_analyzer: one `perf_analyzer --request-count` run per burst with the "
        "same protocol, concurrency, shared memory and streaming, fed soak's inputs and "
        "expected outputs (it checks each answer); an error behaviour needs error_fraction 1.",
        choices=LOAD_GENERATORS,
    ),
    Key(
        "triton",
        str,
        "",
        "Triton to run, instead of triton_home: a version installed by `soak triton install` "
        "('2.43.0'), the version of the core found without one (the wheel's, no install "
        "needed), or a path to a home. A matrix key: `triton = ['2.43.0', '2.51.0']` runs "
        "every cell on each (soak run --triton V, twice: soak compare --upgrade).",
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
        "triton_log_rows",
        int,
        20,
        "Most rows of Triton log messages stored per iteration: each distinct warning or "
        "error once with its count; past this many, one triton_log_dropped event counts the "
        "lines not stored.",
        1,
        100_000,
    ),
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
TRITONSERVER_KEYS = (
    Key(
        "args",
        list,
        [],
        "Extra flags for every tritonserver process (target tritonserver), e.g. "
        '["--log-verbose=1"]; soak sets the repositories, ports and model control.',
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
MATRIX_KEYS = (
    "servers",
    "memory_type",
    "instance_kind",
    "inferences_per_model",
    "datatype",
    "scenario",
    "behaviour",
    "error_fraction",
    "target",
    "protocol",
    "streaming",
    "shared_memory",
    "load_generator",
    "triton",
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
    Key(
        "sequence_length",
        int,
        4,
        "Sequence-batched models: requests per sequence, sent with one correlation id, START "
        "on the first and END on the last; step k sends input_data's entry k (validation_data "
        "then holds each step's expected output, a running sum for an accumulator).",
        1,
        1_000_000,
    ),
    Key(
        "sequence_abandon_fraction",
        float,
        0.0,
        "Share of sequences whose END is never sent (chosen from the seed): Triton's "
        "idle-sequence timeout (max_sequence_idle_microseconds) must free their slots and "
        "state; the next sequence waits for it.",
        0.0,
        1.0,
    ),
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
    "tritonserver": TRITONSERVER_KEYS,
}


def default_thresholds() -> dict[str, MetricRule]:
    """The rule of every judged metric when a profile says nothing about it."""
    out = {m: MetricRule(m, "memory", s, g) for m, (s, g) in MEMORY_METRICS.items()}
    for m in COUNTER_METRICS:
        out[m] = MetricRule(m, "counter", None, None, COUNTER_TOLERANCE.get(m, 0.0))
    return out


def all_keys() -> list[tuple[str, Key]]:
    """(qualified name, key) for documentation."""
    out = [(k.name, k) for k in RUN_KEYS]
    for section, keys in SECTIONS.items():
        out += [(f"{section}.{k.name}", k) for k in keys]
    out += [(f"models.{k.name}", k) for k in MODELS_KEYS]
    out += [(f"model.<name>.{k.name}", k) for k in MODEL_KEYS]
    out += [(f"thresholds.<metric>.{k.name}", k) for k in THRESHOLD_KEYS]
    return out
