"""The seam between the workload and its servers: the profile's target, and a whole lifecycle
driven through the interface by a server that is not Triton (no C API is loaded here)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from soak.errors import EnvironmentProblem, ServerError
from soak.phases import PHASES
from soak.profile import load as load_profile
from soak.runner import protocol as proto
from soak.runner.worker import hello_message, workload_config
from soak.target import make_target
from soak.target.attached import AttachedServerTarget
from soak.target.inprocess import InProcessTarget
from soak.target.interface import (
    MemoryType,
    ModelServer,
    Output,
    ServerSpec,
    ServerTarget,
    TargetInfo,
    infer_one_by_one,
)
from soak.target.remote import TritonServerTarget
from soak.triton.facts import EXIT_TIMEOUT_EXPIRED
from soak.workload.config import LifecycleConfig
from soak.workload.inject import Injection
from soak.workload.iteration import WorkloadConfig
from soak.workload.lifecycle import Lifecycle
from soak.workload.repos import COMMON_MODEL, own_model_name
from soak.workload.scenarios import Servers


class FakeServer:
    """Adds and subtracts like soak's generated models; knows `models`, nothing else."""

    receives_decoupled = True

    def __init__(self, spec: ServerSpec, models: set[str], fail_load: dict[str, str]) -> None:
        self.spec = spec
        self.models = models
        self.fail_load = fail_load
        self.state = {m: "UNAVAILABLE" for m in models}
        self.counts: dict[str, int] = {}
        self.kept: set[str] = set()  # models with a response never freed: never unload
        self.calls: list[str] = []

    def is_live(self) -> bool:
        return True

    def is_ready(self) -> bool:
        return True

    def metadata(self) -> dict:
        return {"version": "fake-1"}

    def load_model(self, name: str) -> None:
        if name not in self.models:
            raise ServerError("NOT_FOUND", f"no model {name!r}")
        if name in self.fail_load:
            raise ServerError("INTERNAL", self.fail_load[name])
        self.state[name], self.counts[name] = "READY", 0

    def unload_model(self, name: str) -> None:
        self.state[name] = "UNLOADING" if name in self.kept else "UNAVAILABLE"

    def model_is_ready(self, name: str, version: int = -1) -> bool:
        return self.state.get(name) == "READY"

    def model_index(self, ready_only: bool = False) -> list[dict]:
        return [{"name": m, "state": s} for m, s in self.state.items()]

    def model_metadata(self, name: str, version: int = -1) -> dict:
        return {}

    def model_config(self, name: str, version: int = -1) -> dict:
        return {}

    def model_statistics(self, name: str = "", version: int = -1) -> dict:
        done = {"success": {"count": self.counts[name]}, "fail": {"count": 0}}
        return {"model_stats": [{"inference_stats": done}]}

    def infer(self, model, inputs, outputs, memory_type=MemoryType.SYSTEM, timeout_s=30.0,
              keep_response=False, device=0, datatypes=None) -> dict[str, Output]:  # fmt: skip
        self.counts[model] += 1
        if keep_response:
            self.kept.add(model)
        a, b = inputs["INPUT0"], inputs["INPUT1"]
        return {"OUTPUT0": Output(a + b, memory_type), "OUTPUT1": Output(a - b, memory_type)}

    def infer_responses(self, *args, **kwargs) -> list[dict[str, Output]]:
        return [self.infer(*args, **kwargs)]

    def infer_many(
        self, model, inputs, outputs, on_result, concurrency=1, expected=None, **kw
    ) -> int:
        return infer_one_by_one(self, model, inputs, outputs, on_result, **kw)

    def request_counters(self) -> None:
        return None  # no /metrics: not judged

    def stop(self) -> None:
        self.calls.append("stop")
        if self.kept:
            raise ServerError("INTERNAL", f"{EXIT_TIMEOUT_EXPIRED}. Exiting immediately.")

    def delete(self) -> None:
        self.calls.append("delete")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self.delete()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class FakeTarget:
    name = "fake"
    writes_repositories = True
    attribution = "memray"
    fail_load: dict[str, str] = field(default_factory=dict)
    servers: list[FakeServer] = field(default_factory=list)
    leaks: list[tuple[Injection, int]] = field(default_factory=list)

    def prepare(self, workdir, memory=(), device=0, stub=None) -> TargetInfo:
        return TargetInfo(Path(workdir) / "backends", "fake.so", "fake", "1.0")

    def new_server(self, spec: ServerSpec) -> FakeServer:
        instance = int(spec.server_id.rsplit("-", 1)[1])  # soak-<instance>: its own model only
        known = {COMMON_MODEL, own_model_name(instance)}
        self.servers.append(FakeServer(spec, known, self.fail_load))
        return self.servers[-1]

    def inject_server_leaks(self, injection: Injection, device: int = 0) -> None:
        self.leaks.append((injection, device))

    def server_pids(self) -> list[int]:
        return [4242, 4343]

    def client_pid(self) -> int:
        return 77

    def take_leftovers(self) -> list[tuple[str, str]]:
        return []

    def phase_floors(self) -> dict[str, float]:
        return {}

    def watch_crashes(self, report) -> None:
        return None

    def stop_all(self) -> None:
        return None


def fake_config(tmp_path: Path, target: FakeTarget, **kw) -> LifecycleConfig:
    return LifecycleConfig(
        0, tmp_path / "common", tmp_path / "own", tmp_path / "backends",
        own_model_name(3), inferences_per_model=3, target=target, **kw,
    )  # fmt: skip


def test_the_fakes_satisfy_the_interface():
    assert isinstance(FakeTarget(), ServerTarget)
    spec = ServerSpec((), Path("/b"), server_id="soak-0")
    assert isinstance(FakeTarget().new_server(spec), ModelServer)
    assert isinstance(InProcessTarget(), ServerTarget)
    assert isinstance(TritonServerTarget(), ServerTarget)


def test_a_whole_lifecycle_runs_through_the_target(tmp_path):
    target = FakeTarget()
    seen: list[str] = []
    config = fake_config(tmp_path, target, log_file=tmp_path / "t.log")
    record = Lifecycle(config, observer=lambda _i, phase, _t: seen.append(phase)).run()
    assert record.failures == []
    assert seen == list(PHASES)
    assert (record.completed, record.model_loads, record.inferences) == (True, 2, 6)
    assert record.triton_version == "fake-1"
    (server,) = target.servers
    assert server.spec == ServerSpec(
        (tmp_path / "common", tmp_path / "own"), tmp_path / "backends", "soak-0", tmp_path / "t.log"
    )
    assert server.calls == ["stop", "delete"]
    assert target.leaks == [(Injection(), 0)]
    assert set(server.state.values()) == {"UNAVAILABLE"}


def test_a_server_error_of_any_server_is_a_recorded_failure(tmp_path):
    target = FakeTarget(fail_load={own_model_name(0): "disk on fire"})
    record = Lifecycle(fake_config(tmp_path, target)).run()
    assert [(f.phase, f.message) for f in record.failures] == [
        ("load", f"{own_model_name(0)}: disk on fire")
    ]
    assert record.completed and record.inferences == 0  # cleaned up: unloaded, stopped, deleted
    assert target.servers[0].calls == ["stop", "delete"]


def test_a_timed_out_burst_is_a_hang_that_keeps_what_the_call_said(tmp_path, monkeypatch):
    """perf_analyzer's output of a burst killed for time reaches the run's failure."""
    from soak.errors import ServerTimeout
    from soak.workload.record import PhaseHung

    said = "perf_analyzer burst of 3 on 'm' ran past 1 s; what it printed: Sending 3"

    def hung_burst(self, *args, **kwargs) -> int:
        raise ServerTimeout("soak", said)

    monkeypatch.setattr(FakeServer, "infer_many", hung_burst)
    lifecycle = Lifecycle(fake_config(tmp_path, FakeTarget()))
    with pytest.raises(PhaseHung):
        lifecycle.run()
    (failure,) = lifecycle.record.failures
    assert failure.phase == "infer" and "still running after" in failure.message
    assert failure.message.endswith(said)


@pytest.mark.parametrize("burst_s", [0.3, 0.6])
def test_each_burst_gets_what_is_left_of_the_infer_phase(tmp_path, monkeypatch, burst_s):
    """The supervisor's watchdog holds the whole infer phase to its timeout, so the second
    model's burst gets what the first left, not a whole timeout of its own; with nothing left
    the phase is hung on that model by the worker itself, cause and all (before, every burst
    had the full timeout, and the watchdog fired first, the cause lost)."""
    from soak.workload.config import PhaseTimeouts
    from soak.workload.record import PhaseHung

    budgets: list[float] = []
    models: list[str] = []

    def slow_burst(self, model, inputs, outputs, on_result, concurrency=1, **kw) -> int:
        budgets.append(kw["timeout_s"])
        models.append(model)
        time.sleep(burst_s)
        return infer_one_by_one(self, model, inputs, outputs, on_result)

    monkeypatch.setattr(FakeServer, "infer_many", slow_burst)
    config = fake_config(tmp_path, FakeTarget(), timeouts=PhaseTimeouts(infer=0.5))
    lifecycle = Lifecycle(config)
    if burst_s < 0.5:
        record = lifecycle.run()
        assert record.failures == [] and len(budgets) == 2
        assert budgets[0] <= 0.5 and budgets[1] <= 0.5 - burst_s
        return
    with pytest.raises(PhaseHung):
        lifecycle.run()
    assert len(budgets) == 1
    (failure,) = lifecycle.record.failures
    assert failure.phase == "infer" and failure.message.endswith("no time left")
    assert f"inference on {lifecycle.loaded[1]} " in failure.message, failure.message


def test_kept_responses_pin_their_model_through_the_target(tmp_path):
    """The injected leak: a 0 s exit timeout asked of the server, a model that stays UNLOADING
    and a stop that gives up on it, none of which is a failure."""
    target = FakeTarget()
    injection = Injection(unreleased_response_fraction=0.5)
    record = Lifecycle(fake_config(tmp_path, target, injection=injection)).run()
    assert record.failures == [] and record.completed
    (server,) = target.servers
    assert server.spec.exit_timeout_s == 0
    assert server.kept and all(server.state[m] == "UNLOADING" for m in server.kept)
    assert server.calls == ["stop", "delete"]


def test_the_workload_hands_its_target_to_every_lifecycle(tmp_path):
    target = FakeTarget()
    workload = Servers(WorkloadConfig(servers=2, target=target), tmp_path, tmp_path / "b")
    record = workload.run_iteration(0)
    assert record.failures == [] and record.server_lifecycles == 2
    assert sorted(s.spec.server_id for s in target.servers) == ["soak-0", "soak-1"]


def test_the_profile_chooses_the_in_process_target():
    profile = proto.ProfileMessage.of(load_profile("smoke"))
    run = {**profile.run, "serialize_server_new_delete": False, "triton_home": ""}
    target = make_target(type(profile)(**{**profile.__dict__, "run": run}))
    assert target == InProcessTarget(triton_home=None, serialize_new_delete=False)
    assert target.server_pids() == [os.getpid()] and target.client_pid() == os.getpid()
    assert workload_config(profile).target == InProcessTarget(serialize_new_delete=True)


def test_hello_names_the_client_and_the_servers_the_target_reports():
    info = TargetInfo(Path("/b"), "/lib/libtritonserver.so", "wheel", "1.34")
    hello = hello_message(info, FakeTarget())
    assert (hello.pid, hello.server_pids) == (77, [4242, 4343])
    assert (hello.triton_library, hello.triton_source, hello.api_version) == (
        "/lib/libtritonserver.so", "wheel", "1.34",
    )  # fmt: skip
    assert proto.decode(hello.encode()) == hello


def test_the_workload_loads_no_c_api_until_a_server_is_made():
    import subprocess
    import sys

    code = (
        "import sys, soak.workload.scenarios, soak.runner.worker; "
        "print('soak.triton.capi' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_a_tritonserver_target_under_heaptrack_gives_its_servers_time_to_start():
    from soak.tritonserver.process import TRACED_READY_S

    assert TritonServerTarget().phase_floors() == {}
    assert InProcessTarget().phase_floors() == {}
    assert TritonServerTarget(heaptrack=True).phase_floors()["server_new"] > TRACED_READY_S
    assert (InProcessTarget.attribution, TritonServerTarget.attribution) == ("memray", "heaptrack")


def test_both_tritonserver_targets_refuse_device_memory_before_touching_anything(tmp_path):
    for target in (
        TritonServerTarget(),
        AttachedServerTarget(url="127.0.0.1:1", pid=os.getpid()),
    ):
        with pytest.raises(EnvironmentProblem, match="memory gpu, pinned is in-process only"):
            target.prepare(tmp_path, memory=(MemoryType.SYSTEM, MemoryType.GPU, MemoryType.PINNED))
    assert list(tmp_path.iterdir()) == []


def test_stubs_that_outlive_an_attached_server_are_named_and_left_running():
    """A python backend stub should end within 0.3 s of its server; one still running after
    the grace is named in the crash line (Triton 2.51 can deadlock one: README), and is not
    soak's to end."""
    import subprocess

    import psutil

    from soak.target.attached import outliving

    lingering = subprocess.Popen(["sleep", "60"])
    try:
        stubs = [psutil.Process(lingering.pid)]
        line = outliving(stubs, wait_s=0.2)
        assert f"pid {lingering.pid}" in line and "1 of its stub process(es)" in line, line
        assert lingering.poll() is None  # left running
        lingering.kill()
        lingering.wait()
        assert outliving(stubs, wait_s=0.2) == ""
    finally:
        if lingering.poll() is None:
            lingering.kill()
            lingering.wait()
