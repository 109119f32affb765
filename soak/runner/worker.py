"""The worker process: hosts Triton, runs the iterations, waits at each quiet point.

It speaks only the protocol of `soak.runner.protocol`, writes nothing to the database and
never decides anything; a crash or hang here costs the run its worker, never its data.
Started by the supervisor as `python -m soak.runner.worker READ_FD WRITE_FD`.
"""

from __future__ import annotations

import faulthandler
import gc
import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

from soak.errors import SoakError
from soak.profile import Profile, default_thresholds
from soak.runner.protocol import Channel, Continue, Done, Failed, Hello, Hung, Phase, Quiet, Start

log = logging.getLogger(__name__)

STACKS_FILE = "stacks.txt"


def profile_from_message(data: dict) -> Profile:
    return Profile(
        name=data.get("name", "profile"),
        source=data.get("source", "<supervisor>"),
        text="",
        run=data["run"],
        timeouts=data["timeouts"],
        sampling=data["sampling"],
        inject=data["inject"],
        thresholds=default_thresholds(),
    )


def profile_to_message(profile: Profile) -> dict:
    return {
        "name": profile.name,
        "source": profile.source,
        "run": profile.run,
        "timeouts": profile.timeouts,
        "sampling": profile.sampling,
        "inject": profile.inject,
    }


def serve(channel: Channel) -> int:
    start = channel.receive()
    if not isinstance(start, Start):
        return 3
    workdir = Path(start.workdir)
    # The supervisor asks for stacks with SIGUSR1 when the watchdog fires.
    stacks = open(workdir / STACKS_FILE, "w")  # noqa: SIM115 - lives as long as the process
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    profile = profile_from_message(start.profile)
    send_lock = threading.Lock()
    current = {"iteration": 0}

    def send(message) -> None:
        with send_lock:
            channel.send(message)

    def observer(instance: int, phase: str, timeout_s: float) -> None:
        send(Phase(current["iteration"], instance, phase, timeout_s))

    from soak.runner.engine import Engine
    from soak.sampling.heap import HeapSampler

    try:
        engine = Engine(profile, workdir, observer, stub=Path(start.stub) if start.stub else None)
    except SoakError as exc:
        send(Failed(str(exc), setup=True))
        return 2
    runtime = engine.runtime
    send(
        Hello(
            os.getpid(),
            str(runtime.install.library),
            runtime.install.source,
            ".".join(map(str, runtime.api_version)),
            sys.version.split()[0],
        )
    )
    sampling = profile.sampling
    heap = HeapSampler(sampling["objgraph_every"], sampling["malloc_trim"])
    if sampling["tracemalloc"]:
        heap.start()
    iterations = profile.run["iterations"]
    done = 0
    for index in range(iterations):
        current["iteration"] = index
        record = engine.iterate(index)
        if record.hung is not None:
            h = record.hung
            send(Hung(index, h.instance, h.phase, h.timeout_s))
            threading.Event().wait()  # the supervisor ends this process
        gc.collect()
        sample = heap.sample(index)
        send(
            Quiet(
                iteration=index,
                wall_s=record.wall_s,
                server_lifecycles=record.server_lifecycles,
                model_loads=record.model_loads,
                inferences=record.inferences,
                phase_sum_s=record.phase_sum_s(),
                phase_max_s=record.phase_max_s(),
                failures=[f.__dict__ for f in record.failures],
                triton_version=record.triton_version,
                heap=sample.as_dict(),
            )
        )
        done = index + 1
        reply = channel.receive()
        if not isinstance(reply, Continue) or reply.stop:
            break
    send(Done(done))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    read_fd, write_fd = int(args[0]), int(args[1])
    for fd in (read_fd, write_fd):
        os.set_inheritable(fd, False)  # stubs must not hold our pipes open
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    channel = Channel(read_fd, write_fd)
    try:
        code = serve(channel)
    except Exception as exc:  # noqa: BLE001 - reported to the supervisor, then exit non-zero
        try:
            channel.send(Failed(f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        except OSError:
            pass
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # Triton's threads and stub children may hold the interpreter at exit: leave at once.
    os._exit(code)


if __name__ == "__main__":
    main()
