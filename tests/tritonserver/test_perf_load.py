"""perf_analyzer as the load generator (soak.tritonserver.perf_load) against a real
tritonserver: soak's inputs sent, every answer checked by perf_analyzer against soak's expected
outputs (a wrong one, even the last, fails the burst), failures handed on with its output, and
no perf_analyzer left."""

from __future__ import annotations

import shutil

import numpy as np
import psutil
import pytest

from soak.target.interface import NOT_CHECKED
from soak.triton import InferenceTimeout
from soak.tritonserver import executable, metrics, perf_analyzer
from soak.tritonserver.client import RemoteServer
from soak.tritonserver.perf_load import PerfAnalyzerLoad
from soak.workload.repos import ERROR_TOKEN, FAIL_MARK

from .conftest import wait_unloaded

OUTPUTS = ["OUTPUT0", "OUTPUT1"]


@pytest.fixture(scope="module")
def loaded(running):
    with RemoteServer(running.http_url) as server:
        server.load_model("simple1")
        server.load_model("erroring")
        yield running
        server.unload_model("simple1")
        server.unload_model("erroring")
        wait_unloaded(server, ["simple1", "erroring"])


@pytest.fixture(scope="module")
def env(server_executable, tmp_path_factory):
    return executable.perf_analyzer_environment(
        server_executable.install, tmp_path_factory.mktemp("palibs")
    )


def _perf_analyzers() -> list[int]:
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "perf_analyzer"]


def _burst(count: int, seed: int, fail: bool = False):
    rng = np.random.default_rng(seed)
    items, answers = [], []
    for _ in range(count):
        a = rng.integers(-1000, 1000, size=(1, 16)).astype(np.int32)
        b = rng.integers(-1000, 1000, size=(1, 16)).astype(np.int32)
        if fail:
            a[0, 0] = FAIL_MARK
        items.append({"INPUT0": a, "INPUT1": b})
        answers.append(None if fail else {"OUTPUT0": a + b, "OUTPUT1": a - b})
    return items, answers


def _perf_analyzer_hung(running, before: int, requests: int, exc: InferenceTimeout) -> None:
    """A burst killed for time: where the server answered every request, perf_analyzer 2.51
    itself did not finish (seen about once in a full suite, at concurrency 4, HTTP and gRPC;
    never in 140 bursts alone or under load): expected to fail, with the evidence. Where the
    server did not answer them all, the caller fails (a hang in Triton must show)."""
    counted = metrics.read(running.metrics_url)["simple1"].success - before
    if counted >= requests:
        pytest.xfail(
            f"perf_analyzer 2.51 did not exit after the server answered all {requests} "
            f"requests ({counted} counted): {exc.message}"
        )


def _load(running, env, tmp_path, protocol, shared_memory="none") -> PerfAnalyzerLoad:
    return PerfAnalyzerLoad(running.url(protocol), protocol, False, shared_memory, env, tmp_path)


@pytest.mark.parametrize(
    ("protocol", "shared_memory", "concurrency"),
    [("http", "none", 1), ("http", "none", 4), ("grpc", "none", 4), ("grpc", "system", 4)],
)
def test_every_request_is_sent_counted_and_checked(
    loaded, env, tmp_path, protocol, shared_memory, concurrency
):
    items, answers = _burst(80, seed=3)
    before = metrics.read(loaded.metrics_url)["simple1"].success
    seen = []

    def on_result(i, result, error):
        assert error is None, error
        if shared_memory == "none":  # perf_analyzer compared it: these are its answers
            assert np.array_equal(result["OUTPUT0"].array, answers[i]["OUTPUT0"])
        else:
            assert result is NOT_CHECKED
        seen.append(i)
        return True

    load = _load(loaded, env, tmp_path, protocol, shared_memory)
    try:
        handed = load.infer_many(
            "simple1", iter(items), OUTPUTS, on_result, concurrency, 30.0, answers.__getitem__
        )
    except InferenceTimeout as exc:
        _perf_analyzer_hung(loaded, before, 80, exc)
        raise
    assert handed == 80 and seen == list(range(80))
    assert list(tmp_path.glob("perf-input-*")) == []  # its input file is gone
    assert _perf_analyzers() == []
    # The server answered exactly these requests (its counter may lag the last answer).
    for _ in range(50):
        counted = metrics.read(loaded.metrics_url)["simple1"].success - before
        if counted >= 80:
            break
    assert counted == 80


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_wrong_answer_even_the_last_one_fails_the_burst(loaded, env, tmp_path, protocol):
    items, answers = _burst(20, seed=5)
    answers[-1] = {"OUTPUT0": answers[-1]["OUTPUT0"] + 1, "OUTPUT1": answers[-1]["OUTPUT1"]}
    errors = []

    def on_result(i, result, error):
        errors.append(error)
        return error is None

    load = _load(loaded, env, tmp_path, protocol)
    load.infer_many("simple1", iter(items), OUTPUTS, on_result, 1, 30.0, answers.__getitem__)
    assert errors and errors[0] is not None
    assert "Output doesn't match expected output" in errors[0].message
    assert "*** Measurement Settings ***" in errors[0].message  # its output, kept
    assert _perf_analyzers() == []


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_failing_requests_hand_on_one_error_per_thread_that_saw_one(
    loaded, env, tmp_path, protocol
):
    items, answers = _burst(40, seed=6, fail=True)
    errors = []

    def on_result(i, result, error):
        assert result is None
        errors.append(error.message)
        return True

    load = _load(loaded, env, tmp_path, protocol)
    handed = load.infer_many(
        "erroring", iter(items), OUTPUTS, on_result, 4, 30.0, answers.__getitem__
    )
    assert 1 <= handed <= 4 and len(errors) == handed
    assert all(ERROR_TOKEN in e for e in errors)
    assert _perf_analyzers() == []


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_cannot_check_answers_through_shared_memory(loaded, env, tmp_path, protocol):
    """Why perf_load leaves shared-memory answers unchecked: perf_analyzer 2.51 fails the
    right answer itself once outputs come through a region."""
    items, answers = _burst(5, seed=9)
    data = perf_analyzer.write_input_data(tmp_path / "d.json", items, answers)
    url = loaded.url(protocol)
    done = perf_analyzer.burst("simple1", url, protocol, 1, 5, env, 60, "system", input_data=data)
    assert not done.ok
    assert perf_analyzer.thread_errors(done.output) == ["Output size doesn't match expected size"]
    plain = perf_analyzer.burst("simple1", url, protocol, 1, 5, env, 60, input_data=data)
    assert plain.ok and plain.completed == 5


def test_a_burst_past_the_infer_timeout_is_killed_as_a_timeout(loaded, env, tmp_path):
    items, answers = _burst(5000, seed=10)
    load = _load(loaded, env, tmp_path, "http")
    with pytest.raises(InferenceTimeout, match="ran past 0.5 s") as killed:
        load.infer_many(
            "simple1", iter(items), OUTPUTS, lambda *a: True, 1, 0.5, answers.__getitem__
        )
    # What it printed before it was killed is kept (line-buffered through stdbuf).
    assert "what it printed" in killed.value.message
    if shutil.which("stdbuf"):
        assert "Sending 5000 benchmark requests" in killed.value.message
    assert _perf_analyzers() == []
    assert list(tmp_path.glob("perf-input-*")) == []
