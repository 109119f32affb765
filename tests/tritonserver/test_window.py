"""RemoteServer.infer_many with 4 requests in flight over HTTP and gRPC (and system shared
memory, one region pair per request in flight) against a real tritonserver: every result
handed on once, in submission order, checked; errors in their place; nothing left."""

from __future__ import annotations

import numpy as np
import pytest

from soak.tritonserver.client import RemoteServer
from soak.workload.repos import ERROR_TOKEN, FAIL_MARK

from .conftest import client_regions, wait_unloaded

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


def _items(count: int, seed: int, fail_every: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    items = []
    for i in range(count):
        a = rng.integers(-1000, 1000, size=(1, 16)).astype(np.int32)
        b = rng.integers(-1000, 1000, size=(1, 16)).astype(np.int32)
        if fail_every and i % fail_every == 0:
            a[0, 0] = FAIL_MARK
        items.append({"INPUT0": a, "INPUT1": b})
    return items


@pytest.mark.parametrize(
    ("protocol", "shared_memory"), [("http", "none"), ("grpc", "none"), ("http", "system"),
                                    ("grpc", "system")],
)  # fmt: skip
def test_four_in_flight_come_back_in_order_and_right(loaded, protocol, shared_memory):
    items = _items(60, seed=7)
    seen: list[int] = []

    def on_result(i, result, error):
        assert error is None, error
        item = items[i]
        assert np.array_equal(result["OUTPUT0"].array, item["INPUT0"] + item["INPUT1"])
        assert np.array_equal(result["OUTPUT1"].array, item["INPUT0"] - item["INPUT1"])
        seen.append(i)
        return True

    with RemoteServer(loaded.url(protocol), protocol, shared_memory=shared_memory,
                      concurrency=4) as server:  # fmt: skip
        handed = server.infer_many("simple1", iter(items), OUTPUTS, on_result, concurrency=4)
        if shared_memory == "system":
            # one input and one output region per request in flight (HTTP: per thread that
            # sent one; idle threads are reused)
            regions = len(client_regions())
            assert regions == 8 if protocol == "grpc" else regions in (2, 4, 6, 8)
    assert handed == 60 and seen == list(range(60))
    assert client_regions() == set()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_errors_come_back_in_their_place_and_a_stop_awaits_what_is_in_flight(loaded, protocol):
    items = _items(40, seed=8, fail_every=3)
    outcome: list[tuple[int, bool]] = []

    def on_result(i, result, error):
        if error is not None:
            assert ERROR_TOKEN in error.message
        outcome.append((i, error is not None))
        return i < 30  # stop after the 31st result

    with RemoteServer(loaded.url(protocol), protocol, concurrency=4) as server:
        handed = server.infer_many("erroring", iter(items), OUTPUTS, on_result, concurrency=4)
        # everything in flight was awaited: the client is usable at once
        follow = server.infer("simple1", items[1], OUTPUTS)
    assert handed == 31
    assert outcome == [(i, i % 3 == 0) for i in range(31)]
    assert np.array_equal(follow["OUTPUT0"].array, items[1]["INPUT0"] + items[1]["INPUT1"])


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_grpc_burst_is_held_to_its_budget_not_each_request(
    server_executable, tmp_path, concurrency
):
    """`timeout_s` is the burst's: each request takes 0.3 s, far within 0.8 s, and the burst
    still times out once 0.8 s have passed since it began (a request sent later gets what
    is left as its gRPC deadline)."""
    from soak.errors import ServerTimeout
    from soak.tritonserver.process import ServerProcess
    from tests.conftest import write_model_with

    write_model_with(tmp_path / "repo", "slowish", "time.sleep(0.3)")
    process = ServerProcess(server_executable, [tmp_path / "repo"], tmp_path / "log").start()
    try:
        with RemoteServer(process.grpc_url, "grpc") as server:
            server.load_model("slowish")
            handed: list[int] = []
            with pytest.raises(ServerTimeout):
                server.infer_many(
                    "slowish",
                    iter(_items(6, seed=9)),
                    OUTPUTS,
                    lambda i, result, error: handed.append(i) or error is None,
                    concurrency=concurrency,
                    timeout_s=0.8,
                )
            assert 1 <= len(handed) < 6, handed
    finally:
        end = process.stop()
    assert end.clean, end.describe()
