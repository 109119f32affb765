"""Real Triton servers through the multi-server lifecycle (CPU)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from soak.triton import MemoryType
from soak.workload.config import LifecycleConfig
from soak.workload.iteration import WorkloadConfig
from soak.workload.lifecycle import Lifecycle
from soak.workload.repos import Behaviour, own_model_name, write_model, write_repositories
from soak.workload.scenarios import Servers
from tests.conftest import kill_and_unlink, shm_regions, stub_processes

_instances = itertools.count(10)


def make_config(runtime, tmp_path: Path, behaviour=Behaviour.CORRECT, **kw) -> LifecycleConfig:
    """A lifecycle whose own model has a name no other test uses, so tests stay independent."""
    instance = next(_instances)
    common, _ = write_repositories(tmp_path / "models", 0)
    own = tmp_path / "models" / "own"
    write_model(own, own_model_name(instance), behaviour=behaviour)
    return LifecycleConfig(
        instance=instance,
        common_repo=common,
        own_repo=own,
        backends_dir=runtime.backends_dir,
        other_model="simple3",
        inferences_per_model=kw.pop("inferences_per_model", 5),
        **kw,
    )


def test_phase_timeout_defaults_are_the_profiles():
    from soak.profile import TIMEOUT_KEYS
    from soak.workload.config import PhaseTimeouts

    defaults = PhaseTimeouts()
    assert {k.name: defaults.of(k.name) for k in TIMEOUT_KEYS} == {
        k.name: k.default for k in TIMEOUT_KEYS
    }
    assert defaults.statistics == 30.0


def test_two_concurrent_servers_complete_full_lifecycles(runtime, tmp_path):
    workload = Servers(
        WorkloadConfig(servers=2, inferences_per_model=5), tmp_path, runtime.backends_dir
    )
    record = workload.run_iteration(0)
    assert record.failures == []
    assert record.hung is None
    assert record.server_lifecycles == 2
    assert record.model_loads == 4
    assert record.inferences == 2 * 2 * 5
    assert record.triton_version == "2.51.0"
    for life in record.lifecycles:
        assert set(life.phase_s) >= {"server_new", "load", "infer", "unload", "isolation", "delete"}
        assert all(v >= 0 for v in life.phase_s.values())


def test_requests_in_flight_are_each_validated(runtime, tmp_path):
    """concurrency 4: every response of every model checked, counted once, none left over."""
    from soak.triton.request import in_flight

    config = make_config(runtime, tmp_path, concurrency=4, inferences_per_model=40)
    record = Lifecycle(config).run()
    assert record.failures == []
    assert record.inferences == 2 * 40
    assert record.completed
    assert in_flight() == 0


def test_isolation_failure_is_detected(runtime, tmp_path):
    config = make_config(runtime, tmp_path)
    # simple1 lives in this server's own (common) repository, so loading it again succeeds:
    # exactly what a broken isolation looks like.
    config = LifecycleConfig(**{**config.__dict__, "other_model": "simple1"})
    record = Lifecycle(config).run()
    assert [f.phase for f in record.failures] == ["isolation"]
    assert "simple1" in record.failures[0].message
    assert record.completed


@pytest.mark.parametrize("concurrency", [1, 4])
def test_wrong_numbers_are_caught(runtime, tmp_path, concurrency):
    config = make_config(runtime, tmp_path, Behaviour.WRONG_RESULT, concurrency=concurrency)
    record = Lifecycle(config).run()
    infer = [f for f in record.failures if f.phase == "infer"]
    assert len(infer) == 1
    assert own_model_name(record.instance) in infer[0].message
    assert "OUTPUT0 wrong" in infer[0].message
    assert "OUTPUT1" not in infer[0].message
    assert record.completed


INIT_RAISES_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from soak.triton import setup
    from soak.workload.config import LifecycleConfig
    from soak.workload.lifecycle import Lifecycle
    from soak.workload.repos import Behaviour, write_model, write_repositories
    work = Path(sys.argv[1])
    rt = setup(work)
    common, unique = write_repositories(work / "models", 1)
    write_model(unique[0], "simple2", behaviour=Behaviour.INIT_RAISES)
    record = Lifecycle(LifecycleConfig(0, common, unique[0], rt.backends_dir, "simple3")).run()
    print(json.dumps({"failures": [[f.phase, f.message] for f in record.failures],
                      "completed": record.completed, "inferences": record.inferences}))
    """
)


def test_model_whose_initialize_raises_gives_clean_error(tmp_path):
    # In a fresh process, repeatedly: libtritonserver 2.51 retried such a load every 0.35 s
    # forever in about half of the processes until soak set the load retry count explicitly.
    for attempt in range(3):
        work = tmp_path / str(attempt)
        work.mkdir()
        out = work / "out.json"
        with out.open("w") as sink:
            subprocess.run(
                [sys.executable, "-c", INIT_RAISES_SCRIPT, str(work)],
                stdout=sink,
                stderr=subprocess.DEVNULL,
                timeout=120,
                check=True,
            )
        check_init_raises(json.loads(out.read_text().strip().splitlines()[-1]))


def check_init_raises(result: dict) -> None:
    load = [m for phase, m in result["failures"] if phase == "load"]
    assert len(load) == 1 and len(result["failures"]) == 1
    assert "simple2" in load[0] and "initialize raised on purpose" in load[0]
    assert result["completed"]  # simple1 still ran, both unloaded, the server was deleted
    assert result["inferences"] == 0


def test_thousand_inferences_without_request_state_errors(runtime, tmp_path):
    import numpy as np

    from soak.triton import Server, ServerOptions

    common, _ = write_repositories(tmp_path / "models", 1)
    with Server(ServerOptions((common,), runtime.backends_dir)) as server:
        server.load_model("simple1")
        rng = np.random.default_rng(1)
        for _ in range(1000):
            a = rng.integers(-100, 100, (1, 16)).astype(np.int32)
            b = rng.integers(-100, 100, (1, 16)).astype(np.int32)
            out = server.infer("simple1", {"INPUT0": a, "INPUT1": b}, ["OUTPUT0", "OUTPUT1"])
            assert np.array_equal(out["OUTPUT0"].array, a + b)
            assert np.array_equal(out["OUTPUT1"].array, a - b)
        stats = server.model_statistics("simple1")["model_stats"][0]["inference_stats"]
        assert stats["success"]["count"] == 1000
        assert stats["fail"]["count"] == 0
        server.unload_model("simple1")
        while any(m["state"] != "UNAVAILABLE" for m in server.model_index()):
            pass


def test_fp32_models_compute_exactly(runtime, tmp_path):
    config = make_config(runtime, tmp_path, datatype="fp32")
    common, _ = write_repositories(tmp_path / "fp", 0, datatype="fp32")
    write_model(config.own_repo, own_model_name(config.instance), datatype="fp32")
    config = LifecycleConfig(**{**config.__dict__, "common_repo": common})
    record = Lifecycle(config).run()
    assert record.failures == []
    assert record.inferences == 10


HANG_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from soak.triton import setup
    from soak.workload.config import LifecycleConfig, PhaseTimeouts
    from soak.workload.lifecycle import Lifecycle
    from soak.workload.record import PhaseHung
    from soak.workload.repos import Behaviour, own_model_name, write_model, write_repositories
    work = Path(sys.argv[1])
    rt = setup(work)
    common, unique = write_repositories(work / "models", 1)
    write_model(unique[0], "simple2", behaviour=Behaviour.INIT_HANGS)
    cfg = LifecycleConfig(0, common, unique[0], rt.backends_dir,
                          timeouts=PhaseTimeouts(load=3.0))
    life = Lifecycle(cfg)
    try:
        life.run()
        result = {"hung": None}
    except PhaseHung as exc:
        result = {"hung": exc.phase, "timeout": exc.timeout_s,
                  "failures": [f.message for f in life.record.failures]}
    print(json.dumps(result), flush=True)
    os._exit(0)  # a thread is still inside Triton: end the process, as the watchdog would
    """
)


def test_load_that_would_hang_is_bounded_by_timeout(tmp_path):
    regions_before = shm_regions()
    stubs_before = stub_processes()
    try:
        out = tmp_path / "out.json"
        with out.open("w") as sink:
            # Not a pipe: the hung stub inherits it and would keep it open.
            subprocess.run(
                [sys.executable, "-c", HANG_SCRIPT, str(tmp_path)],
                stdout=sink,
                stderr=subprocess.DEVNULL,
                timeout=60,
                check=True,
            )
        result = json.loads(out.read_text().strip().splitlines()[-1])
        assert result["hung"] == "load"
        assert result["timeout"] == 3.0
        assert any("still running after 3 s" in m for m in result["failures"])
    finally:
        kill_and_unlink(stub_processes() - stubs_before, shm_regions() - regions_before)


def test_pinned_and_gpu_memory_are_refused_without_cuda(runtime):
    from soak.errors import EnvironmentProblem
    from soak.triton import require_memory
    from tests.conftest import cuda_problem

    if cuda_problem() is None:
        pytest.skip("this machine has a GPU; the refusal is for machines without one")
    for kind in (MemoryType.PINNED, MemoryType.GPU):
        with pytest.raises(
            EnvironmentProblem, match=f"memory_type '{kind.value}' needs a CUDA GPU"
        ):
            require_memory(kind, runtime)
    require_memory(MemoryType.SYSTEM, runtime)


@pytest.mark.gpu
@pytest.mark.parametrize("memory_type", [MemoryType.PINNED, MemoryType.GPU, MemoryType.SYSTEM])
@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_gpu_lifecycle_with_memory_types(runtime, gpu, tmp_path, memory_type, kind):
    """On the last GPU CUDA sees: models pinned there, buffers allocated and reported there."""
    from soak.triton.memory import cuda

    device = cuda().device_count - 1
    common, unique = write_repositories(
        tmp_path / "models", 2, instance_kind=kind, gpu_device=device
    )
    config = LifecycleConfig(
        0, common, unique[0], runtime.backends_dir, "simple3", memory_type, gpu_device=device
    )
    record = Lifecycle(config).run()
    assert record.failures == []
    assert record.inferences == 20


def test_cuda_error_in_a_phase_is_recorded_under_that_phase(runtime, tmp_path):
    """The GPU injection on a machine whose driver CUDA cannot use: a failure of server_new.

    Before, the CUDA error escaped the lifecycle as a MemoryError and was recorded under the
    made-up phase `lifecycle`; the server it had just made must still be deleted.
    """
    from soak.workload.inject import Injection
    from tests.conftest import cuda_problem

    if cuda_problem() is None:
        pytest.skip("this machine has a GPU: the injected cudaMalloc succeeds")
    workload = Servers(
        WorkloadConfig(servers=1, injection=Injection(gpu_bytes_per_server=1024)),
        tmp_path,
        runtime.backends_dir,
    )
    record = workload.run_iteration(0)
    assert record.hung is None
    assert [f.phase for f in record.failures] == ["server_new"]
    message = record.failures[0].message
    assert message.startswith("cudaMalloc(1024) on device 0 failed: ")
    assert "cuda error" in message and "MemoryError" not in message
    assert record.model_loads == 0 and record.server_lifecycles == 0


@pytest.mark.parametrize("serialize", [True, False])
def test_the_profile_decides_whether_server_new_and_delete_are_serialized(
    runtime, tmp_path, monkeypatch, serialize
):
    """serialize_server_new_delete reaches every server's options (tests/triton/
    test_server_creation.py shows what the lock is for)."""
    from dataclasses import replace

    from soak.profile import load as load_profile
    from soak.runner.protocol import ProfileMessage
    from soak.runner.worker import workload_config
    from soak.target import inprocess
    from soak.triton import Server

    seen: list[bool] = []

    class Recording(Server):
        def __init__(self, options):
            seen.append(options.serialize_new_delete)
            super().__init__(options)

    monkeypatch.setattr(inprocess, "Server", Recording)
    profile = ProfileMessage.of(load_profile("smoke"))
    run = {**profile.run, "servers": 2, "serialize_server_new_delete": serialize}
    workload = Servers(workload_config(replace(profile, run=run)), tmp_path, runtime.backends_dir)
    record = workload.run_iteration(0)
    assert record.failures == []
    assert seen == [serialize, serialize]
