"""The user's own models: a plan per model (inputs, expected outputs, checks) and its exercise.

A plan is built from what the server says about a loaded model (its metadata and config) and
what the profile says (`[model.<name>]`: shapes, batch size, data file, tolerances). Inputs come
from a perf_analyzer data file or, without one, from seeded random data valid for each
datatype. Every response is checked: each output present with the datatype and shape the
metadata promise, and equal to the expected output where the data file gives one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from soak.errors import ServerError, SoakError
from soak.target import default_target
from soak.target.interface import (
    SEQUENCE_END,
    MemoryType,
    ModelServer,
    Output,
    ServerFeatures,
    ServerSpec,
    ServerTarget,
)
from soak.triton.tensors import DatatypeError, numpy_dtype
from soak.workload import perfdata, sequences
from soak.workload.backend_check import backend_problem
from soak.workload.polling import wait_unloaded

if TYPE_CHECKING:
    from soak.workload.config import PhaseTimeouts
    from soak.workload.record import PhaseObserver

# perf_analyzer's --string-length default is 128; short strings keep requests small.
MAX_RANDOM_STRING = 16
RANDOM_INT_BOUND = 100


class UserModelError(SoakError):
    """A user model soak cannot drive as configured; the message names the model and what."""


@dataclass(frozen=True)
class ModelSettings:
    """The profile's `[model.<name>]` table, resolved (paths absolute); the defaults here are
    for callers without a profile (soak.profile.MODEL_KEYS holds the profile's)."""

    name: str
    batch_size: int = 1
    shape: dict[str, tuple[int, ...]] = field(default_factory=dict)
    input_data: Path | None = None
    rtol: float = 1e-5
    atol: float = 1e-8
    sequence_length: int = 4  # requests per sequence (sequence-batched models)
    sequence_abandon_fraction: float = 0.0  # sequences whose END is never sent


@dataclass(frozen=True)
class UserModels:
    """The profile's `[models]` section: repositories given to every server, models to load."""

    repositories: tuple[Path, ...] = ()
    models: tuple[ModelSettings, ...] = ()

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # as the metadata promise it; -1 where any size may come


@dataclass(frozen=True)
class Request:
    """One request's inputs (datatypes named for BF16) and the outputs expected, if known."""

    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    expected: dict[str, np.ndarray]


@dataclass(frozen=True)
class ModelPlan:
    name: str
    inputs: tuple[TensorSpec, ...]  # the inputs sent, shapes resolved (batch dimension first)
    outputs: tuple[TensorSpec, ...]
    batch_size: int | None  # None: the model does not batch
    decoupled: bool
    cases: tuple[Request, ...]  # from the data file; empty: random data
    rtol: float
    atol: float
    # Requests per sequence for a sequence-batched model (correlation ids, START/END); None:
    # no sequences. Step k of each sequence sends the data file's entry k (k mod entries).
    sequence_length: int | None = None
    sequence_abandon_fraction: float = 0.0
    sequence: sequences.SequenceConfig | None = None  # the sequence batcher's config
    # Implicit-state inputs the config lists as required: Triton wants them sent and then
    # overrides them with the sequence's state, so soak sends zeros.
    placeholders: frozenset[str] = frozenset()

    def request(self, index: int, rng: np.random.Generator) -> Request:
        """The index-th request: the data file's entries in turn, else fresh random data."""
        if self.cases:
            return self.cases[index % len(self.cases)]
        arrays = {
            t.name: _zeros(t)
            if t.name in self.placeholders
            else random_tensor(t.datatype, t.shape, rng)
            for t in self.inputs
        }
        return Request(arrays, {t.name: t.datatype for t in self.inputs}, {})

    def check(self, outputs: dict[str, Output], expected: dict[str, np.ndarray]) -> list[str]:
        """Problems with one response, each naming the model and the output."""
        problems = []
        for spec in self.outputs:
            out = outputs.get(spec.name)
            if out is None:
                if not self.decoupled:
                    problems.append(f"{self.name}: output {spec.name} missing from the response")
                continue
            problem = self._check_one(spec, out.datatype, out.array, expected.get(spec.name))
            if problem:
                problems.append(f"{self.name}: output {spec.name}: {problem}")
        return problems

    def _check_one(self, spec: TensorSpec, datatype: str, array, expected) -> str | None:
        if datatype != spec.datatype:
            return f"datatype {datatype}, the metadata promise {spec.datatype}"
        promised = list(spec.shape)
        if self.batch_size is not None and promised:
            promised[0] = self.batch_size
        if len(array.shape) != len(promised) or any(
            p not in (-1, a) for p, a in zip(promised, array.shape, strict=True)
        ):
            return f"shape {list(array.shape)}, the metadata promise {promised}"
        if expected is None:
            return None
        if array.shape != expected.shape:
            return f"shape {list(array.shape)}, expected {list(expected.shape)}"
        same = _equal(array, expected, datatype, self.rtol, self.atol)
        if same.all():
            return None
        first = tuple(int(i) for i in np.argwhere(~same)[0])
        return (
            f"differs from the expected output at index {list(first)}: "
            f"got {array[first]!r}, expected {expected[first]!r} "
            f"({int((~same).sum())} of {same.size} values differ)"
        )


def _equal(actual, expected, datatype: str, rtol: float, atol: float) -> np.ndarray:
    """Element-wise equality: exact for integers, BOOL and BYTES, within rtol/atol for floats."""
    if datatype == "BF16":
        actual, expected = _bf16_to_fp32(actual), _bf16_to_fp32(expected)
    elif not datatype.startswith("FP"):
        return np.asarray(actual == expected, dtype=bool).reshape(actual.shape)
    return np.isclose(actual.astype(np.float64), expected.astype(np.float64), rtol, atol, True)


def _bf16_to_fp32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def random_tensor(datatype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Seeded data valid for the datatype: bounded integers, finite floats, short strings."""
    if datatype == "BOOL":
        return rng.integers(0, 2, shape).astype(bool)
    if datatype == "BYTES":
        lengths = rng.integers(0, MAX_RANDOM_STRING + 1, int(np.prod(shape)))
        out = np.empty(len(lengths), dtype=object)
        out[:] = [bytes(rng.integers(ord("a"), ord("z") + 1, n).astype(np.uint8)) for n in lengths]
        return out.reshape(shape)
    if datatype == "BF16":
        return (rng.standard_normal(shape).astype(np.float32).view(np.uint32) >> 16).astype(
            np.uint16
        )
    dtype = numpy_dtype(datatype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    low, high = max(info.min, -RANDOM_INT_BOUND), min(info.max, RANDOM_INT_BOUND)
    return rng.integers(low, high + 1, shape).astype(dtype)


# -- building a plan -------------------------------------------------------------------------


def build_plan(metadata: dict, config: dict, settings: ModelSettings) -> ModelPlan:
    """The plan of one loaded model; UserModelError names the model and what is missing."""
    name = settings.name
    max_batch = int(config.get("max_batch_size", 0))
    batching = max_batch > 0
    if batching and settings.batch_size > max_batch:
        raise UserModelError(
            f"model.{name}.batch_size = {settings.batch_size} exceeds the model's "
            f"max_batch_size {max_batch}"
        )
    optional = {i["name"] for i in config.get("input", []) if i.get("optional")}
    known = {t["name"] for t in metadata.get("inputs", [])}
    unknown = sorted(set(settings.shape) - known)
    if unknown:
        raise UserModelError(
            f"model.{name}.shape names {unknown[0]!r}, which is no input of {name!r} "
            f"(inputs: {', '.join(sorted(known))})"
        )
    data = perfdata.load(settings.input_data) if settings.input_data else None
    given = set(settings.shape) | (set(data.data[0]) if data else set())
    seq = sequences.sequence_config(config)
    state_in = seq.state_inputs if seq else frozenset()
    inputs = []
    for tensor in metadata.get("inputs", []):
        if tensor["name"] in optional and (
            tensor["name"] not in given or tensor["name"] in state_in
        ):
            continue  # optional inputs are left out unless the profile or the data give them
        inputs.append(_input_spec(name, tensor, settings, batching, data))
    state_out = seq.state_outputs if seq else frozenset()
    outputs = tuple(
        TensorSpec(t["name"], t["datatype"], tuple(t["shape"]))
        for t in metadata.get("outputs", [])
        if t["name"] not in state_out  # the state is Triton's; a client asks for it to debug
    )
    decoupled = bool(config.get("model_transaction_policy", {}).get("decoupled", False))
    plan = ModelPlan(
        name,
        tuple(inputs),
        outputs,
        settings.batch_size if batching else None,
        decoupled,
        (),
        settings.rtol,
        settings.atol,
        settings.sequence_length if seq else None,
        settings.sequence_abandon_fraction,
        seq,
        frozenset(t.name for t in inputs if t.name in state_in),
    )
    if data is None:
        return plan
    if decoupled and data.validation:
        raise UserModelError(
            f"model {name!r} is decoupled: which of its responses validation_data in "
            f"{data.path} describes is ambiguous; soak counts and shape-checks its responses"
        )
    try:
        cases = tuple(_case(plan, data, i) for i in range(len(data.data)))
    except DatatypeError as exc:
        raise UserModelError(f"model {name!r}, {data.path}: {exc}") from None
    return ModelPlan(**{**plan.__dict__, "cases": cases})


def _input_spec(model, tensor, settings, batching, data) -> TensorSpec:
    """An input with every dimension known: the profile's shape, else the data's, else fixed."""
    name, datatype = tensor["name"], tensor["datatype"]
    try:
        numpy_dtype(datatype)
    except DatatypeError as exc:
        raise UserModelError(f"model {model!r}, input {name!r}: {exc}") from None
    dims = list(tensor["shape"])[1:] if batching else list(tensor["shape"])
    if name in settings.shape:
        wanted = list(settings.shape[name])
        if len(wanted) != len(dims) or any(
            d not in (-1, w) for d, w in zip(dims, wanted, strict=True)
        ):
            raise UserModelError(
                f"model.{model}.shape.{name} = {wanted} does not fit the input's shape {dims}"
                + (" (without the batch dimension)" if batching else "")
            )
        dims = wanted
    elif -1 in dims and data is not None and name in data.data[0]:
        dims = [-1] * len(dims)  # each data entry brings its own shape
    elif -1 in dims:
        raise UserModelError(
            f"model {model!r}, input {name!r} has a variable dimension (shape {dims}); give its "
            f"size in the profile: [model.{model}] shape = {{ {name} = [...] }}"
        )
    full = ([settings.batch_size] if batching else []) + dims
    return TensorSpec(name, datatype, tuple(full))


def _case(plan: ModelPlan, data: perfdata.DataFile, index: int) -> Request:
    entry = data.data[index]
    specs = {t.name: t for t in plan.inputs}
    missing = sorted(n for n in specs if n not in entry and n not in plan.placeholders)
    if missing:
        raise DatatypeError(f"data[{index}] has no input {missing[0]!r}")
    extra = sorted(n for n in entry if n not in specs)
    if extra:
        raise DatatypeError(f"data[{index}].{extra[0]} is no input of the model")
    inputs = {n: _batched(plan, t, specs[n].datatype, specs[n].shape) for n, t in entry.items()}
    inputs.update({n: _zeros(specs[n]) for n in plan.placeholders if n not in entry})
    expected = {}
    if data.validation:
        outs = {t.name: t for t in plan.outputs}
        for n, t in data.validation[index].items():
            if n not in outs:
                raise DatatypeError(f"validation_data[{index}].{n} is no output of the model")
            expected[n] = _batched(plan, t, outs[n].datatype, outs[n].shape)
    return Request(inputs, {n: specs[n].datatype for n in inputs}, expected)


def _zeros(spec: TensorSpec) -> np.ndarray:
    return np.zeros(spec.shape, dtype=numpy_dtype(spec.datatype))


def _batched(plan: ModelPlan, tensor: perfdata.TensorData, datatype: str, shape) -> np.ndarray:
    """A batch-1 tensor of the data file, repeated to the batch size of a batching model."""
    dims = tuple(shape[1:]) if plan.batch_size is not None else tuple(shape)
    array = perfdata.to_array(tensor, datatype, None if -1 in dims else dims)
    if plan.batch_size is None:
        return array
    return np.repeat(array[np.newaxis, ...], plan.batch_size, axis=0)


# -- the server side ---------------------------------------------------------------------------


def plan_on(server: ModelServer, settings: ModelSettings) -> ModelPlan:
    """Ask the server (model loaded) for metadata and config, then build the plan; a decoupled
    model is refused where the server's client cannot receive its responses."""
    plan = build_plan(
        server.model_metadata(settings.name), server.model_config(settings.name), settings
    )
    if plan.decoupled and not server.receives_decoupled:
        raise UserModelError(
            f"model {settings.name!r} is decoupled: its responses come only over gRPC's "
            "stream, not over HTTP or unary gRPC (protocol = 'grpc', streaming = true)"
        )
    return plan


@dataclass
class Exercise:
    """What exercising one model did: requests sent, responses received, problems found."""

    requests: int = 0
    responses: int = 0
    problems: list[str] = field(default_factory=list)


def exercise(
    server: ModelServer,
    plan: ModelPlan,
    count: int,
    rng: np.random.Generator,
    memory_type: MemoryType = MemoryType.SYSTEM,
    timeout_s: float = 30.0,
    device: int = 0,
) -> Exercise:
    """Send `count` requests to a loaded model and check every response; any scenario can call
    it. Stops at the first request with problems (a broken model would repeat them `count`
    times); a ServerError (ServerTimeout included) from the server propagates to the caller."""
    done = Exercise()
    names = [t.name for t in plan.outputs]
    sequence, abandon = (0, 0), False
    for index in range(count):
        step = index
        if plan.sequence_length:
            step = index % plan.sequence_length
            if step == 0:
                abandon = bool(plan.sequence_abandon_fraction) and (
                    rng.random() < plan.sequence_abandon_fraction
                )
                if plan.sequence is not None:  # never queue behind abandoned sequences
                    sequences.wait_for_slot(server, plan.name, plan.sequence)
            correlation = sequences.next_id() if step == 0 else sequence[0]
            flags = sequences.flags(step, plan.sequence_length, index == count - 1)
            if abandon:  # never ended: Triton's idle-sequence timeout must release it
                flags &= ~SEQUENCE_END
            sequence = (correlation, flags)
        request = plan.request(step, rng)
        if plan.decoupled:
            responses = server.infer_responses(
                plan.name,
                request.inputs,
                names,
                memory_type,
                timeout_s,
                request.datatypes,
                device,
                sequence=sequence,
            )
        else:
            responses = [
                server.infer(
                    plan.name,
                    request.inputs,
                    names,
                    memory_type,
                    timeout_s,
                    device=device,
                    datatypes=request.datatypes,
                    sequence=sequence,
                )
            ]
        if abandon:  # Triton holds its slot until the idle timeout after this request
            sequences.abandoned(server, plan.name, sequence[0])
        done.requests += 1
        done.responses += len(responses)
        for outputs in responses:
            done.problems += plan.check(outputs, request.expected)
        if done.problems:
            break
    return done


# -- before any server -------------------------------------------------------------------------


def preflight(
    user: UserModels,
    backends_dir: Path,
    log_file: Path | None = None,
    timeout_s: float = 60.0,
    target: ServerTarget | None = None,
    features: ServerFeatures | None = None,
    timeouts: PhaseTimeouts | None = None,
    observer: PhaseObserver | None = None,
) -> dict[str, ModelPlan]:
    """Before a run: every model's backend is installed, and one server loads every model and
    plans it, so that a missing backend, a failing load or a -1 without a shape is one clear
    UserModelError instead of the same failure in every lifecycle. Each load and the unload
    are announced to `observer` (instance -1) under `timeouts`, so that the supervisor's
    watchdog ends a hung one within the profile's timeout, naming the model."""
    load_s = timeouts.load if timeouts is not None else timeout_s
    unload_s = timeouts.unload if timeouts is not None else timeout_s

    def announce(phase: str, timeout: float, detail: str) -> None:
        if observer is not None:
            observer(-1, phase, timeout, f"preflight: {detail}")

    # An attached server's backends are its own: only its load can say one is missing.
    checks_backends = target is None or target.writes_repositories
    for settings in user.models if checks_backends else ():
        problem = backend_problem(user.repositories, settings.name, backends_dir)
        if problem:
            raise UserModelError(problem)
    spec = ServerSpec(
        user.repositories,
        backends_dir,
        server_id="soak-preflight",
        log_file=log_file,
        features=features or ServerFeatures(),
    )
    plans: dict[str, ModelPlan] = {}
    with (target or default_target()).new_server(spec) as server:
        loaded = []
        try:
            for settings in user.models:
                announce("load", load_s, f"loading model {settings.name!r}")
                try:
                    server.load_model(settings.name)
                except ServerError as exc:
                    raise UserModelError(
                        f"model {settings.name!r} does not load: {exc.message}"
                    ) from None
                loaded.append(settings.name)
                try:
                    plans[settings.name] = plan_on(server, settings)
                except ServerError as exc:
                    raise UserModelError(f"model {settings.name!r}: {exc.message}") from None
        finally:
            if loaded:
                announce("unload", unload_s, f"unloading {', '.join(map(repr, loaded))}")
            # One at a time: unloads at once destroy their models on concurrent ModelDeleter
            # threads, and Triton 2.51's rate limiter then crashed once in ~20 preflights
            # (SIGSEGV in InstanceQueue::DecrementConsumerCount from ~TritonModelInstance).
            for name in loaded:
                server.unload_model(name)
                wait_unloaded(server, [name], unload_s)
    return plans
