"""perf_analyzer bursts against a real tritonserver, and the server's Prometheus counters
checked against the requests sent."""

from __future__ import annotations

import signal
import time

import numpy as np
import psutil
import pytest

from soak.tritonserver import executable, metrics, perf_analyzer
from soak.tritonserver.client import RemoteServer
from soak.workload.repos import FAIL_MARK

from .conftest import EXAMPLES

DATA = EXAMPLES.parent / "data"


@pytest.fixture(scope="module")
def env(server_executable, tmp_path_factory):
    return executable.perf_analyzer_environment(
        server_executable.install, tmp_path_factory.mktemp("palibs")
    )


@pytest.fixture(scope="module")
def loaded(running):
    with RemoteServer(running.http_url) as server:
        for model in ("simple1", "raising", "count_decoupled"):
            server.load_model(model)
        yield running
        for model in ("simple1", "raising", "count_decoupled"):
            server.unload_model(model)
        deadline = time.monotonic() + 15
        while (
            any(
                m.get("state") == "READY" or m.get("state") == "UNLOADING"
                for m in server.model_index()
            )
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)


def _settled(url: str, model: str, success: int, timeout_s: float = 2.0) -> metrics.ModelCounters:
    """The model's counters once its success count reached `success` (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        counters = metrics.read(url)[model]
        if counters.success >= success or time.monotonic() > deadline:
            return counters
        time.sleep(0.02)


def _perf_analyzers() -> list[int]:
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "perf_analyzer"]


@pytest.mark.parametrize(
    ("protocol", "shared_memory"), [("http", "none"), ("grpc", "none"), ("grpc", "system")]
)
def test_a_burst_completes_its_requests_and_the_server_counts_them(
    loaded, env, protocol, shared_memory
):
    before = metrics.read(loaded.metrics_url)["simple1"].success
    burst = perf_analyzer.burst(
        "simple1", loaded.url(protocol), protocol, 1, 200, env, 60, shared_memory
    )
    assert burst.ok, burst.output
    assert (burst.completed, burst.failed) == (200, 0)
    # perf_analyzer reads the server's statistics as its last response arrives: over gRPC it
    # was seen one short (199 of 200), so only the server's own counters are exact.
    assert burst.server_successes in (199, 200)
    assert 0 < burst.wall_s < 60 and burst.infer_per_s > 0
    after = _settled(loaded.metrics_url, "simple1", before + 200)
    assert after.success - before == 200
    assert after.pending == 0


def test_a_decoupled_model_bursts_over_a_stream_with_its_input_data(loaded, env):
    burst = perf_analyzer.burst(
        "count_decoupled",
        loaded.grpc_url,
        "grpc",
        2,
        30,
        env,
        60,
        streaming=True,
        input_data=DATA / "count_decoupled.json",
    )
    assert burst.ok, burst.output
    # A third of the requests ask for no response: perf_analyzer's client does not count
    # those, the server does.
    assert (burst.completed, burst.failed, burst.server_successes) == (20, 0, 30)


def test_a_burst_past_its_timeout_is_killed_and_keeps_its_output(loaded, env):
    burst = perf_analyzer.burst("simple1", loaded.http_url, "http", 1, 10_000_000, env, 1.0)
    assert burst.timed_out and not burst.ok
    assert burst.completed == 0 and burst.failed == 10_000_000
    assert burst.returncode == -signal.SIGKILL
    assert "*** Measurement Settings ***" in burst.output  # what it printed before the kill
    assert burst.wall_s < 10
    assert _perf_analyzers() == []


def test_a_failing_burst_keeps_its_output(loaded, env):
    burst = perf_analyzer.burst("no_such_model", loaded.http_url, "http", 1, 10, env, 30)
    assert not burst.ok and burst.returncode != 0
    assert burst.failed == 10
    assert "no_such_model" in burst.output


def test_metrics_count_successes_and_failures_by_reason(loaded):
    before = metrics.read(loaded.metrics_url).get("raising", metrics.ModelCounters())
    rng = np.random.default_rng(4)
    with RemoteServer(loaded.grpc_url, "grpc") as server:
        for i in range(10):
            a = rng.integers(-9, 9, size=(1, 16)).astype(np.int32)
            if i % 3 == 0:
                a[0, 0] = FAIL_MARK
            try:
                server.infer("raising", {"INPUT0": a, "INPUT1": a}, ["OUTPUT0", "OUTPUT1"])
            except Exception:  # noqa: BLE001 - counted below
                pass
    after = metrics.read(loaded.metrics_url)["raising"]
    assert after.success - before.success == 6
    assert after.failures - before.failures == 4
    assert after.failure.get("BACKEND", 0) - before.failure.get("BACKEND", 0) == 4
    assert after.pending == 0


def test_parse_reads_labels_and_values():
    text = (
        "# HELP nv_inference_request_failure Number of failed inference requests\n"
        "# TYPE nv_inference_request_failure counter\n"
        'nv_inference_request_failure{model="m",reason="BACKEND",version="1"} 3\n'
        'nv_inference_request_failure{model="m",reason="OTHER",version="2"} 1\n'
        'nv_inference_request_success{model="m",version="1"} 7\n'
        'nv_inference_request_success{model="m",version="2"} 2\n'
        "nv_pinned_memory_pool_total_bytes 268435456\n"
    )
    samples = metrics.parse(text)
    assert samples[-1] == metrics.Sample("nv_pinned_memory_pool_total_bytes", {}, 268435456.0)
    counters = metrics.per_model(samples)
    assert list(counters) == ["m"]
    assert counters["m"].success == 9
    assert counters["m"].failure == {"BACKEND": 3, "OTHER": 1} and counters["m"].failures == 4
