"""The reload and traffic scenarios and the model behaviours, on real servers (CPU)."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from soak.scenario_notes import SCENARIOS
from soak.workload.iteration import WorkloadConfig
from soak.workload.repos import COMMON_MODEL, Behaviour, write_model
from soak.workload.scenarios import make_workload
from tests.conftest import stub_processes


def workload(runtime, tmp_path, scenario, behaviour="correct", **kw):
    config = WorkloadConfig(
        servers=kw.pop("servers", 1),
        inferences_per_model=kw.pop("inferences_per_model", 3),
        scenario=scenario,
        behaviour=Behaviour(behaviour),
        **kw,
    )
    return make_workload(config, tmp_path, runtime.backends_dir)


def no_new_stubs(before: set[int]) -> bool:
    deadline = time.monotonic() + 10
    while stub_processes() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    return not stub_processes() - before


def states(life) -> dict[str, str]:
    return {m["name"]: m.get("state", "") for m in life.server.model_index()}


def test_traffic_loads_once_and_keeps_models_loaded(runtime, tmp_path):
    stubs = stub_processes()
    w = workload(runtime, tmp_path, "traffic", servers=2)
    try:
        records = [w.run_iteration(i) for i in range(3)]
        assert [r.failures for r in records] == [[], [], []]
        assert [r.model_loads for r in records] == [4, 0, 0]
        assert [r.inferences for r in records] == [12, 12, 12]
        assert [r.server_lifecycles for r in records] == [0, 0, 0]
        for life in w.lives:  # the quiet point: models loaded, nothing in flight
            assert states(life) == {COMMON_MODEL: "READY", life.own_model: "READY"}
        assert len(stub_processes() - stubs) == 4
    finally:
        assert w.close() == []
    assert w.lives is None and w.close() == []  # deleted exactly once
    assert no_new_stubs(stubs)


def test_reload_loads_a_new_version_each_iteration(runtime, tmp_path):
    stubs = stub_processes()
    w = workload(runtime, tmp_path, "reload", reload_new_version=True)
    try:
        for i in range(3):
            record = w.run_iteration(i)
            assert record.failures == []
            assert (record.model_loads, record.inferences) == (2, 6)
            life = w.lives[0]
            assert not life.server.closed  # the server outlives the iteration
            assert set(states(life).values()) == {"UNAVAILABLE"}  # nothing loaded
            versions = [p.name for p in (w.common / COMMON_MODEL).iterdir() if p.name.isdigit()]
            assert versions == [str(i + 2)]
            assert no_new_stubs(stubs)
    finally:
        assert w.close() == []


def test_error_share_is_deterministic_from_the_seed(runtime, tmp_path):
    def errors(path):
        w = workload(
            runtime,
            path,
            "traffic",
            "error_response",
            error_fraction=0.3,
            inferences_per_model=20,
        )
        try:
            records = [w.run_iteration(i) for i in range(2)]
        finally:
            w.close()
        assert all(r.failures == [] for r in records)
        assert all(r.inferences == 40 for r in records)
        return [r.errors for r in records]

    first = errors(tmp_path / "a")
    assert errors(tmp_path / "b") == first
    # Instance 0's own stream decides: 20 draws per model, common model first.
    draws = np.random.default_rng((0, 1)).random(80) < 0.3
    assert first == [int(draws[:40].sum()), int(draws[40:].sum())]
    assert 0 < first[0] < 40


@pytest.mark.parametrize("behaviour", ["execute_raises", "error_response"])
def test_expected_errors_are_counted_not_failed(runtime, tmp_path, behaviour):
    w = workload(runtime, tmp_path, "servers", behaviour)
    record = w.run_iteration(0)
    assert record.failures == []
    assert (record.inferences, record.errors) == (6, 6)
    assert record.server_lifecycles == 1
    assert "isolation" in record.lifecycles[0].phase_s  # the servers scenario still checks it


@pytest.mark.parametrize("scenario", ["servers", "reload"])
def test_init_raises_fails_every_load_cleanly(runtime, tmp_path, scenario):
    stubs = stub_processes()
    w = workload(runtime, tmp_path, scenario, "init_raises")
    try:
        for i in range(2):
            record = w.run_iteration(i)
            assert record.failures == []
            assert (record.failed_loads, record.model_loads, record.inferences) == (2, 0, 0)
    finally:
        assert w.close() == []
    assert no_new_stubs(stubs)


def test_unexpected_success_is_a_failure(runtime, tmp_path):
    w = workload(runtime, tmp_path, "traffic", "error_response")
    write_model(w.unique[0], "simple2")  # a correct model where errors are expected
    try:
        record = w.run_iteration(0)
    finally:
        w.close()
    assert [(f.instance, f.phase) for f in record.failures] == [(0, "infer")]
    assert (
        "simple2: succeeded, but behaviour error_response must fail" in record.failures[0].message
    )
    assert record.errors == 3  # simple1 still failed as expected


def test_a_load_that_succeeds_or_fails_otherwise_is_a_failure(runtime, tmp_path):
    w = workload(runtime, tmp_path, "reload", "init_raises")
    write_model(w.unique[0], "simple2")  # loads, though every load must fail
    try:
        record = w.run_iteration(0)
        assert [f.message for f in record.failures] == [
            "simple2 loaded, but its initialize must raise"
        ]
        shutil.rmtree(w.common / COMMON_MODEL)  # now fails, but not with the model's error
        record = w.run_iteration(1)
        assert [f.phase for f in record.failures] == ["load", "load"]
        assert any("simple1" in f.message and "poll" in f.message for f in record.failures)
    finally:
        w.close()


def test_profile_check_knows_each_scenarios_units():
    """The profile check refuses slope_per_<unit> a scenario does not count: same units."""
    from soak.profile.thresholds import SCENARIO_UNITS

    assert {name: info.units for name, info in SCENARIOS.items()} == SCENARIO_UNITS
