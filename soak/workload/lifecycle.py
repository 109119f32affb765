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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from soak.errors import SoakError
from soak.profile import TIMEOUT_KEYS
from soak.triton import InferenceTimeout, MemoryType, Server, ServerOptions, TritonError
from soak.workload import inject
from soak.workload.models import (
    ModelSettings,
    UserModelError,
    UserModels,
    backend_problem,
    exercise,
    plan_on,
)
from soak.workload.repos import COMMON_MODEL, own_model_name

log = logging.getLogger(__name__)


_DTYPES = {"int32": np.int32, "fp32": np.float32}


_DEFAULT_S = {key.name: key.default for key in TIMEOUT_KEYS}


@dataclass(frozen=True)
class PhaseTimeouts:
    """Seconds each phase may take before the run is declared hung; the defaults are the
    profile's (`soak.profile.TIMEOUT_KEYS`), so a profile that says nothing gets these."""

    server_new: float = _DEFAULT_S["server_new"]
    wait_ready: float = _DEFAULT_S["wait_ready"]
    load: float = _DEFAULT_S["load"]
    infer: float = _DEFAULT_S["infer"]
    statistics: float = _DEFAULT_S["statistics"]
    unload: float = _DEFAULT_S["unload"]
    isolation: float = _DEFAULT_S["isolation"]
    stop: float = _DEFAULT_S["stop"]
    delete: float = _DEFAULT_S["delete"]

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
    datatype: str = "int32"
    timeouts: PhaseTimeouts = field(default_factory=PhaseTimeouts)
    log_file: Path | None = None
    injection: inject.Injection = field(default_factory=inject.Injection)
    seed: int = 0
    user_models: UserModels = field(default_factory=UserModels)  # loaded alongside


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
    inferences: int = 0
    completed: bool = False  # reached delete
    hung_phase: str | None = None
    triton_version: str | None = None


class PhaseHung(Exception):
    """A call into Triton overran its phase timeout and is still running."""

    def __init__(self, instance: int, phase: str, timeout_s: float) -> None:
        super().__init__(f"instance {instance}: phase {phase} still running after {timeout_s:g} s")
        self.instance = instance
        self.phase = phase
        self.timeout_s = timeout_s


PhaseObserver = Callable[[int, str, float], None]

_retained_servers: list[Server] = []  # skip_server_delete: never deleted, never collected

# A response that is never deleted (inject.unreleased_response_fraction) keeps its model alive:
# Triton's InferenceResponse owns a shared_ptr to the model, so that model stays UNLOADING for
# good, with its instance, python backend stub and shm region. Its server can then never finish
# stopping; with this exit timeout the stop gives up at once (instead of after 30 s) and the
# server is deleted, leaving the pinned model behind as the injected leak.
PINNED_EXIT_TIMEOUT_S = 0
_EXIT_TIMEOUT_EXPIRED = "Exit timeout expired"


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
    """Runs the phases in order for one instance; `run()` returns its record."""

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
        self.own_model = own_model_name(config.instance)
        self.pinned: set[str] = set()  # models with a kept response: they cannot unload

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
        return PhaseHung(self.config.instance, phase, timeout)

    # -- the lifecycle ----------------------------------------------------------------------
    def run(self) -> LifecycleRecord:
        cfg = self.config
        server: Server | None = None
        loaded: list[str] = []
        try:
            with self._phase("server_new"):
                options = ServerOptions(
                    repositories=(cfg.common_repo, cfg.own_repo, *cfg.user_models.repositories),
                    backends_dir=cfg.backends_dir,
                    server_id=f"soak-{cfg.instance}",
                    log_file=cfg.log_file,
                )
                if cfg.injection.unreleased_response_fraction > 0:
                    options = replace(options, exit_timeout_s=PINNED_EXIT_TIMEOUT_S)
                server = Server(options)
                inject.leak_native(cfg.injection.native_bytes_per_server)
                inject.leak_gpu(cfg.injection.gpu_bytes_per_server, cfg.gpu_device)
            with self._phase("wait_ready"):
                self._wait_ready(server)
                self.record.triton_version = server.metadata().get("version")
            models = [COMMON_MODEL, self.own_model, *cfg.user_models.names]
            with self._phase("load"):
                loaded = self._load(server, models)
            if len(loaded) == len(models):
                checked = []
                with self._phase("infer"):
                    for model in loaded[:2]:
                        self._infer(server, model)
                    checked = loaded[:2]
                    for settings in cfg.user_models.models:
                        if self._infer_user(server, settings):
                            checked.append(settings.name)
                with self._phase("statistics"):
                    self._check_statistics(server, checked)
            with self._phase("unload"):
                self._unload(server, loaded)
                loaded = []
            if cfg.other_model is not None:
                with self._phase("isolation"):
                    self._check_isolation(server, cfg.other_model)
            with self._phase("stop"):
                self._bounded_call(server.stop, "stop", expected=self._stop_blocked_by_pinned)
            with self._phase("delete"):
                if cfg.injection.skip_server_delete:
                    _retained_servers.append(server)
                else:
                    self._bounded_call(server.delete, "delete")
                server = None
            self.record.completed = True
        except PhaseHung:
            server = None  # a call is still inside Triton: touching the server could crash
            raise
        except _Abort:
            pass
        finally:
            if server is not None:
                self._salvage(server, loaded)
        return self.record

    def _bounded_call(
        self,
        fn: Callable[[], None],
        phase: str,
        expected: Callable[[TritonError], bool] | None = None,
    ) -> None:
        """Run a blocking Triton call under its phase timeout; `expected` errors are no failure."""
        try:
            (error,) = _bounded([fn], self.config.timeouts.of(phase))
        except TimeoutError:
            raise self._hang(phase) from None
        if error is not None:
            if isinstance(error, TritonError) and expected is not None and expected(error):
                log.info(
                    "instance %d %s: %s (expected)", self.config.instance, phase, error.message
                )
                return
            if isinstance(error, TritonError):
                self._fail(phase, error.message)
                raise _Abort from error
            raise error

    def _stop_blocked_by_pinned(self, error: TritonError) -> bool:
        """Stop gave up on models that kept responses hold: the injected leak, not a failure."""
        return bool(self.pinned) and _EXIT_TIMEOUT_EXPIRED in error.message

    def _wait_ready(self, server: Server) -> None:
        deadline = time.monotonic() + self.config.timeouts.wait_ready
        while True:
            try:
                if server.is_live() and server.is_ready():
                    return
            except TritonError as exc:
                self._fail("wait_ready", exc.message)
                raise _Abort from exc
            if time.monotonic() > deadline:
                self._fail("wait_ready", "server not live and ready before the timeout")
                raise _Abort
            time.sleep(0.005)

    def _load(self, server: Server, models: list[str]) -> list[str]:
        """Load in parallel; return the models that loaded and turned ready."""
        try:
            errors = _bounded(
                [lambda m=m: server.load_model(m) for m in models], self.config.timeouts.load
            )
        except TimeoutError as exc:
            stuck = ", ".join(models[i] for i in exc.args[0])
            raise self._hang("load", f"loading {stuck}") from None
        loaded = []
        for model, error in zip(models, errors, strict=False):
            if error is None:
                self.record.model_loads += 1
                if server.model_is_ready(model):
                    loaded.append(model)
                else:
                    self._fail("load", f"{model} loaded but is not ready")
            elif isinstance(error, TritonError):
                missing = backend_problem(
                    self.config.user_models.repositories, model, self.config.backends_dir
                )
                self._fail("load", missing or f"{model}: {error.message}")
            else:
                raise error
        return loaded

    def _infer(self, server: Server, model: str) -> None:
        cfg = self.config
        dtype = _DTYPES[cfg.datatype]
        outputs = ["OUTPUT0", "OUTPUT1"]
        for _ in range(cfg.inferences_per_model):
            a = self.rng.integers(-1000, 1000, size=(1, 16)).astype(dtype)
            b = self.rng.integers(-1000, 1000, size=(1, 16)).astype(dtype)
            keep = self.leaker.keep_next()
            if keep:
                self.pinned.add(model)
            try:
                result = server.infer(
                    model,
                    {"INPUT0": a, "INPUT1": b},
                    outputs,
                    memory_type=cfg.memory_type,
                    device=cfg.gpu_device,
                    timeout_s=cfg.timeouts.infer,
                    keep_response=keep,
                )
            except InferenceTimeout as exc:
                raise self._hang("infer") from exc
            except TritonError as exc:
                self._fail("infer", f"{model}: {exc.message}")
                return
            self.record.inferences += 1
            problems = self._validate(result, a, b)
            if problems:
                self._fail("infer", f"{model}: {'; '.join(problems)}")
                return

    def _infer_user(self, server: Server, settings: ModelSettings) -> bool:
        """Plan a user model from this server's metadata and exercise it; True when clean."""
        cfg = self.config
        try:
            plan = plan_on(server, settings)
            done = exercise(
                server,
                plan,
                cfg.inferences_per_model,
                self.rng,
                cfg.memory_type,
                cfg.timeouts.infer,
                cfg.gpu_device,
            )
        except InferenceTimeout as exc:
            raise self._hang("infer", f"inference on {settings.name}") from exc
        except (TritonError, UserModelError) as exc:
            message = exc.message if isinstance(exc, TritonError) else str(exc)
            self._fail("infer", f"{settings.name}: {message}")
            return False
        self.record.inferences += done.requests
        for problem in done.problems:
            self._fail("infer", problem)
        return not done.problems

    def _validate(self, result: dict, a: np.ndarray, b: np.ndarray) -> list[str]:
        problems = []
        for name, expected in (("OUTPUT0", a + b), ("OUTPUT1", a - b)):
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

    def _check_statistics(self, server: Server, models: list[str]) -> None:
        per_model = self.config.inferences_per_model
        for model in models:
            try:
                stats = server.model_statistics(model)
            except TritonError as exc:
                self._fail("statistics", f"{model}: {exc.message}")
                continue
            entries = stats.get("model_stats", [])
            success = sum(int(e["inference_stats"]["success"]["count"]) for e in entries)
            if success < per_model:
                self._fail(
                    "statistics", f"{model}: {success} successful inferences, expected {per_model}"
                )

    def _unload(self, server: Server, models: list[str]) -> None:
        """Unload in parallel, then watch the model index (stop would poll once a second)."""
        for model in models:
            try:
                server.unload_model(model)
            except TritonError as exc:
                self._fail("unload", f"{model}: {exc.message}")
        deadline = time.monotonic() + self.config.timeouts.unload
        pending = set(models)
        while pending:
            try:
                index = server.model_index()
            except TritonError as exc:
                self._fail("unload", f"model index: {exc.message}")
                raise _Abort from exc
            states = {m["name"]: m.get("state", "") for m in index}
            busy = ("READY", "UNLOADING", "LOADING")
            # A model a kept response holds never gets past UNLOADING (see PINNED_EXIT_TIMEOUT_S).
            pending = {
                m
                for m in pending
                if states.get(m) in busy and not (m in self.pinned and states.get(m) == "UNLOADING")
            }
            if not pending:
                return
            if time.monotonic() > deadline:
                raise self._hang("unload")
            time.sleep(0.005)

    def _check_isolation(self, server: Server, other: str) -> None:
        try:
            server.load_model(other)
        except TritonError:
            return
        self._fail("isolation", f"loading {other}, another instance's model, succeeded")
        self._unload(server, [other])

    def _salvage(self, server: Server, loaded: list[str]) -> None:
        """After an aborted phase: unload what is loaded, delete the server, record failures."""
        try:
            if loaded:
                self._unload(server, loaded)
        except _Abort:
            pass  # already recorded; the server must still go
        except PhaseHung:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded, never silent
            self._fail("unload", f"cleanup after failure: {type(exc).__name__}: {exc}")
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
                self.phase, exc.message if isinstance(exc, TritonError) else str(exc)
            )
            raise _Abort from exc
