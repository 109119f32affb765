"""Target tritonserver finds leaks where they are, end to end through `soak run` on the real
executable (CPU): in the server process (the python backend's raising-execute leak, over HTTP
and gRPC), in its stubs (a model that keeps memory per request), in soak's own client (an
injected client leak). Each leak flags its own process's metric and no other.

Sizes measured on the 2-core machine (1 server): a raised execute keeps ~250 B + its message
per failed request in the server (347 B over HTTP, 345 B over gRPC with 100 characters;
~1.2 KiB with 1,000), error responses 0-12 B per request; a stub_leak stub ~4.2 KiB per
request; the injected client leak 1 KiB per request + ~40 B. A verdict needs 5 iterations
after the warm-up; with 100-character messages and 200 failed requests per iteration, 5 of
them (7 iterations) found the leak at 128 B per inference but not at the profiles' 256 B (95%
lower bound 44 KiB per iteration against 50): hence the longer messages here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import shm_regions, stub_processes
from tests.e2e import query
from tests.target.test_remote_e2e import client_regions, soak_run, tritonservers

pytestmark = pytest.mark.e2e

PER_MODEL = 100  # two models per server: 200 requests per iteration
BASE = f"""target = "tritonserver"
scenario = "traffic"
servers = 1
iterations = 8
warmup = 2
inferences_per_model = {PER_MODEL}
"""
#: The server profiles' rules (profiles/server-http.toml), and the stubs' by the same measure.
THRESHOLDS = """
[sampling]
objgraph_every = 0
[thresholds.rss_bytes]
slope_per_inference = {server}
[thresholds.client_rss_bytes]
slope_per_inference = 256
[thresholds.children_rss_bytes]
slope_per_inference = 256
"""


def leftovers() -> tuple[set, ...]:
    return tritonservers(), stub_processes(), shm_regions()


def left_since(before: tuple[set, ...], db: Path) -> list[set]:
    """What is new since `before` and still there 10 s later (other test sessions on the
    machine create regions seconds before their stubs name them, under load), and the client
    regions (`soak_client_shm_<pid>_<n>`) of this database's workers."""
    time.sleep(1.0)
    left = [a - b for a, b in zip(leftovers(), before, strict=True)]
    deadline = time.monotonic() + 10.0
    while any(left) and time.monotonic() < deadline:
        time.sleep(0.5)
        left = [f & a for f, a in zip(left, leftovers(), strict=True)]
    workers = {str(pid) for (pid,) in query(db, "SELECT worker_pid FROM runs")}
    return [*left, {r for r in client_regions() if r.split("_")[3] in workers}]


def findings(db: Path) -> dict[tuple[str, str], tuple[str, float]]:
    """(cell, metric) -> (verdict, slope per inference); cell is 'protocol/behaviour'."""
    rows = query(
        db,
        "SELECT r.config, f.metric, f.verdict, f.slopes_per_unit FROM findings f "
        "JOIN runs r ON r.id = f.run_id WHERE f.kind != 'site'",
    )
    out = {}
    for config, metric, verdict, slopes in rows:
        run = json.loads(config)["run"]
        per = json.loads(slopes or "{}").get("inference")
        out[(f"{run['protocol']}/{run['behaviour']}", metric)] = (verdict, per)
    return out


#: The error cells: 200 requests per iteration, a quarter of them failing with 2,000-character
#: messages. The server's RSS moves by 10-20 KiB per iteration over gRPC whatever the model
#: does, so the 256 B per inference of the server profiles needs ~200 requests per iteration
#: to judge a clean model (at 50, error_response over gRPC came out inconclusive at load 15).
#: Few of them raise (50 per iteration, 400 per run): after many raised executes Triton 2.51
#: can leave a model UNLOADING for good (here in 5 of 16 runs of 1,200-2,000 raised requests,
#: HTTP and gRPC): the unload at the end then times out (10 s) and the server waits out its
#: exit timeout (3 s instead of 30). A failed request keeps ~2.3 KiB: ~560 B per inference.
ERROR_PER_MODEL = 100
ERROR_FRACTION = 0.25
ERRORS = f"""target = "tritonserver"
scenario = "traffic"
servers = 1
iterations = 8
warmup = 2
inferences_per_model = {ERROR_PER_MODEL}
error_fraction = {ERROR_FRACTION}
error_message_chars = 2000
[matrix]
protocol = ["http", "grpc"]
behaviour = ["execute_raises", "error_response"]
[timeouts]
unload = 10
[tritonserver]
args = ["--exit-timeout-secs=3"]
"""
STUCK = "(UNLOADING) still running"
SERVER_METRICS = ("rss_bytes", "children_rss_bytes", "fds", "threads", "stubs_alive", "shm_regions")


@pytest.fixture(scope="module")
def error_paths(tmp_path_factory):
    """HTTP and gRPC x a model whose execute raises and one that returns error responses."""
    tmp = tmp_path_factory.mktemp("errors")
    before = leftovers()
    proc = soak_run(tmp, ERRORS + THRESHOLDS.format(server=256), "errors")
    return tmp / "r.db", proc, left_since(before, tmp / "r.db")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_raised_execute_leaks_in_the_server_per_failed_request(error_paths, protocol):
    db, proc, _ = error_paths
    found = findings(db)
    verdict, per_inference = found[(f"{protocol}/execute_raises", "rss_bytes")]
    assert verdict == "leak", proc.stdout[-4000:]
    # a quarter of the requests keep ~250 B + their 2,000-character message
    assert 400 <= per_inference <= 1000, per_inference
    for metric in ("client_rss_bytes", "children_rss_bytes"):
        assert found[(f"{protocol}/execute_raises", metric)][0] == "pass", metric
    verdicts = query(db, "SELECT json_extract(config, '$.run.behaviour'), verdict FROM runs")
    assert verdicts.count(("execute_raises", "leak")) == 2


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_error_responses_keep_the_server_flat(error_paths, protocol):
    db, proc, _ = error_paths
    found = findings(db)
    cell = f"{protocol}/error_response"
    # USS and PSS jump when another process mapping the same libraries exits (other test
    # sessions' servers): RSS is the server's memory measure (soak's tritonserver notes)
    judged = {m: found[(cell, m)][0] for m in SERVER_METRICS}
    assert set(judged.values()) == {"pass"}, (judged, proc.stdout[-3000:])


def test_the_error_runs_fail_no_check_and_leave_nothing(error_paths):
    db, proc, left = error_paths
    failures = query(
        db,
        "SELECT json_extract(r.config, '$.run.behaviour'), e.phase, e.message FROM events e "
        "JOIN runs r ON r.id = e.run_id WHERE e.kind = 'failure'",
    )
    # the one failure Triton may cause: a raising model stuck UNLOADING at the end (above)
    other = [f for f in failures if f[:2] != ("execute_raises", "unload") or STUCK not in f[2]]
    assert other == [], proc.stdout[-3000:]
    raising = "SELECT id FROM runs WHERE config LIKE '%execute_raises%'"
    errors = f"SELECT min(errors), max(errors) FROM iterations WHERE run_id IN ({raising})"
    ((fewest, most),) = query(db, errors)
    assert 0 < fewest <= most < 2 * ERROR_PER_MODEL
    assert left == [set()] * 4


def test_a_stub_that_keeps_memory_per_request_flags_the_stubs_rss_only(tmp_path):
    before = leftovers()
    proc = soak_run(
        tmp_path, BASE + 'behaviour = "stub_leak"\n' + THRESHOLDS.format(server=256), "stub"
    )
    found = findings(tmp_path / "r.db")
    verdict, per_inference = found[("http/stub_leak", "children_rss_bytes")]
    assert verdict == "leak", proc.stdout[-4000:]
    assert 4096 <= per_inference <= 6000, per_inference  # a 4 KiB bytearray per request
    assert found[("http/stub_leak", "rss_bytes")][0] == "pass"
    assert found[("http/stub_leak", "client_rss_bytes")][0] == "pass"
    assert left_since(before, tmp_path / "r.db") == [set()] * 4


def test_an_injected_client_leak_flags_the_client_and_not_the_server(tmp_path):
    before = leftovers()
    proc = soak_run(
        tmp_path,
        BASE
        + 'protocol = "grpc"\n[inject]\nclient_bytes_per_request = 1024\n'
        + THRESHOLDS.format(server=256),
        "client",
    )
    found = findings(tmp_path / "r.db")
    verdict, per_inference = found[("grpc/correct", "client_rss_bytes")]
    assert verdict == "leak", proc.stdout[-4000:]
    assert 1024 <= per_inference <= 1600, per_inference
    for metric in ("rss_bytes", "children_rss_bytes", "client_fds", "client_threads"):
        assert found[("grpc/correct", metric)][0] == "pass", metric
    assert left_since(before, tmp_path / "r.db") == [set()] * 4
