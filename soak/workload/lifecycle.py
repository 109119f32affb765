"""One server instance's life, phase by phase, timed: Triton's multi-server test, made strict.

A lifecycle never passes silently: every failed check becomes a `Failure` naming the
instance, the phase and Triton's message. A call that overruns its phase timeout inside
Triton cannot be interrupted; the lifecycle then raises `PhaseHung`, and the process that
hosts it must be ended by whoever watches it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from soak.errors import ServerError, ServerTimeout, SoakError
from soak.target.interface import ModelServer, ServerSpec
from soak.triton.facts import EXIT_TIMEOUT_EXPIRED
from soak.workload import inject
from soak.workload.bounded import bounded
from soak.workload.config import LifecycleConfig
from soak.workload.counters import CounterCheck, judged_models
from soak.workload.inference import Inference
from soak.workload.models import backend_problem
from soak.workload.polling import pauses, wait_unloaded
from soak.workload.record import Failure, LifecycleRecord, PhaseHung, PhaseObserver
from soak.workload.repos import COMMON_MODEL, ERROR_TOKEN, Behaviour, own_model_name
from soak.workload.tally import Tally

log = logging.getLogger(__name__)

_retained_servers: list[ModelServer] = []  # skip_server_delete: never deleted, never collected

# A response that is never deleted (inject.unreleased_response_fraction) keeps its model alive:
# Triton's InferenceResponse owns a shared_ptr to the model, so that model stays UNLOADING for
# good, with its instance, python backend stub and shm region. Its server can then never finish
# stopping; with this exit timeout the stop gives up at once (instead of after 30 s) and the
# server is deleted, leaving the pinned model behind as the injected leak.
PINNED_EXIT_TIMEOUT_S = 0


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
        self.own_model = own_model_name(config.instance)
        self.server: ModelServer | None = None
        self.triton_version: str | None = None  # what the server said; its statistics differ
        self.loaded: list[str] = []
        self.tally = Tally()  # what each loaded model answered since its load
        self.counters = CounterCheck()  # the server's /metrics, as last seen
        self.inference = Inference(config, self.leaker, self.tally)

    @property
    def generated(self) -> list[str]:
        """The add/sub models soak writes (the ones a behaviour applies to); none on a server
        whose repository soak cannot write (an attached one)."""
        if not self.config.target.writes_repositories:
            return []
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

    def _hang(self, phase: str, what: str = "", cause: str = "") -> PhaseHung:
        """`cause`: what the timed-out call said (perf_analyzer's output, for one)."""
        timeout = self.config.timeouts.of(phase)
        self.record.hung_phase = phase
        said = f": {cause}" if cause else ""
        self._fail(phase, f"timed out: {what or phase} still running after {timeout:g} s{said}")
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
            self.triton_version = self.server.metadata().get("version")
            self.record.triton_version = self.triton_version

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
                # Every burst gets what is left of the phase: the supervisor's watchdog holds
                # the whole phase to its timeout, and a burst that finds the time up itself
                # keeps its cause (which request, perf_analyzer's output).
                end = time.monotonic() + self.config.timeouts.infer
                for model in self.loaded:
                    left = end - time.monotonic()
                    if left <= 0:
                        raise self._hang("infer", f"inference on {model}", "no time left")
                    try:
                        self.inference.infer(server, model, self.record, self._fail, left)
                    except ServerTimeout as exc:
                        raise self._hang("infer", f"inference on {model}", exc.message) from exc
            with self._phase("statistics"):
                self.tally.check(
                    server,
                    self.loaded,
                    self.config.behaviour,
                    self.record,
                    self._fail,
                    self.triton_version,
                )
                judged = judged_models(
                    self.record, self.generated, self.loaded, self.config.behaviour,
                    composed=bool(self.config.composed), triton_version=self.triton_version,
                )  # fmt: skip
                self.record.counted = self.counters.check(
                    server, self.loaded, judged, lambda line: self._fail("statistics", line)
                )
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
            (error,) = bounded([fn], self.config.timeouts.of(phase))
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
        return bool(self.inference.pinned) and EXIT_TIMEOUT_EXPIRED in error.message

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
            errors = bounded(
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
                self.tally.loaded(model)
                self.inference.loaded(model)
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
                    missing = self.config.target.writes_repositories and backend_problem(
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

    def _unload(self, server: ModelServer, models: list[str]) -> None:
        """Unload in parallel, then watch the model index (stop would poll once a second)."""
        for model in models:
            try:
                server.unload_model(model)
            except ServerError as exc:
                self._fail("unload", f"{model}: {exc.message}")
        try:
            # A model a kept response holds never gets past UNLOADING (see PINNED_EXIT_TIMEOUT_S).
            stuck = wait_unloaded(
                server, models, self.config.timeouts.unload, held=self.inference.pinned
            )
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
