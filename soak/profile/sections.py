"""The key tables of the profile's sections besides the run keys: [timeouts], [sampling],
[tritonserver], [inject], [attribution], [ray], [models] and [model.<name>]."""

from __future__ import annotations

from soak.phases import PHASE_TIMEOUTS_S, PHASES
from soak.profile.keys import Key

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
    Key(
        "url",
        str,
        "",
        "Attach to a tritonserver someone else started instead of starting one: its loopback "
        "address for `protocol` ('http://127.0.0.1:8000', or '127.0.0.1:8001' for grpc); "
        "needs `pid`. soak never starts or stops it, samples `pid` and its stubs, and loads "
        "only the models.load its repository holds (explicit model control); scenario "
        "'servers' is refused. soak run --url.",
    ),
    Key(
        "pid",
        int,
        0,
        "With `url`: the process id of the attached tritonserver (the one listening on url's "
        "port); soak samples it. soak run --pid.",
        0,
        2**31 - 1,
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
        "client_bytes_per_request",
        int,
        0,
        "Bytes soak's own client keeps per request, never freed (target tritonserver: proves "
        "a client leak shows on client_rss_bytes, not the server's metrics).",
        0,
        2**24,
    ),
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
        "Trace native and Python allocation sites from the end of the warm-up (also: soak run "
        "--attribute): memray in-process, up to 2x slower; heaptrack for each tritonserver "
        "process (reload, traffic), ready in seconds instead of 0.1 s.",
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
        "state; soak starts no sequence while abandoned ones fill the model's sequence slots "
        "(it waits until Triton has reaped them).",
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
