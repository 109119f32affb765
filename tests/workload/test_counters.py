"""CounterCheck against a real tritonserver's /metrics: soak's counts confirmed, a mismatch one
line naming the model and both counts, a server without /metrics not judged."""

from __future__ import annotations

import numpy as np
import pytest

from soak.tritonserver import metrics
from soak.tritonserver.client import RemoteServer
from soak.workload.counters import CounterCheck, judged_models
from soak.workload.record import LifecycleRecord
from soak.workload.repos import ERROR_TOKEN, FAIL_MARK, Behaviour
from tests.tritonserver.conftest import (  # noqa: F401
    repositories,
    running,
    server_executable,
    wait_unloaded,
)

OUTPUTS = ["OUTPUT0", "OUTPUT1"]


class Scraped:
    """The /metrics side of a ModelServer, as ProcessServer has it."""

    def __init__(self, url: str) -> None:
        self.url = url

    def request_counters(self):
        return metrics.read(self.url)


class InProcess:
    def request_counters(self):
        return None


@pytest.fixture(scope="module")
def client(running):  # noqa: F811
    with RemoteServer(running.grpc_url, "grpc") as server:
        server.load_model("simple1")
        server.load_model("raising")
        yield server
        server.unload_model("simple1")
        server.unload_model("raising")
        wait_unloaded(server, ["simple1", "raising"])


def _send(client: RemoteServer, model: str, count: int, fail_every: int = 0) -> tuple[int, int]:
    rng = np.random.default_rng(count)
    ok = errors = 0
    for i in range(count):
        a = rng.integers(-9, 9, size=(1, 16)).astype(np.int32)
        if fail_every and i % fail_every == 0:
            a[0, 0] = FAIL_MARK
        try:
            client.infer(model, {"INPUT0": a, "INPUT1": a}, OUTPUTS)
            ok += 1
        except Exception as exc:  # noqa: BLE001 - counted
            assert ERROR_TOKEN in str(exc)
            errors += 1
    return ok, errors


def test_counts_that_agree_pass_and_are_handed_back(running, client):  # noqa: F811
    server = Scraped(running.metrics_url)
    check = CounterCheck()
    check.baseline(server, ["simple1", "raising"])
    expected = {"simple1": _send(client, "simple1", 7), "raising": _send(client, "raising", 9, 3)}
    assert expected == {"simple1": (7, 0), "raising": (6, 3)}
    lines: list[str] = []
    counted = check.check(server, ["simple1", "raising"], expected, lines.append)
    assert lines == []
    assert (counted.successes, counted.failures, counted.pending) == (13, 3, 0)
    assert counted.reasons == {"BACKEND": 3}
    # the next look counts from here
    again = check.check(server, ["simple1", "raising"], {"simple1": (0, 0)}, lines.append)
    assert lines == [] and (again.successes, again.failures) == (0, 0)


def test_a_mismatch_is_one_line_naming_the_model_and_both_counts(running, client):  # noqa: F811
    server = Scraped(running.metrics_url)
    check = CounterCheck()
    check.baseline(server, ["simple1"])
    _send(client, "simple1", 4)
    lines: list[str] = []
    check.check(server, ["simple1"], {"simple1": (5, 0)}, lines.append)
    assert lines == [
        "simple1: /metrics counted 4 successes, 0 failures, 0 pending; "
        "soak counted 5 successes, 0 failures"
    ]


def test_a_server_without_metrics_is_not_judged():
    check = CounterCheck()
    check.baseline(InProcess(), ["m"])
    lines: list[str] = []
    assert check.check(InProcess(), ["m"], {"m": (1, 0)}, lines.append) is None
    assert lines == []


@pytest.mark.parametrize(
    "version, expected",
    [("2.43.0", {"simple1": (4, 2)}), ("2.51.0", {"simple1": (6, 0)}), ("2.47.0", {})],
)
def test_error_responses_are_expected_on_metrics_as_the_version_counts_them(version, expected):
    """2.43's /metrics counted an error response as a failure, 2.51's as a success; a version
    between, not run, is not held to an exact count."""
    record = LifecycleRecord(instance=0)
    record.answered("simple1", ok=4, errors=2)
    judged = judged_models(
        record, ["simple1"], ["simple1"], Behaviour.ERROR_RESPONSE, triton_version=version
    )
    assert judged == expected
    correct = judged_models(record, ["simple1"], ["simple1"], Behaviour.CORRECT, False, version)
    assert correct == {"simple1": (4, 2)}
