"""The worker process: drives the servers (hosting them, in-process), runs the iterations,
waits at each quiet point.

It speaks only the protocol of `soak.runner.protocol`, writes nothing to the database and
never decides anything; a crash or hang here costs the run its worker, never its data.
Started by the supervisor as `python -m soak.runner.worker READ_FD WRITE_FD`.
"""

from __future__ import annotations

import faulthandler
import gc
import logging
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from soak.errors import SoakError
from soak.runner.protocol import (
    STACKS_FILE,
    Channel,
    Continue,
    Done,
    Failed,
    Hello,
    Hung,
    Phase,
    ProfileMessage,
    Quiet,
    Start,
)

if TYPE_CHECKING:  # imported when first used: an import error then reaches the supervisor
    from soak.target.interface import ServerFeatures, ServerTarget, TargetInfo
    from soak.workload.iteration import IterationRecord, Workload, WorkloadConfig
    from soak.workload.models import UserModels
    from soak.workload.record import PhaseObserver

log = logging.getLogger(__name__)

FAULT_ENV = "SOAK_FAULT"
_targets: list[ServerTarget] = []  # stopped before the worker exits, whatever happened


def parse_fault(text: str) -> dict | None:
    """`SOAK_FAULT=phase:action[:iteration]`, for the fault suite: action is a signal name
    (SIGKILL, SIGSEGV, SIGABRT) sent to the worker itself, `hang` (the phase never ends),
    `rmrepo` (the model repositories disappear, the phase goes on) or a model behaviour of
    `soak.workload.repos.Behaviour` (`sometimes_wrong`, `init_hangs`, ...: the common model is
    rewritten so, and stays so, from the next load on; meant for one server)."""
    if not text:
        return None
    parts = text.split(":")
    return {
        "phase": parts[0],
        "action": parts[1],
        "iteration": int(parts[2]) if len(parts) > 2 else 1,
    }


def trigger_fault(
    fault: dict, workdir: Path | None = None, profile: ProfileMessage | None = None
) -> None:
    from soak.workload.repos import COMMON_MODEL, Behaviour, write_model

    log.warning("injecting fault %s", fault)
    action = fault["action"]
    if action == "hang":
        threading.Event().wait()
    models = Path(workdir or ".") / "models"  # where soak.workload.iteration writes them
    if action == "rmrepo":
        shutil.rmtree(models, ignore_errors=True)
        return
    if action in {b.value for b in Behaviour}:
        run = profile.run if profile is not None else {}
        datatype, kind = run.get("datatype", "int32"), run.get("instance_kind", "cpu")
        write_model(models / "common", COMMON_MODEL, datatype, kind, Behaviour(action))
        return
    # To this thread, as a real fault arrives: sent to the process, the signal lands on the
    # main thread (waiting in join) while this thread runs on, and faulthandler's dump of
    # every thread then reads this thread's changing frames, at times crashing (SIGSEGV).
    signal.pthread_kill(threading.get_ident(), getattr(signal, action))


def workload_config(profile: ProfileMessage) -> WorkloadConfig:
    from soak.runner.run_keys import run_key_fields
    from soak.target import make_target
    from soak.workload.config import PhaseTimeouts
    from soak.workload.inject import Injection
    from soak.workload.iteration import WorkloadConfig

    target = make_target(profile)
    floors = target.phase_floors()
    timeouts = {k: max(v, floors.get(k, 0.0)) for k, v in profile.timeouts.items()}
    return WorkloadConfig(
        **run_key_fields(profile.run),
        timeouts=PhaseTimeouts(**timeouts),
        injection=Injection(**profile.inject),
        user_models=user_models(profile),
        target=target,
        features=server_features(profile),
    )


def server_features(profile: ProfileMessage) -> ServerFeatures:
    """The profile's server-wide Triton features (auto-complete, response cache)."""
    from soak.target.interface import ServerFeatures

    cache = profile.run.get("response_cache", "none")
    return ServerFeatures(
        strict_model_config=profile.run.get("strict_model_config", True),
        response_cache="" if cache == "none" else cache,
        response_cache_bytes=profile.run.get("response_cache_bytes", 1 << 20),
    )


def user_models(profile: ProfileMessage) -> UserModels:
    """The profile's [models] and [model.<name>] tables as the workload's plain data."""
    from soak.workload.models import ModelSettings, UserModels

    models = profile.models or {"repositories": [], "load": []}
    settings = []
    for name in models["load"]:
        given = profile.model[name]
        settings.append(
            ModelSettings(
                name,
                batch_size=given["batch_size"],
                shape={k: tuple(v) for k, v in given["shape"].items()},
                input_data=Path(given["input_data"]) if given["input_data"] else None,
                rtol=given["rtol"],
                atol=given["atol"],
                sequence_length=given.get("sequence_length", 4),
                sequence_abandon_fraction=given.get("sequence_abandon_fraction", 0.0),
            )
        )
    return UserModels(tuple(Path(r) for r in models["repositories"]), tuple(settings))


def prepare(
    profile: ProfileMessage, workdir: Path, observer: PhaseObserver, stub: Path | None
) -> tuple[TargetInfo, Workload]:
    """Set up once (the target's environment, repositories); then one call per iteration.

    Raises SoakError when the machine cannot run the profile (nothing has run yet).
    """
    from soak.target.interface import MemoryType
    from soak.workload.models import preflight
    from soak.workload.scenarios import make_workload

    config = workload_config(profile)
    memory = [config.memory_type]
    if config.instance_kind == "gpu" or config.injection.gpu_bytes_per_server:
        memory.append(MemoryType.GPU)
    info = config.target.prepare(workdir, memory, config.gpu_device, stub)
    triton_log = workdir / "triton.log"
    if config.user_models.models:  # one clear line now rather than N failures later
        preflight(
            config.user_models,
            info.backends_dir,
            triton_log,
            target=config.target,
            features=config.features,
            timeouts=config.timeouts,
            observer=observer,
        )
    workload = make_workload(config, workdir, info.backends_dir, triton_log, observer)
    return info, workload


def client_apart(target: ServerTarget | None) -> bool:
    """Whether the servers are processes of their own, the worker only their client (sampled
    apart from them)."""
    return target is not None and target.client_pid() not in target.server_pids()


def hello_message(info: TargetInfo, target: ServerTarget) -> Hello:
    """Which Triton the worker prepared, who the client is, and which processes are servers."""
    return Hello(
        target.client_pid(),
        info.triton_library,
        info.triton_source,
        info.api_version,
        sys.version.split()[0],
        server_pids=target.server_pids(),
        client_apart=client_apart(target),
        notes=list(info.notes),
    )


def quiet_message(
    record: IterationRecord, heap: dict[str, Any], target: ServerTarget | None = None
) -> Quiet:
    """What the supervisor stores of an iteration, reported at its quiet point."""
    apart = client_apart(target)
    counted = record.counted
    return Quiet(
        iteration=record.index,
        wall_s=record.wall_s,
        server_lifecycles=record.server_lifecycles,
        model_loads=record.model_loads,
        inferences=record.inferences,
        failed_loads=record.failed_loads,
        errors=record.errors,
        responses=record.responses,
        cache_hits=record.cache_hits,
        cache_insertions=record.cache_insertions,
        phase_sum_s=record.phase_sum_s(),
        phase_max_s=record.phase_max_s(),
        failures=[f.__dict__ for f in record.failures],
        triton_version=record.triton_version,
        heap=heap,
        server_pids=target.server_pids() if apart else [],
        server_leftovers=[list(x) for x in target.take_leftovers()] if target is not None else [],
        metrics_successes=counted.successes if counted else None,
        metrics_failures=counted.failures if counted else None,
        metrics_failure_reasons=dict(counted.reasons) if counted else None,
        metrics_pending=counted.pending if counted else None,
    )


def serve(channel: Channel) -> int:
    start = channel.receive()
    if not isinstance(start, Start):
        return 3
    workdir = Path(start.workdir)
    # The supervisor asks for stacks with SIGUSR1 when the watchdog fires.
    stacks = open(workdir / STACKS_FILE, "w")  # noqa: SIM115 - lives as long as the process
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    # A fatal signal (SIGSEGV, SIGABRT from glibc's heap checks) prints every Python thread's
    # stack into worker.log, whose tail the supervisor stores with the crash.
    faulthandler.enable(file=sys.stderr, all_threads=True)
    profile = start.profile
    send_lock = threading.Lock()
    current = {"iteration": 0}

    def send(message) -> None:
        with send_lock:
            channel.send(message)

    fault = parse_fault(os.environ.get(FAULT_ENV, ""))

    def observer(instance: int, phase: str, timeout_s: float, detail: str = "") -> None:
        send(Phase(current["iteration"], instance, phase, timeout_s, detail))
        if fault and fault["phase"] == phase and fault["iteration"] == current["iteration"]:
            trigger_fault(fault, workdir, profile)

    from soak.sampling.heap import HeapSampler

    try:
        info, workload = prepare(
            profile, workdir, observer, Path(start.stub) if start.stub else None
        )
    except SoakError as exc:
        send(Failed(str(exc), setup=True))
        return 2
    target = workload.config.target
    _targets.append(target)

    def crashed(line: str) -> None:
        send(Failed(line))
        target.stop_all()
        os._exit(1)

    target.watch_crashes(crashed)
    send(hello_message(info, target))
    sampling = profile.sampling
    heap = HeapSampler(sampling["objgraph_every"], sampling["malloc_trim"])
    if sampling["tracemalloc"]:
        heap.start()
    iterations = profile.run["iterations"]
    done = 0
    # Attribution: memray traces from the end of the warm-up to the end (sampling.memray_sites);
    # a tritonserver target traces each server process itself (sampling.heaptrack).
    tracker = None
    memray = profile.attribution.get("enabled") and target.attribution == "memray"
    attribute_from = profile.run["warmup"] if memray else None
    for index in range(iterations):
        current["iteration"] = index
        if index == attribute_from:
            from soak.sampling import memray_sites as sites

            tracker = sites.start_tracker(workdir / sites.CAPTURE_FILE)
        record = workload.run_iteration(index)
        if record.hung is not None:
            h = record.hung
            failures = [f.__dict__ for f in record.failures]
            send(Hung(index, h.instance, h.phase, h.timeout_s, getattr(h, "what", ""), failures))
            threading.Event().wait()  # the supervisor ends this process
        gc.collect()
        send(quiet_message(record, heap.sample(index).as_dict(), target))
        done = index + 1
        reply = channel.receive()
        if not isinstance(reply, Continue) or reply.stop:
            break
    closing = workload.close()  # also after a stop: long-lived servers go exactly once
    if tracker is not None:
        sites.stop_tracker(tracker)
    send(Done(done, [f.__dict__ for f in closing]))
    return 0


def watch_parent(every_s: float = 1.0) -> None:
    """End at once when the supervisor is gone: a worker stuck in a hung phase would never
    notice otherwise, and nobody would be left to watch it. Its stubs then see their parent
    die and end too."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(every_s)
            if os.getppid() != parent:
                for target in _targets:
                    target.stop_all()
                os._exit(3)

    threading.Thread(target=watch, name="soak-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    read_fd, write_fd = int(args[0]), int(args[1])
    for fd in (read_fd, write_fd):
        os.set_inheritable(fd, False)  # stubs must not hold our pipes open
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    channel = Channel(read_fd, write_fd)
    watch_parent()
    try:
        code = serve(channel)
    except Exception as exc:  # noqa: BLE001 - reported to the supervisor, then exit non-zero
        try:
            channel.send(Failed(f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        except OSError:
            pass
        code = 1
    for target in _targets:
        target.stop_all()
    sys.stdout.flush()
    sys.stderr.flush()
    # Triton's threads and stub children may hold the interpreter at exit: leave at once.
    os._exit(code)


if __name__ == "__main__":
    main()
