"""A user's own model that hangs or dies: the run ends within the profile's timeouts, and its
reason (or an event) names the model and the phase; nothing is left behind.

End to end through `python -m soak.cli run` (tests.runner.test_faults' helpers), with a tiny
python-backend model written per test.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.e2e import query
from tests.runner.test_faults import output, run_soak, track  # noqa: F401 - track: a fixture

pytestmark = pytest.mark.e2e

CONFIG = """\
backend: "python"
max_batch_size: 0
input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [4] }]
output [{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [4] }]
instance_group [{ kind: KIND_CPU count: 1 }]
"""

MODEL = """\
import os
import re
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        {init}

    def execute(self, requests):
        {execute}
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]))
        return responses
"""

PROFILE = """\
servers = 1
iterations = 3
warmup = 1
inferences_per_model = 2
[timeouts]
load = {load}
infer = 2
unload = 5
[models]
repositories = ["repo"]
load = ["slowpoke"]
"""

SLACK_S = 8.0


def write_case(tmp_path: Path, init: str = "pass", execute: str = "pass", load: float = 5) -> Path:
    model = tmp_path / "repo" / "slowpoke"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(CONFIG)
    (model / "1" / "model.py").write_text(MODEL.format(init=init, execute=execute))
    profile = tmp_path / "p.toml"
    profile.write_text(PROFILE.format(load=load))
    return profile


def test_a_hung_initialize_in_the_preflight_ends_within_the_load_timeout(tmp_path, track):  # noqa: F811
    profile = write_case(tmp_path, init="time.sleep(3600)", load=5)
    db = tmp_path / "r.db"
    began = time.monotonic()
    proc = run_soak(track, profile, db)
    took = time.monotonic() - began
    assert proc.returncode == 2, output(proc)
    ((status, reason),) = query(db, "SELECT status, reason FROM runs")
    assert status == "hung", reason
    assert "phase load" in reason and "'slowpoke'" in reason and "preflight" in reason, reason
    assert "startup" not in reason
    assert took < 5 + SLACK_S + 15, f"{took:.1f} s"  # + the run's start (Triton, a server)
    assert proc.stdout.rstrip().splitlines()[-1].startswith("run 1: hung: phase load"), output(proc)
    track.check()


@pytest.mark.parametrize(
    "kind, execute, said",
    [
        ("hangs", "time.sleep(3600)", "phase infer of instance 0"),
        ("exits", "os._exit(1)", "phase unload of instance 0"),
    ],
)
def test_a_model_that_hangs_or_dies_in_execute_is_named(tmp_path, track, kind, execute, said):  # noqa: F811
    profile = write_case(tmp_path, execute=execute)
    db = tmp_path / "r.db"
    run_soak(track, profile, db)
    ((status, reason),) = query(db, "SELECT status, reason FROM runs")
    print(f"\n{kind}: {status}: {reason}")
    assert status == "hung" and said in reason and "slowpoke" in reason, reason
    if kind == "exits":  # the stub's death, and what Triton said of it, are recorded
        events = dict(query(db, "SELECT kind, message FROM events WHERE kind != 'stack_dump'"))
        assert re.search(
            r"stub process \d+ of model 'slowpoke' exited", events.get("stub_exit", "")
        )
        failures = [m for (m,) in query(db, "SELECT message FROM events WHERE kind = 'failure'")]
        assert any("slowpoke" in m and "not healthy" in m for m in failures), failures
    track.check()
