"""One server instance's life, phase by phase, timed: Triton's multi-server test, made strict.

A lifecycle never passes silently: every failed check becomes a `Failure` naming the
instance, the phase and Triton's message. A call that overruns its phase timeout inside
Triton cannot be interrupted; the lifecycle then raises `PhaseHung`, and the process that
hosts it must be ended by whoever watches it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from soak.errors import ServerError, ServerTimeout, SoakError
from soak.phases import PHASE_TIMEOUTS_S
from soak.target import default_target
from soak.target.interface import (
    NOT_CHECKED,
    MemoryType,
    ModelServer,
    ServerFeatures,
    ServerSpec,
    ServerTarget,
)
from soak.triton.facts import EXIT_TIMEOUT_EXPIRED
from soak.workload import inject
from soak.workload.composed import ENSEMBLE_MODEL
from soak.workload.counters import Counted, CounterCheck
from soak.workload.models import (
    ModelPlan,
    ModelSettings,
    UserModelError,
    UserModels,
    backend_problem,
    exercise,
    plan_on,
)
from soak.workload.polling import pauses, wait_unloaded
from soak.workload.repos import (
    COMMON_MODEL,
    ERROR_BEHAVIOURS,
    ERROR_TOKEN,
    FAIL_MARK,
    Behaviour,
    own_model_name,
)

log = logging.getLogger(__name__)


_DTYPES = {"int32": np.int32, "fp32": np.float32}
_OUTPUTS = ["OUTPUT0", "OUTPUT1"]


@dataclass(frozen=True)
class PhaseTimeouts:
    """Seconds each phase may take before the run is declared hung; the defaults are the
    profile's too (`soak.phases.PHASE_TIMEOUTS_S`), so a profile that says nothing gets these."""

    server_new: float = PHASE_TIMEOUTS_S["server_new"]
    wait_ready: float = PHASE_TIMEOUTS_S["wait_ready"]
    load: float = PHASE_TIMEOUTS_S["load"]
    infer: float = PHASE_TIMEOUTS_S["infer"]
    statistics: float = PHASE_TIMEOUTS_S["statistics"]
    unload: float = PHASE_TIMEOUTS_S["unload"]
    isolation: float = PHASE_TIMEOUTS_S["isolation"]
    stop: float = PHASE_TIMEOUTS_S["stop"]
    delete: float = PHASE_TIMEOUTS_S["delete"]

    def of(self, phase: str) -> float:
        return float(getattr(self, phase))


@dataclass(frozen=True)
class LifecycleConfig:
    instance: int
    common_repo: Path
    own_repo: Path
    backends_dir: Path
    other_model: str | None = None  # another instance's model: loading it must fail
    memory_type: MemoryType = MemoryType.SYSTEM
    gpu_device: int = 0  # where GPU buffers (and the GPU injection) go
    inferences_per_model: int = 10
    concurrency: int = 1  # requests in flight per server
    datatype: str = "int32"
    timeouts: PhaseTimeouts = field(default_factory=PhaseTimeouts)
    log_file: Path | None = None
    injection: inject.Injection = field(default_factory=inject.Injection)
    seed: int = 0
    behaviour: Behaviour = Behaviour.CORRECT  # what the models are expected to do
    error_fraction: float = 1.0  # share of requests an error behaviour fails
    user_models: UserModels = field(default_factory=UserModels)  # loaded alongside
    target: ServerTarget = field(default_factory=default_target)  # what makes the server
    features: ServerFeatures = field(default_factory=ServerFeatures)
    composed: tuple[str, ...] = ()  # generated models over the add/sub one (workload.composed)


@dataclass(frozen=True)
class Failure:
    instance: int
    phase: str
    message: str


@dataclass
class LifecycleRecord:
    instance: int
    phase_s: dict[str, float] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    model_loads: int = 0
    failed_loads: int = 0  # loads that failed as the behaviour expects
    inferences: int = 0  # requests that completed: responses and expected errors
    errors: int = 0  # requests that ended in the expected error
    responses: int = 0  # responses received: one per request, any number when decoupled
    cache_hits: int = 0  # response cache hits and misses (insertions) Triton counted
    cache_insertions: int = 0
    completed: bool = False  # reached delete
    hung_phase: str | None = None
    # Per generated model this iteration: (successes, expected errors) soak counted.
    per_model: dict[str, tuple[int, int]] = field(default_factory=dict)
    counted: Counted | None = None  # what the server's /metrics counted (None: no /metrics)
    triton_version: str | None = None


class PhaseHung(Exception):
    """A call into Triton overran its phase timeout and is still running."""

    def __init__(self, instance: int, phase: str, timeout_s: float, what: str = "") -> None:
        super().__init__(f"instance {instance}: phase {phase} still running after {timeout_s:g} s")
        self.instance = instance
        self.phase = phase
        self.timeout_s = timeout_s
        self.what = what  # which call, naming its model ("inference on m"); '' when unknown


PhaseObserver = Callable[..., None]  # (instance, phase, timeout_s, detail="")

_retained_servers: list[ModelServer] = []  # skip_server_delete: never deleted, never collected

# A response that is never deleted (inject.unreleased_response_fraction) keeps its model alive:
# Triton's InferenceResponse owns a shared_ptr to the model, so that model stays UNLOADING for
# good, with its instance, python backend stub and shm region. Its server can then never finish
# stopping; with this exit timeout the stop gives up at once (instead of after 30 s) and the
# server is deleted, leaving the pinned model behind as the injected leak.
PINNED_EXIT_TIMEOUT_S = 0
STATISTICS_SETTLE_S = 1.0  # how long a short statistics count is read again (see _counted)


def _bounded(calls: list[Callable[[], None]], timeout_s: float) -> list[BaseException | None]:
    """Run blocking calls in parallel threads; TimeoutError(indexes still running) on expiry."""
    results: list[BaseException | None] = [None] * len(calls)

    def runner(i: int, fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            results[i] = exc

    threads = [
        threading.Thread(target=runner, args=(i, fn), daemon=True, name="soak-triton-call")
        for i, fn in enumerate(calls)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    running = [i for i, t in enumerate(threads) if t.is_alive()]
    if running:
        raise TimeoutError(running)
    return results


class Lifecycle:
    """The phases of one instance. `run()` is a whole life (the servers scenario); `open`,
    `exercise` and `close` split it for a server that outlives its iterations (reload,
    traffic), each iteration recorded in a fresh record (`begin_iteration`)."""

    def __init__(
        self,
        config: LifecycleConfig,
        observer: PhaseObserver | None = None,
        leaker: inject.ResponseLeaker | None = None,
    ) -> None:
        self.config = config
        self.observer = observer
        self.leaker = leaker or inject.ResponseLeaker(config.injection.unreleased_response_fraction)
        self.record = LifecycleRecord(config.instance)
        self.rng = np.random.default_rng(config.seed)
        # Separate stream, so that a correct model sees the same inputs whatever the fraction.
        self.fail_rng = np.random.default_rng((config.seed, 1))
        self.own_model = own_model_name(config.instance)
        self.pinned: set[str] = set()  # models with a kept response: they cannot unload
        self.server: ModelServer | None = None
        self.loaded: list[str] = []
        # Per loaded model, since its load: (successes, expected errors), for the statistics.
        self.answered: dict[str, tuple[int, int]] = {}
        # Per loaded model, the response cache's (hits, misses) counted so far since its load.
        self.cache_seen: dict[str, tuple[int, int]] = {}
        # Per loaded user model, its plan: made once per load, from the server's metadata.
        self.plans: dict[str, ModelPlan] = {}
        self.settings = {s.name: s for s in config.user_models.models}
        self.counters = CounterCheck()  # the server's /metrics, as last seen

    @property
    def generated(self) -> list[str]:
        """The add/sub models soak writes (the ones a behaviour applies to)."""
        return [COMMON_MODEL, self.own_model]

    @property
    def models(self) -> list[str]:
        """Every model of this server: the generated ones, then the profile's user models."""
        return [*self.generated, *self.config.composed, *self.config.user_models.names]

    def _must_fail_load(self, model: str) -> bool:
        return self.config.behaviour is Behaviour.INIT_RAISES and model in self.generated

    # -- helpers ----------------------------------------------------------------------------
    def _fail(self, phase: str, message: str) -> None:
        self.record.failures.append(Failure(self.config.instance, phase, message))
        log.warning("instance %d %s: %s", self.config.instance, phase, message)

    def _phase(self, phase: str) -> _PhaseTimer:
        timeout = self.config.timeouts.of(phase)
        if self.observer is not None:
            self.observer(self.config.instance, phase, timeout)
        return _PhaseTimer(self, phase)

    def _hang(self, phase: str, what: str = "") -> PhaseHung:
        timeout = self.config.timeouts.of(phase)
        self.record.hung_phase = phase
        self._fail(phase, f"timed out: {what or phase} still running after {timeout:g} s")
        return PhaseHung(self.config.instance, phase, timeout, what)

    @contextmanager
    def _guarded(self, on_abort: str) -> Iterator[None]:
        """A failed phase (already recorded) skips to cleanup, by `on_abort`: "delete" unloads
        and deletes the server, "unload" unloads its models and keeps it, "keep" keeps both.
        A hung call leaves the server alone (touching it could crash) and is raised."""
        try:
            yield
        except PhaseHung:
            self.server = None
            raise
        except _Abort:
            self._salvage(on_abort)
        except BaseException:
            self._salvage(on_abort)
            raise

    # -- the servers scenario: one whole life -----------------------------------------------
    def run(self) -> LifecycleRecord:
        cfg = self.config
        with self._guarded("delete"):
            self._open()
            self._exercise(load=True, unload=True)
            if cfg.other_model is not None:
                with self._phase("isolation"):
                    self._check_isolation(self.server, cfg.other_model)
            self._stop_and_delete()
        return self.record

    # -- a long-lived server ----------------------------------------------------------------
    def begin_iteration(self) -> LifecycleRecord:
        """A fresh record for this iteration's counts, phases and failures."""
        self.record = LifecycleRecord(self.config.instance)
        return self.record

    def open(self, load: bool) -> None:
        """Create the server (and load its models): the setup of a long-lived server. A server
        that fails to start is deleted at once; a model that fails to load stays unloaded."""
        with self._guarded("delete"):
            self._open()
        if load and self.server is not None:
            with self._guarded("keep"), self._phase("load"):
                self.loaded = self._load(self.server, self.models)

    def exercise(self, load: bool, unload: bool, version: int | None = None) -> None:
        """One iteration on the live server: (load,) infer, check statistics, (unload)."""
        if self.server is None:
            return  # its setup failed, recorded then
        with self._guarded("unload" if unload else "keep"):
            self._exercise(load, unload, version)

    def close(self) -> None:
        """Unload what is loaded, then stop and delete the server: once, at the end."""
        if self.server is None:
            return
        with self._guarded("delete"):
            if self.loaded:
                with self._phase("unload"):
                    self._unload(self.server, self.loaded)
                    self.loaded = []
            self._stop_and_delete()

    # -- phases -----------------------------------------------------------------------------
    def _open(self) -> None:
        cfg = self.config
        with self._phase("server_new"):
            spec = ServerSpec(
                repositories=(cfg.common_repo, cfg.own_repo, *cfg.user_models.repositories),
                backends_dir=cfg.backends_dir,
                server_id=f"soak-{cfg.instance}",
                log_file=cfg.log_file,
                features=cfg.features,
            )
            if cfg.injection.unreleased_response_fraction > 0:
                spec = replace(spec, exit_timeout_s=PINNED_EXIT_TIMEOUT_S)
            self.server = cfg.target.new_server(spec)
            cfg.target.inject_server_leaks(cfg.injection, cfg.gpu_device)
        with self._phase("wait_ready"):
            self._wait_ready(self.server)
            self.record.triton_version = self.server.metadata().get("version")

    def _exercise(self, load: bool, unload: bool, version: int | None = None) -> None:
        server = self.server
        if load:
            with self._phase("load"):
                self.loaded = self._load(server, self.models, version)
        # A lifecycle infers when every model that should load did; a long-lived server with
        # a model that failed its one load still serves the others.
        should_load = [m for m in self.models if not self._must_fail_load(m)]
        if self.loaded and (len(self.loaded) == len(should_load) or not unload):
            with self._phase("infer"):
                for model in self.loaded:
                    if model in self.settings:
                        self._infer_user(server, self.settings[model])
                    else:
                        self._infer(server, model)
            with self._phase("statistics"):
                self._check_statistics(server, self.loaded)
                self._check_counters(server, self.loaded)
        if unload:
            with self._phase("unload"):
                self._unload(server, self.loaded)
                self.loaded = []

    def _stop_and_delete(self) -> None:
        server = self.server
        with self._phase("stop"):
            self._bounded_call(server.stop, "stop", expected=self._stop_blocked_by_pinned)
        with self._phase("delete"):
            if self.config.injection.skip_server_delete:
                _retained_servers.append(server)
            else:
                self._bounded_call(server.delete, "delete")
            self.server = None
        self.record.completed = True

    def _bounded_call(
        self,
        fn: Callable[[], None],
        phase: str,
        expected: Callable[[ServerError], bool] | None = None,
    ) -> None:
        """Run a blocking server call under its phase timeout; `expected` errors are no failure."""
        try:
            (error,) = _bounded([fn], self.config.timeouts.of(phase))
        except TimeoutError:
            raise self._hang(phase) from None
        if error is not None:
            if isinstance(error, ServerError) and expected is not None and expected(error):
                log.info(
                    "instance %d %s: %s (expected)", self.config.instance, phase, error.message
                )
                return
            if isinstance(error, ServerError):
                self._fail(phase, error.message)
                raise _Abort from error
            raise error

    def _stop_blocked_by_pinned(self, error: ServerError) -> bool:
        """Stop gave up on models that kept responses hold: the injected leak, not a failure."""
        return bool(self.pinned) and EXIT_TIMEOUT_EXPIRED in error.message

    def _wait_ready(self, server: ModelServer) -> None:
        deadline = time.monotonic() + self.config.timeouts.wait_ready
        for pause in pauses():
            try:
                if server.is_live() and server.is_ready():
                    return
            except ServerError as exc:
                self._fail("wait_ready", exc.message)
                raise _Abort from exc
            if time.monotonic() > deadline:
                self._fail("wait_ready", "server not live and ready before the timeout")
                raise _Abort
            time.sleep(pause)

    def _load(
        self, server: ModelServer, models: list[str], version: int | None = None
    ) -> list[str]:
        """Load in parallel; return the models that loaded and turned ready (in `version`).

        With the init_raises behaviour every load must fail with the model's own error: such
        a failure is counted, a success or another error is a failure."""
        try:
            errors = _bounded(
                [lambda m=m: server.load_model(m) for m in models], self.config.timeouts.load
            )
        except TimeoutError as exc:
            stuck = ", ".join(models[i] for i in exc.args[0])
            raise self._hang("load", f"loading {stuck}") from None
        loaded = []
        for model, error in zip(models, errors, strict=False):
            must_fail = self._must_fail_load(model)
            # Only the generated models get new versions (reload_new_version).
            expected = version if model in self.generated else None
            if error is None:
                self.record.model_loads += 1
                self.answered[model] = (0, 0)
                self.cache_seen[model] = (0, 0)
                self.plans.pop(model, None)  # planned again, once, for this load
                if must_fail:
                    self._fail("load", f"{model} loaded, but its initialize must raise")
                if server.model_is_ready(model, -1 if expected is None else expected):
                    loaded.append(model)
                elif expected is not None:
                    self._fail("load", f"{model} loaded but version {expected} is not ready")
                else:
                    self._fail("load", f"{model} loaded but is not ready")
            elif isinstance(error, ServerError):
                if must_fail and ERROR_TOKEN in error.message:
                    self.record.failed_loads += 1
                else:
                    missing = backend_problem(
                        self.config.user_models.repositories, model, self.config.backends_dir
                    )
                    self._fail("load", missing or f"{model}: {error.message}")
            else:
                raise error
        try:
            self.counters.baseline(server, loaded)
        except ServerError as exc:
            self._fail("load", f"/metrics: {exc.message}")
        return loaded

    def _infer(self, server: ModelServer, model: str) -> None:
        """One burst of `inferences_per_model` requests, `concurrency` in flight; every
        response checked exactly. The inputs and expected outputs are drawn and computed once
        per burst, in the order one request at a time drew them (a, then b, per request)."""
        cfg = self.config
        count = cfg.inferences_per_model
        if count <= 0:
            return
        dtype = _DTYPES[cfg.datatype]
        drawn = self.rng.integers(-1000, 1000, size=(count, 2, 1, 16)).astype(dtype)
        a, b = drawn[:, 0], drawn[:, 1]
        if cfg.behaviour in ERROR_BEHAVIOURS:
            must_fail = self.fail_rng.random(count) < cfg.error_fraction
            a[must_fail, 0, 0] = FAIL_MARK
        else:
            must_fail = np.zeros(count, bool)
        sums, diffs = a + b, a - b

        def keep(_index: int) -> bool:
            kept = self.leaker.keep_next()
            if kept:
                self.pinned.add(model)
            return kept

        def on_result(i: int, result: dict | None, error: ServerError | None) -> bool:
            if error is not None:
                if must_fail[i] and ERROR_TOKEN in error.message:
                    self.record.inferences += 1
                    self.record.errors += 1
                    self._answered(model, error=True)
                    return True
                self._fail("infer", f"{model}: {error.message}")
                return False
            self.record.inferences += 1  # completed; whether it was right is checked next
            self.record.responses += 1
            if must_fail[i]:
                self._fail(
                    "infer",
                    f"{model}: succeeded, but behaviour {cfg.behaviour.value} must fail this "
                    "request",
                )
                return False
            if result is NOT_CHECKED:  # completed; its generator could not compare it
                self._answered(model, error=False)
                return True
            problems = self._validate(result or {}, sums[i], diffs[i])
            if problems:
                self._fail("infer", f"{model}: {'; '.join(problems)}")
                return False
            self._answered(model, error=False)
            return True

        try:
            server.infer_many(
                model,
                ({"INPUT0": a[i], "INPUT1": b[i]} for i in range(count)),
                _OUTPUTS,
                on_result,
                concurrency=cfg.concurrency,
                memory_type=cfg.memory_type,
                timeout_s=cfg.timeouts.infer,
                device=cfg.gpu_device,
                keep=keep,
                expected=lambda i: (
                    None if must_fail[i] else {"OUTPUT0": sums[i], "OUTPUT1": diffs[i]}
                ),
            )
        except ServerTimeout as exc:
            raise self._hang("infer", f"inference on {model}") from exc

    def _infer_user(self, server: ModelServer, settings: ModelSettings) -> None:
        """Exercise a user model, planned from this server's metadata once per load."""
        cfg = self.config
        try:
            plan = self.plans.get(settings.name)
            if plan is None:
                plan = self.plans[settings.name] = plan_on(server, settings)
            done = exercise(
                server,
                plan,
                cfg.inferences_per_model,
                self.rng,
                cfg.memory_type,
                cfg.timeouts.infer,
                cfg.gpu_device,
            )
        except ServerTimeout as exc:
            raise self._hang("infer", f"inference on {settings.name}") from exc
        except (ServerError, UserModelError) as exc:
            message = exc.message if isinstance(exc, ServerError) else str(exc)
            self._fail("infer", f"{settings.name}: {message}")
            return
        self.record.inferences += done.requests
        self.record.responses += done.responses
        for problem in done.problems:
            self._fail("infer", problem)
        if not done.problems:
            ok, errors = self.answered.get(settings.name, (0, 0))
            self.answered[settings.name] = (ok + done.requests, errors)

    def _answered(self, model: str, error: bool) -> None:
        """One more success or expected error of `model` since its load (for statistics) and
        in this iteration (for the server's counters)."""
        ok, errors = self.answered.get(model, (0, 0))
        self.answered[model] = (ok + (not error), errors + error)
        ok, errors = self.record.per_model.get(model, (0, 0))
        self.record.per_model[model] = (ok + (not error), errors + error)

    def _check_counters(self, server: ModelServer, models: list[str]) -> None:
        """The server's /metrics against soak's counts of this iteration's generated models;
        not judged with composed models (their steps are requests of the add/sub model too)
        or after a failed inference (the burst stopped with requests in flight)."""
        judged: dict[str, tuple[int, int]] = {}
        infer_failed = any(f.phase == "infer" for f in self.record.failures)
        if not self.config.composed and not infer_failed:
            for model in self.generated:
                if model not in models:
                    continue
                ok, errors = self.record.per_model.get(model, (0, 0))
                # Triton counts a python model's error response as a success (2.51).
                if self.config.behaviour is Behaviour.ERROR_RESPONSE:
                    ok, errors = ok + errors, 0
                judged[model] = (ok, errors)
        self.record.counted = self.counters.check(
            server, models, judged, lambda line: self._fail("statistics", line)
        )

    def _validate(self, result: dict, sums: np.ndarray, diffs: np.ndarray) -> list[str]:
        problems = []
        for name, expected in (("OUTPUT0", sums), ("OUTPUT1", diffs)):
            out = result.get(name)
            if out is None:
                problems.append(f"{name} missing from the response")
                continue
            if out.memory_type is not self.config.memory_type:
                problems.append(
                    f"{name} arrived in {out.memory_type.value} memory, "
                    f"{self.config.memory_type.value} was requested"
                )
            if out.array.shape != expected.shape or not np.array_equal(out.array, expected):
                wrong = (
                    int(np.sum(out.array != expected)) if out.array.shape == expected.shape else 16
                )
                problems.append(
                    f"{name} wrong: {wrong} of 16 values differ "
                    f"(first expected {expected.ravel()[:3].tolist()}, "
                    f"got {out.array.ravel()[:3].tolist()})"
                )
        return problems

    def _check_statistics(self, server: ModelServer, models: list[str]) -> None:
        """Triton must have counted at least the successes and failures soak saw since load."""
        for model in models:
            ok, errors = self.answered.get(model, (0, 0))
            # Triton counts an error response a python model returns as a success (2.51); the
            # ensemble scheduler counts the same response of its step as a failure.
            if self.config.behaviour is Behaviour.ERROR_RESPONSE and model != ENSEMBLE_MODEL:
                ok, errors = ok + errors, 0
            counted = self._counted(server, model, ok, errors)
            if counted is None:
                continue
            success, failed, counts = counted
            self._count_cache(model, counts)
            if success < ok:
                self._fail("statistics", f"{model}: {success} successful inferences, expected {ok}")
            if failed < errors:
                self._fail("statistics", f"{model}: {failed} failed inferences, expected {errors}")

    def _count_cache(self, model: str, counts: list[dict]) -> None:
        """This iteration's response cache hits and misses (each miss inserts): the statistics
        count since the load, so the increase since the last look."""
        hits = sum(int(c.get("cache_hit", {}).get("count", 0)) for c in counts)
        misses = sum(int(c.get("cache_miss", {}).get("count", 0)) for c in counts)
        seen_hits, seen_misses = self.cache_seen.get(model, (0, 0))
        self.record.cache_hits += max(0, hits - seen_hits)
        self.record.cache_insertions += max(0, misses - seen_misses)
        self.cache_seen[model] = (hits, misses)

    def _counted(
        self, server: ModelServer, model: str, ok: int, errors: int
    ) -> tuple[int, int, list[dict]] | None:
        """(successes, failures, the statistics entries) Triton counted; None when it could
        not say (recorded). A tritonserver process counts a request after its response left
        (seen over HTTP: 9 of 10 right after the 10th answer), so a short count is read again
        for up to 1 s."""
        deadline = time.monotonic() + STATISTICS_SETTLE_S
        while True:
            try:
                stats = server.model_statistics(model)
            except ServerError as exc:
                self._fail("statistics", f"{model}: {exc.message}")
                return None
            counts = [e["inference_stats"] for e in stats.get("model_stats", [])]
            success = sum(int(c["success"]["count"]) for c in counts)
            failed = sum(int(c["fail"]["count"]) for c in counts)
            if (success >= ok and failed >= errors) or time.monotonic() > deadline:
                return success, failed, counts
            time.sleep(0.02)

    def _unload(self, server: ModelServer, models: list[str]) -> None:
        """Unload in parallel, then watch the model index (stop would poll once a second)."""
        for model in models:
            try:
                server.unload_model(model)
            except ServerError as exc:
                self._fail("unload", f"{model}: {exc.message}")
        try:
            # A model a kept response holds never gets past UNLOADING (see PINNED_EXIT_TIMEOUT_S).
            stuck = wait_unloaded(server, models, self.config.timeouts.unload, held=self.pinned)
        except ServerError as exc:
            self._fail("unload", f"model index: {exc.message}")
            raise _Abort from exc
        if stuck:
            states = ", ".join(f"{m} ({state})" for m, state in stuck.items())
            raise self._hang("unload", f"unloading {states}")

    def _check_isolation(self, server: ModelServer, other: str) -> None:
        try:
            server.load_model(other)
        except ServerError:
            return
        self._fail("isolation", f"loading {other}, another instance's model, succeeded")
        self._unload(server, [other])

    def _salvage(self, on_abort: str) -> None:
        """After an aborted phase (see `_guarded`); what goes wrong here is recorded too."""
        server = self.server
        if server is None or on_abort == "keep":
            return
        try:
            if self.loaded:
                self._unload(server, self.loaded)
        except _Abort:
            pass  # already recorded; the server must still go
        except PhaseHung:
            self.server = None
            raise
        except Exception as exc:  # noqa: BLE001 - recorded, never silent
            self._fail("unload", f"cleanup after failure: {type(exc).__name__}: {exc}")
        self.loaded = []
        if on_abort == "unload":
            return
        self.server = None
        try:
            server.close()
        except Exception as exc:  # noqa: BLE001 - recorded, never silent
            self._fail("delete", f"cleanup after failure: {type(exc).__name__}: {exc}")


class _Abort(Exception):
    """A phase failed (already recorded): skip to cleanup."""


class _PhaseTimer:
    def __init__(self, lifecycle: Lifecycle, phase: str) -> None:
        self.lifecycle = lifecycle
        self.phase = phase

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, exc_type, exc, tb) -> None:
        elapsed = time.perf_counter() - self.start
        self.lifecycle.record.phase_s[self.phase] = elapsed
        # Triton's and CUDA's errors (a GPU injection on a driver too old) belong to the phase
        # that ran: recorded once here, then the lifecycle cleans up as after any failed phase.
        if exc_type is not None and issubclass(exc_type, SoakError):
            self.lifecycle._fail(
                self.phase, exc.message if isinstance(exc, ServerError) else str(exc)
            )
            raise _Abort from exc
