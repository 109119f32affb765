"""The profile schema: every key's type, range, default and meaning, in one table per section:
the run keys here, the other sections' tables in `soak.profile.sections`, the thresholds' in
`soak.profile.thresholds`, each key a `soak.profile.keys.Key`.

The tables are the validation (`Key.check`), the defaults and the documentation
(`soak.profile.reference` renders them); nothing here reads a file.
"""

from __future__ import annotations

from soak.profile.keys import Key
from soak.profile.sections import MODEL_KEYS, MODELS_KEYS, SECTIONS
from soak.profile.thresholds import THRESHOLD_KEYS

MEMORY_TYPES = ("system", "pinned", "gpu")
INSTANCE_KINDS = ("cpu", "gpu")
DATATYPES = ("int32", "fp32")
SCENARIOS = ("servers", "reload", "traffic")  # soak.workload.scenarios
TARGETS = ("in_process", "tritonserver")  # soak.target.make_target
PROTOCOLS = ("http", "grpc")  # soak.tritonserver.client
SHARED_MEMORY = ("none", "system")
LOAD_GENERATORS = ("soak", "perf_analyzer")
BEHAVIOURS = (  # workload.repos
    "correct",
    "execute_raises",
    "error_response",
    "init_raises",
    "stub_leak",
)
BLS_MODES = ("off", "sync", "async")  # soak.workload.repos
RESPONSE_CACHES = ("none", "local")


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
        "servers and reload only), stub_leak (correct, but each model's stub keeps 4 KiB per "
        "request: proves that growth of the stubs, children_rss_bytes, is found).",
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


def all_keys() -> list[tuple[str, Key]]:
    """(qualified name, key) for documentation."""
    out = [(k.name, k) for k in RUN_KEYS]
    for section, keys in SECTIONS.items():
        out += [(f"{section}.{k.name}", k) for k in keys]
    out += [(f"models.{k.name}", k) for k in MODELS_KEYS]
    out += [(f"model.<name>.{k.name}", k) for k in MODEL_KEYS]
    out += [(f"thresholds.<metric>.{k.name}", k) for k in THRESHOLD_KEYS]
    return out
