"""Server.infer_many: requests in flight together, each result handed on in order, and every
Triton object freed exactly once (counted on the real core's delete calls)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from soak.triton import Server, ServerOptions, capi
from soak.triton.request import in_flight
from soak.triton.returns import TritonError
from soak.workload.polling import wait_unloaded
from soak.workload.repos import ERROR_TOKEN, FAIL_MARK, Behaviour, write_model

OUTPUTS = ["OUTPUT0", "OUTPUT1"]
MODELS = ("addsub", "erroring")


@pytest.fixture(scope="module")
def served(runtime, tmp_path_factory):
    repo = tmp_path_factory.mktemp("burst") / "repo"
    write_model(repo, "addsub")
    write_model(repo, "erroring", behaviour=Behaviour.ERROR_RESPONSE)
    options = ServerOptions((repo,), runtime.backends_dir, server_id="soak-burst", exit_timeout_s=5)
    server = Server(options)
    for model in MODELS:
        server.load_model(model)
    yield server
    for model in MODELS:
        server.unload_model(model)
    # Bounded: a model Triton never finishes unloading is reported, not waited for.
    stuck = wait_unloaded(server, MODELS, timeout_s=30)
    try:
        server.close()
    except TritonError:
        if not stuck:
            raise
    if stuck:
        warnings.warn(f"Triton kept {stuck} unloading", stacklevel=2)


@pytest.fixture
def deletes(monkeypatch):
    """How often each TRITONSERVER_*Delete the binding calls ran (Triton's threads included)."""
    lib = capi.loaded().lib
    counts: dict[str, int] = {}
    for name in (
        "TRITONSERVER_InferenceRequestDelete",
        "TRITONSERVER_InferenceResponseDelete",
        "TRITONSERVER_ErrorDelete",
    ):
        real = getattr(lib, name)
        counts[name] = 0

        def counted(*args, _real=real, _name=name):
            counts[_name] += 1
            return _real(*args)

        monkeypatch.setattr(lib, name, counted)
    return counts


def _inputs(count: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1000, (count, 2, 1, 16)).astype(np.int32)


@pytest.mark.parametrize("concurrency", [1, 4, 16])
def test_every_result_comes_in_order_and_everything_is_freed(served, deletes, concurrency):
    count = 300
    data = _inputs(count)
    seen: list[int] = []

    def on_result(i, outputs, error):
        assert error is None
        assert np.array_equal(outputs["OUTPUT0"].array, data[i, 0] + data[i, 1])
        assert np.array_equal(outputs["OUTPUT1"].array, data[i, 0] - data[i, 1])
        seen.append(i)
        return True

    items = ({"INPUT0": d[0], "INPUT1": d[1]} for d in data)
    handed = served.infer_many("addsub", items, OUTPUTS, on_result, concurrency=concurrency)
    assert handed == count
    assert seen == list(range(count))
    assert deletes["TRITONSERVER_InferenceRequestDelete"] == count
    assert deletes["TRITONSERVER_InferenceResponseDelete"] == count
    assert in_flight() == 0


def test_a_wrong_answer_stops_the_burst_and_in_flight_requests_are_still_freed(served, deletes):
    data = _inputs(100)
    seen: list[int] = []

    def on_result(i, outputs, error):
        seen.append(i)
        expected = data[i, 0] + data[i, 1] + (i == 10)  # the answer to request 10 is "wrong"
        return bool(np.array_equal(outputs["OUTPUT0"].array, expected))

    items = ({"INPUT0": d[0], "INPUT1": d[1]} for d in data)
    handed = served.infer_many("addsub", items, OUTPUTS, on_result, concurrency=4)
    assert handed == 11
    assert seen == list(range(11))
    sent = deletes["TRITONSERVER_InferenceRequestDelete"]
    assert 11 <= sent <= 11 + 4 + 1  # one more built, while the 11th ran, never sent
    assert deletes["TRITONSERVER_InferenceResponseDelete"] == sent
    assert in_flight() == 0


# Errors come from error responses: after executes that raise, Triton 2.51 keeps the model
# UNLOADING for good in many runs (here 2 of 3 at 4 in flight, 1 of 3 at 1 in flight: README,
# findings), and its stub with it; soak's e2e runs meet that hang in worker processes.
@pytest.mark.parametrize("concurrency", [1, 4])
def test_errors_are_handed_on_and_their_objects_deleted(served, deletes, concurrency):
    count = 200
    data = _inputs(count)
    data[::2, 0, 0, 0] = FAIL_MARK  # every other request raises in execute
    errors: list[int] = []

    def on_result(i, outputs, error):
        if error is not None:
            assert ERROR_TOKEN in error.message
            errors.append(i)
        else:
            assert np.array_equal(outputs["OUTPUT0"].array, data[i, 0] + data[i, 1])
        return True

    items = ({"INPUT0": d[0], "INPUT1": d[1]} for d in data)
    handed = served.infer_many("erroring", items, OUTPUTS, on_result, concurrency=concurrency)
    assert handed == count
    assert errors == list(range(0, count, 2))
    assert deletes["TRITONSERVER_InferenceRequestDelete"] == count
    assert deletes["TRITONSERVER_InferenceResponseDelete"] == count
    assert deletes["TRITONSERVER_ErrorDelete"] >= count // 2
