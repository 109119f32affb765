"""RemoteServer over HTTP and gRPC against one real tritonserver: the same calls, shapes and
errors as the in-process Server, system shared memory, and a decoupled model streamed."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from soak.triton import InferenceTimeout, MemoryType, TritonError
from soak.tritonserver.client import RemoteServer
from soak.workload.repos import ERROR_TOKEN, FAIL_MARK

from .conftest import client_regions

OUTPUTS = ["OUTPUT0", "OUTPUT1"]


def _pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = rng.integers(-1000, 1000, size=(1, 16)).astype(np.int32)
    b = rng.integers(-1000, 1000, size=(1, 16)).astype(np.int32)
    return a, b


def _state(server: RemoteServer, model: str) -> dict:
    return next(m for m in server.model_index() if m["name"] == model)


def _unload_and_wait(server: RemoteServer, model: str, timeout_s: float = 15.0) -> float:
    started = time.monotonic()
    server.unload_model(model)
    while _state(server, model).get("state") != "UNAVAILABLE":
        assert time.monotonic() - started < timeout_s, _state(server, model)
        time.sleep(0.02)
    return time.monotonic() - started


def _settled_statistics(server: RemoteServer, model: str, success: int) -> dict:
    """The model's inference statistics once `success` are counted (at most 2 s): over the
    network the last response can arrive before the server has counted it."""
    deadline = time.monotonic() + 2.0
    while True:
        counts = server.model_statistics(model)["model_stats"][0]["inference_stats"]
        if counts["success"]["count"] >= success or time.monotonic() > deadline:
            return counts
        time.sleep(0.02)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_server_interface_over(running, protocol):
    rng = np.random.default_rng(1)
    with RemoteServer(running.url(protocol), protocol) as server:
        assert server.is_live() and server.is_ready()
        assert server.metadata()["version"] == "2.51.0"
        assert not server.model_is_ready("simple1")
        server.load_model("simple1")
        assert server.model_is_ready("simple1")
        assert _state(server, "simple1") == {"name": "simple1", "version": "1", "state": "READY"}
        assert [m["name"] for m in server.model_index(ready_only=True)] == ["simple1"]
        meta = server.model_metadata("simple1")
        assert meta["inputs"][0] == {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16]}
        config = server.model_config("simple1")
        assert config["name"] == "simple1" and config["max_batch_size"] == 0
        assert config["input"][1]["dims"] == [1, 16]
        for _ in range(5):
            a, b = _pair(rng)
            out = server.infer("simple1", {"INPUT0": a, "INPUT1": b}, OUTPUTS)
            assert np.array_equal(out["OUTPUT0"].array, a + b)
            assert np.array_equal(out["OUTPUT1"].array, a - b)
            assert out["OUTPUT0"].memory_type is MemoryType.SYSTEM
            assert out["OUTPUT0"].datatype == "INT32"
        counts = _settled_statistics(server, "simple1", 5)
        assert counts["success"]["count"] == 5 and counts["fail"]["count"] == 0
        with pytest.raises(TritonError) as caught:
            server.infer("no_such_model", {"INPUT0": a}, ["OUTPUT0"])
        assert caught.value.code == "Not found" and "no_such_model" in caught.value.message
        unload_s = _unload_and_wait(server, "simple1")
        assert _state(server, "simple1")["reason"] == "unloaded"
        assert unload_s < 10
        with pytest.raises(TritonError):
            server.load_model("no_such_model")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_an_error_response_is_a_triton_error_with_the_models_message(running, protocol):
    with RemoteServer(running.url(protocol), protocol) as server:
        server.load_model("raising")
        try:
            a, b = _pair(np.random.default_rng(2))
            a[0, 0] = FAIL_MARK
            with pytest.raises(TritonError) as caught:
                server.infer("raising", {"INPUT0": a, "INPUT1": b}, OUTPUTS)
            assert ERROR_TOKEN in caught.value.message
            assert not isinstance(caught.value, InferenceTimeout)
        finally:
            _unload_and_wait(server, "raising")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_system_shared_memory_regions_are_registered_used_and_gone_on_close(running, protocol):
    rng = np.random.default_rng(3)
    server = RemoteServer(running.url(protocol), protocol, shared_memory="system")
    try:
        server.load_model("simple1")
        for _ in range(3):
            a, b = _pair(rng)
            out = server.infer("simple1", {"INPUT0": a, "INPUT1": b}, OUTPUTS)
            assert np.array_equal(out["OUTPUT0"].array, a + b)
            assert np.array_equal(out["OUTPUT1"].array, a - b)
        assert len(client_regions()) == 2  # one for the inputs, one for the outputs, reused
        with RemoteServer(running.url("http")) as other:
            registered = other._client().get_system_shared_memory_status()
        assert {r["name"] for r in registered} == client_regions()
        server.release_shared_memory()
        assert client_regions() == set()
        a, b = _pair(rng)
        assert np.array_equal(
            server.infer("simple1", {"INPUT0": a, "INPUT1": b}, OUTPUTS)["OUTPUT0"].array, a + b
        )
        _unload_and_wait(server, "simple1")
    finally:
        server.close()
    assert client_regions() == set()
    with RemoteServer(running.url("http")) as other:
        assert other._client().get_system_shared_memory_status() == []


def test_a_decoupled_model_streams_every_response_until_the_final_flag(running):
    server = RemoteServer(running.grpc_url, "grpc", streaming=True, shared_memory="system")
    try:
        server.load_model("count_decoupled")
        for count in (0, 1, 5):
            responses = server.infer_responses(
                "count_decoupled", {"COUNT": np.array([count], np.int32)}, ["INDEX"]
            )
            assert [r["INDEX"].array.tolist() for r in responses] == [[i] for i in range(count)]
        # A model served over an open stream stays UNLOADING until the stream ends (2.51):
        # unload_model ends it, so the unload completes.
        assert _unload_and_wait(server, "count_decoupled") < 10
    finally:
        server.close()
    assert client_regions() == set()


def test_a_bad_protocol_or_combination_is_refused():
    with pytest.raises(ValueError, match="protocol"):
        RemoteServer("127.0.0.1:1", "tcp")
    with pytest.raises(ValueError, match="streaming"):
        RemoteServer("127.0.0.1:1", "http", streaming=True)
    with pytest.raises(ValueError, match="shared_memory"):
        RemoteServer("127.0.0.1:1", "http", shared_memory="cuda")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_regions_are_unlinked_even_when_the_server_died(
    server_executable, repositories, tmp_path, protocol
):
    from soak.tritonserver.process import ServerProcess

    process = ServerProcess(server_executable, repositories[:1], tmp_path / "log").start()
    try:
        server = RemoteServer(process.url(protocol), protocol, shared_memory="system")
        server.load_model("simple1")
        a, b = _pair(np.random.default_rng(5))
        assert np.array_equal(
            server.infer("simple1", {"INPUT0": a, "INPUT1": b}, OUTPUTS)["OUTPUT0"].array, a + b
        )
        assert len(client_regions()) == 2
        process._popen.kill()
        process._popen.wait()
        with pytest.raises(TritonError):
            server.close()
        assert server.closed
        assert client_regions() == set()
    finally:
        end = process.stop()
    assert end.crashed and end.signal == "SIGKILL"


def test_abandon_unlinks_the_regions_without_a_call_to_a_server_that_never_answers(
    server_executable, repositories, tmp_path
):
    """A SIGKILLed tritonserver's python stub can live on holding the server's connections
    (Triton 2.51, README): a call on one waits the whole network timeout. `abandon` unlinks
    the client's regions with no call at all; a stopped server stands in for the dead one
    whose connections stay open."""
    import signal
    import threading

    from soak.tritonserver.process import ServerProcess

    process = ServerProcess(server_executable, repositories[:1], tmp_path / "log").start()
    try:
        server = RemoteServer(process.http_url, "http", shared_memory="system")
        server.load_model("simple1")
        a, b = _pair(np.random.default_rng(6))
        server.infer("simple1", {"INPUT0": a, "INPUT1": b}, OUTPUTS)
        assert len(client_regions()) == 2
        os.kill(process.pid, signal.SIGSTOP)
        try:
            worker = threading.Thread(target=server.abandon, daemon=True)
            worker.start()
            worker.join(timeout=20)  # far below the client's 60 s network timeout
            assert not worker.is_alive(), "abandon called the server"
            assert client_regions() == set()
            with pytest.raises(TritonError, match="closed"):
                server.infer("simple1", {"INPUT0": a, "INPUT1": b}, OUTPUTS)
        finally:
            os.kill(process.pid, signal.SIGCONT)
            server.forget_thread_client()  # its keep-alive connection would hold the exit 30 s
    finally:
        process.stop()
