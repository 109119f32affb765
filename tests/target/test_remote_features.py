"""The Triton features of profiles/features.toml on target tritonserver, through `soak run` on
the real executable (CPU): auto-complete (`--strict-model-config=false`), the user's and the
generated ensembles, the local response cache (`--cache-config`, `--cache-directory`), BLS, the
sequence model's running sums and decoupled responses, every response checked. Over HTTP
(servers scenario, two processes: one cache each) without the decoupled model, which HTTP cannot
serve; over gRPC's stream (traffic scenario) with it. Nothing left behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from soak.target.interface import ServerFeatures
from soak.tritonserver import executable
from tests.conftest import shm_regions, stub_processes
from tests.e2e import query
from tests.target.test_remote_e2e import tritonservers
from tests.test_cli import soak
from tests.workload.test_features import _profile

# profiles/features.toml without count_decoupled: 8 models of 4 inferences per lifecycle.
HTTP_MODELS = ["auto_double", "ens_double_inc", "cached_square", "accumulate"]
ALL_MODELS = HTTP_MODELS + ["count_decoupled"]


def test_the_features_become_the_flags_the_c_api_options_are(tmp_path):
    """Strict model config always (the executable's default is false, the C API's true);
    the cache from the install's caches/ folder, which holds the local cache library."""
    server_executable = executable.prepare(tmp_path)
    strict = executable.feature_args(server_executable, ServerFeatures())
    assert strict == ["--strict-model-config=true"]
    cached = executable.feature_args(server_executable, ServerFeatures(False, "local", 4096))
    assert cached[0] == "--strict-model-config=false"
    assert cached[2] == "--cache-config=local,size=4096"
    folder = cached[1].removeprefix("--cache-directory=")
    assert (Path(folder) / "local" / "libtritoncache_local.so").is_file()


def _run(tmp_path, extra: str, **run: object) -> tuple:
    before = (tritonservers(), stub_processes(), shm_regions())
    profile = _profile(tmp_path, purpose="machinery", target="tritonserver", **run)
    text = profile.read_text()
    if "count_decoupled" not in run["load"]:
        text = re.sub(r"\[model\.count_decoupled\]\n[^\[]*", "", text)
    profile.write_text(extra + text)
    db = tmp_path / "r.db"
    proc = soak("run", str(profile), "--db", str(db), "--no-progress", timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    after = (tritonservers(), stub_processes(), shm_regions())
    assert all(a <= b for a, b in zip(after, before, strict=True)), (before, after)
    return query(
        db,
        "SELECT inferences, responses, cache_hits, cache_insertions, failures "
        "FROM iterations ORDER BY iteration",
    )


@pytest.mark.e2e
def test_features_over_http_in_two_server_processes_each_with_its_cache(tmp_path):
    """Servers scenario: each iteration starts two processes, loads every model and checks
    every response (the ensembles' composed results, BLS sync, each step's running sum);
    cached_square cycles through 2 inputs, so each process inserts 2 and hits 2."""
    rows = _run(
        tmp_path,
        "",
        servers=2,
        iterations=2,
        warmup=1,
        bls="sync",
        protocol="http",
        load=HTTP_MODELS,
    )
    per_server = 8 * 4
    assert rows == [(2 * per_server, 2 * per_server, 2 * 2, 2 * 2, 0)] * 2


@pytest.mark.e2e
def test_features_over_the_grpc_stream_count_the_decoupled_responses(tmp_path):
    """Traffic scenario over gRPC's stream (decoupled models need it; the cache cannot go
    with it: tests/tritonserver/test_cache_stream.py): count_decoupled sends 3 responses per
    request, cached_square computes every response."""
    rows = _run(
        tmp_path,
        "streaming = true\n",
        response_cache="none",
        iterations=3,
        warmup=1,
        scenario="traffic",
        protocol="grpc",
        load=ALL_MODELS,
    )
    requests = 9 * 4
    assert rows == [(requests, requests + 4 * 2, 0, 0, 0)] * 3


@pytest.mark.e2e
def test_features_over_unary_grpc_insert_once_then_only_hit(tmp_path):
    """Traffic scenario, unary gRPC: the cache inserts in the first burst, then only hits."""
    rows = _run(
        tmp_path,
        "",
        iterations=3,
        warmup=1,
        scenario="traffic",
        protocol="grpc",
        load=HTTP_MODELS,
    )
    requests = 8 * 4
    assert rows == [(requests, requests, 2, 2, 0)] + [(requests, requests, 4, 0, 0)] * 2


def test_a_decoupled_model_over_http_is_refused_before_the_run_naming_the_stream(tmp_path):
    """Triton answers a decoupled model only through the C API or gRPC's stream: the
    preflight says so in one line rather than every lifecycle failing the same way."""
    from soak.target.remote import TritonServerTarget
    from soak.workload.models import ModelSettings, UserModelError, UserModels, preflight

    target = TritonServerTarget(protocol="http")
    info = target.prepare(tmp_path)
    user = UserModels(
        (Path(__file__).resolve().parents[2] / "examples" / "models",),
        (ModelSettings("count_decoupled"),),
    )
    before = tritonservers()
    try:
        with pytest.raises(UserModelError, match="'count_decoupled' is decoupled: .* stream"):
            preflight(user, info.backends_dir, target=target)
    finally:
        target.stop_all()
    assert tritonservers() <= before
