"""The user's own models through real servers: plans from metadata, data files, output checks."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from soak.triton import Server, ServerOptions, TritonError
from soak.workload.models import (
    ModelSettings,
    UserModelError,
    backend_problem,
    exercise,
    plan_on,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MODELS = ("text_fp16", "scale_batched", "count_decoupled")


@pytest.fixture(scope="module")
def server(runtime):
    server = Server(
        ServerOptions((EXAMPLES / "models",), runtime.backends_dir, server_id="soak-models")
    )
    for name in MODELS:
        server.load_model(name)
    yield server
    for name in MODELS:
        server.unload_model(name)
    server.close()


def run(server, settings: ModelSettings, count: int = 3):
    return exercise(server, plan_on(server, settings), count, np.random.default_rng(1))


def test_data_file_with_b64_and_validation_data_passes(server):
    settings = ModelSettings("text_fp16", input_data=EXAMPLES / "data" / "text_fp16.json")
    plan = plan_on(server, settings)
    assert len(plan.cases) == 2
    assert plan.cases[1].inputs["TEXT"].tolist() == [b"leak", b"", b"hunt"]
    assert plan.cases[1].inputs["VALUES"].dtype == np.float16
    done = exercise(server, plan, 4, np.random.default_rng(1))
    assert (done.requests, done.responses, done.problems) == (4, 4, [])


def test_a_wrong_expected_output_is_caught_naming_model_output_and_index(server, tmp_path):
    doc = json.loads((EXAMPLES / "data" / "text_fp16.json").read_text())
    doc["validation_data"][0]["LENGTHS"] = [4, 7]
    doc["validation_data"][0]["HALVED"] = [0.5, 1.0, 1.5, 2.5]
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(doc))
    done = run(server, ModelSettings("text_fp16", input_data=wrong))
    assert done.requests == 1
    assert any(
        p.startswith("text_fp16: output LENGTHS: differs") and "at index [1]" in p
        for p in done.problems
    ), done.problems
    assert any("output HALVED" in p and "index [3]" in p for p in done.problems), done.problems


def test_float_tolerances_come_from_the_profile(server, tmp_path):
    doc = json.loads((EXAMPLES / "data" / "text_fp16.json").read_text())
    doc["validation_data"][0]["HALVED"] = [0.5, 1.0, 1.5, 2.26]  # 2.26 in FP16: 0.01 off
    near = tmp_path / "near.json"
    near.write_text(json.dumps(doc))
    assert run(server, ModelSettings("text_fp16", input_data=near, rtol=0.0, atol=0.0)).problems
    assert not run(server, ModelSettings("text_fp16", input_data=near, atol=0.02)).problems


def test_random_data_with_batching_and_a_shape_from_the_profile(server):
    settings = ModelSettings("scale_batched", batch_size=3, shape={"X": (5,)})
    plan = plan_on(server, settings)
    assert [(t.name, t.shape) for t in plan.inputs] == [("X", (3, 5))]  # optional BIAS left out
    assert plan.batch_size == 3
    done = exercise(server, plan, 3, np.random.default_rng(2))
    assert (done.requests, done.problems) == (3, [])


def test_optional_input_from_the_data_file_is_sent_and_batched(server):
    settings = ModelSettings(
        "scale_batched", batch_size=2, input_data=EXAMPLES / "data" / "scale_batched.json"
    )
    plan = plan_on(server, settings)
    assert plan.cases[0].inputs["BIAS"].shape == (2, 1)
    assert plan.cases[0].expected["Y"].shape == (2, 4)
    assert run(server, settings).problems == []


def test_variable_dimension_without_a_shape_is_an_error_naming_model_and_input(server):
    with pytest.raises(UserModelError) as err:
        plan_on(server, ModelSettings("scale_batched"))
    assert "'scale_batched', input 'X' has a variable dimension" in str(err.value)
    assert "shape = { X = [...] }" in str(err.value)


def test_batch_size_above_max_batch_size_is_refused(server):
    with pytest.raises(UserModelError, match="batch_size = 9 exceeds .* max_batch_size 8"):
        plan_on(server, ModelSettings("scale_batched", batch_size=9, shape={"X": (2,)}))


def test_decoupled_responses_are_counted(server, tmp_path):
    data = tmp_path / "count.json"
    data.write_text(json.dumps({"data": [{"COUNT": [3]}, {"COUNT": [0]}, {"COUNT": [2]}]}))
    done = run(server, ModelSettings("count_decoupled", input_data=data), count=3)
    assert (done.requests, done.responses, done.problems) == (3, 5, [])


def test_a_missing_backend_is_named_with_the_backends_folder(runtime, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "models" / "scale_batched", repo / "onnx_model")
    config = repo / "onnx_model" / "config.pbtxt"
    config.write_text(
        config.read_text()
        .replace('backend: "python"', 'platform: "onnxruntime_onnx"')
        .replace("scale_batched", "onnx_model")
    )
    problem = backend_problem((repo,), "onnx_model", runtime.backends_dir)
    assert problem is not None
    assert "'onnxruntime' backend" in problem and str(runtime.backends_dir) in problem
    assert "it has: python" in problem
    assert backend_problem((EXAMPLES / "models",), "text_fp16", runtime.backends_dir) is None
    # Triton itself refuses the load: the check above only says it first, and plainly.
    with Server(ServerOptions((repo,), runtime.backends_dir, server_id="soak-nobackend")) as s:
        with pytest.raises(TritonError):
            s.load_model("onnx_model")


def test_servers_scenario_loads_user_models_alongside_the_generated_ones(runtime, tmp_path):
    from soak.profile import load as load_profile
    from soak.runner.protocol import ProfileMessage
    from soak.runner.worker import workload_config
    from soak.workload.scenarios import Servers

    profile = ProfileMessage.of(load_profile(str(EXAMPLES / "profile.toml")))
    config = workload_config(profile)
    assert config.user_models.names == list(MODELS)
    workload = Servers(config, tmp_path, runtime.backends_dir)
    record = workload.run_iteration(0)
    assert record.failures == []
    assert record.server_lifecycles == 2
    assert record.model_loads == 2 * (2 + 3)
    assert record.inferences == 2 * (2 + 3) * 4
    assert all("isolation" in life.phase_s for life in record.lifecycles)


@pytest.mark.parametrize("scenario", ["traffic", "reload"])
def test_long_lived_scenarios_exercise_user_models_planned_once_per_load(
    runtime, tmp_path, scenario, monkeypatch
):
    """examples/profile.toml's models in traffic and reload: every burst sends each of them
    inferences_per_model checked requests, counted; a plan is made once per load."""
    from dataclasses import replace

    from soak.profile import load as load_profile
    from soak.runner.protocol import ProfileMessage
    from soak.runner.worker import workload_config
    from soak.workload import inference
    from soak.workload.scenarios import make_workload
    from tests.conftest import stub_processes

    planned = []

    def counted_plan_on(server, settings):
        planned.append(settings.name)
        return plan_on(server, settings)

    monkeypatch.setattr(inference, "plan_on", counted_plan_on)

    profile = ProfileMessage.of(load_profile(str(EXAMPLES / "profile.toml")))
    run = {**profile.run, "scenario": scenario, "reload_new_version": scenario == "reload"}
    config = workload_config(replace(profile, run=run))
    stubs = stub_processes()
    workload = make_workload(config, tmp_path, runtime.backends_dir)
    try:
        records = []
        for i in range(3):
            records.append(workload.run_iteration(i))
            for life in workload.lives:  # the quiet point
                assert life.server is not None, records[-1].failures
                ready = {m["name"] for m in life.server.model_index() if m["state"] == "READY"}
                assert ready == (set(life.models) if scenario == "traffic" else set())
        assert [r.failures for r in records] == [[], [], []]
        per_burst = 2 * (2 + 3) * 4  # servers x (generated + user models) x requests
        assert [r.inferences for r in records] == [per_burst] * 3
        loads = [10, 0, 0] if scenario == "traffic" else [10, 10, 10]
        assert [r.model_loads for r in records] == loads
        assert sorted(planned) == sorted(MODELS * 2 * (1 if scenario == "traffic" else 3))
    finally:
        assert workload.close() == []
    deadline = time.monotonic() + 10
    while stub_processes() - stubs and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not stub_processes() - stubs


def test_a_wrong_output_in_a_lifecycle_is_a_failure(runtime, tmp_path):
    from soak.workload.config import LifecycleConfig
    from soak.workload.lifecycle import Lifecycle
    from soak.workload.models import UserModels
    from soak.workload.repos import write_repositories

    doc = json.loads((EXAMPLES / "data" / "text_fp16.json").read_text())
    doc["validation_data"][1]["UPPER"][2] = "HUNTS"
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(doc))
    common, (own,) = write_repositories(tmp_path / "models", 1)
    user = UserModels((EXAMPLES / "models",), (ModelSettings("text_fp16", input_data=wrong),))
    config = LifecycleConfig(0, common, own, runtime.backends_dir, user_models=user)
    record = Lifecycle(config).run()
    assert record.completed
    assert [(f.phase, f.message.split(":")[0]) for f in record.failures] == [("infer", "text_fp16")]
    assert "output UPPER: differs from the expected output at index [2]" in (
        record.failures[0].message
    )


def test_preflight_names_a_variable_dimension_without_a_shape(runtime):
    from soak.workload.models import UserModels, preflight

    user = UserModels((EXAMPLES / "models",), (ModelSettings("scale_batched"),))
    with pytest.raises(UserModelError, match="input 'X' has a variable dimension"):
        preflight(user, runtime.backends_dir)


def test_sequence_batched_models_are_planned_in_sequences_of_the_profile_length():
    from soak.workload.models import build_plan

    config = {"max_batch_size": 0, "sequence_batching": {"max_sequence_idle_microseconds": 1}}
    plan = build_plan(
        {"inputs": [], "outputs": []}, config, ModelSettings("seq", sequence_length=3)
    )
    assert plan.sequence_length == 3
    assert build_plan({"inputs": [], "outputs": []}, {}, ModelSettings("m")).sequence_length is None


def test_preflight_refuses_a_missing_backend_before_any_server(runtime, tmp_path):
    from soak.workload.models import UserModels, preflight

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.pbtxt").write_text('backend: "pytorch"\n')
    user = UserModels((tmp_path,), (ModelSettings("m"),))
    with pytest.raises(UserModelError, match="needs the 'pytorch' backend, which is not in"):
        preflight(user, runtime.backends_dir)


def test_preflight_unloads_one_model_at_a_time(monkeypatch):
    """Concurrent unloads crashed Triton 2.51's rate limiter (issue 24 item 11): each model
    is unloaded and gone before the next one's unload starts."""
    from soak.workload import models
    from soak.workload.models import UserModels, preflight

    calls = []

    class Fake:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            calls.append(("close",))

        def load_model(self, name):
            calls.append(("load", name))

        def unload_model(self, name):
            calls.append(("unload", name))

    class Target:
        writes_repositories = True

        def new_server(self, spec):
            return Fake()

    monkeypatch.setattr(models, "backend_problem", lambda *a: None)
    monkeypatch.setattr(models, "plan_on", lambda server, settings: settings.name)
    monkeypatch.setattr(
        models, "wait_unloaded", lambda server, names, timeout: calls.append(("wait", *names))
    )
    user = UserModels((Path("/nowhere"),), (ModelSettings("a"), ModelSettings("b")))
    assert preflight(user, Path("/nowhere"), target=Target()) == {"a": "a", "b": "b"}
    assert calls[2:] == [("unload", "a"), ("wait", "a"), ("unload", "b"), ("wait", "b"), ("close",)]
