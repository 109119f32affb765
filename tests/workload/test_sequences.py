"""Sequence models: what soak reads from the sequence batcher's config (slots, idle timeout,
implicit state), how it paces sequences behind abandoned ones, and two behaviours of Triton
2.51 that decide how (seen on the real core, CPU)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from soak.target.interface import SEQUENCE_END, SEQUENCE_START, MemoryType
from soak.workload import sequences
from soak.workload.models import ModelSettings, build_plan, exercise, plan_on

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "features"
STATE = {
    "input_name": "INPUT_STATE",
    "output_name": "OUTPUT_STATE",
    "data_type": "TYPE_INT32",
    "dims": ["1"],
}


def test_slots_are_per_instance_candidates_or_batch_size_times_instances():
    """As the core's SequenceBatchScheduler::Create counts them; the idle timeout comes as
    a string in the config's JSON (uint64) and defaults to Triton's 1 s."""
    seq = sequences.sequence_config
    assert seq({}) is None
    plain = seq({"sequence_batching": {}})
    assert (plain.slots, plain.idle_s) == (1, 1.0)
    batched = seq(
        {
            "max_batch_size": 4,
            "sequence_batching": {"max_sequence_idle_microseconds": "2500000"},
            "instance_group": [{"count": 2, "kind": "KIND_CPU"}],
        }
    )
    assert (batched.slots, batched.idle_s) == (8, 2.5)
    oldest = seq(
        {
            "max_batch_size": 4,
            "sequence_batching": {"oldest": {"max_candidate_sequences": 3}},
            "instance_group": [{"count": 1, "kind": "KIND_GPU", "gpus": [0, 1]}],
        }
    )
    assert oldest.slots == 6
    state = seq({"sequence_batching": {"state": [STATE]}})
    assert (state.state_inputs, state.state_outputs) == ({"INPUT_STATE"}, {"OUTPUT_STATE"})


def _metadata(*inputs: str, outputs=("SUM",)) -> dict:
    return {
        "inputs": [{"name": n, "datatype": "INT32", "shape": [1]} for n in inputs],
        "outputs": [{"name": n, "datatype": "INT32", "shape": [1]} for n in outputs],
    }


def test_the_plan_never_sends_an_implicit_state_input_it_can_leave_out():
    """The state is Triton's: not sent when the config does not list it or lists it optional,
    nor asked for as an output; listed as required (Triton then wants it sent and overrides
    it), it goes as zeros, also where the data file has no entry for it."""
    config = {"sequence_batching": {"state": [STATE]}}
    settings = ModelSettings("acc", input_data=EXAMPLES / "data" / "accumulate.json")
    unlisted = build_plan(_metadata("X"), config, settings)
    assert [t.name for t in unlisted.inputs] == ["X"]
    assert [set(c.inputs) for c in unlisted.cases] == [{"X"}] * 4
    optional = build_plan(
        _metadata("X", "INPUT_STATE", outputs=("SUM", "OUTPUT_STATE")),
        {**config, "input": [{"name": "INPUT_STATE", "optional": True}]},
        ModelSettings("acc", shape={"INPUT_STATE": (1,)}),
    )
    assert [t.name for t in optional.inputs] == ["X"]
    assert [t.name for t in optional.outputs] == ["SUM"]
    required = build_plan(_metadata("X", "INPUT_STATE"), config, settings)
    assert required.placeholders == {"INPUT_STATE"}
    assert all(c.inputs["INPUT_STATE"].tolist() == [0] for c in required.cases)
    random = build_plan(_metadata("X", "INPUT_STATE"), config, ModelSettings("acc"))
    sent = random.request(0, np.random.default_rng(0)).inputs
    assert sent["INPUT_STATE"].tolist() == [0] and set(sent) == {"X", "INPUT_STATE"}


class _Recorder:
    def __init__(self):
        self.sent = []

    def infer(self, model, inputs, outputs, *args, sequence=(0, 0), **kwargs):
        self.sent.append(sequence)
        return {}


def test_a_start_waits_until_triton_has_reaped_the_abandoned_sequences_filling_the_slots(
    monkeypatch,
):
    """One slot, 5 s idle: after an abandoned sequence the next START waits out its idle
    timeout (from its last request); with two slots it need not wait."""
    clock = [100.0]
    slept = []

    def sleep(s):
        slept.append(s)
        clock[0] += s

    monkeypatch.setattr(sequences.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(sequences.time, "sleep", sleep)
    settings = ModelSettings("s", sequence_length=2, sequence_abandon_fraction=1.0)
    one_slot = {"sequence_batching": {"max_sequence_idle_microseconds": 5_000_000}}
    plan = build_plan({"inputs": [], "outputs": []}, one_slot, settings)
    server = _Recorder()
    exercise(server, plan, 6, np.random.default_rng(0))
    assert slept == [pytest.approx(5 + sequences.REAP_MARGIN_S)] * 2
    assert [flags for _, flags in server.sent] == [SEQUENCE_START, 0] * 3
    two_slots = {**one_slot, "instance_group": [{"count": 2}]}
    slept.clear()
    plan = build_plan({"inputs": [], "outputs": []}, two_slots, settings)
    exercise(_Recorder(), plan, 4, np.random.default_rng(0))
    assert slept == []


@pytest.fixture
def one_second_accumulate(tmp_path):
    """examples/features' accumulate with a 1 s idle timeout (one slot, one instance)."""
    shutil.copytree(EXAMPLES / "models" / "accumulate", tmp_path / "accumulate")
    config = tmp_path / "accumulate" / "config.pbtxt"
    config.write_text(config.read_text().replace("5000000", "1000000"))
    return tmp_path


def test_triton_reaps_a_sequence_that_waited_its_idle_timeout_in_the_backlog(
    runtime, one_second_accumulate
):
    """Triton 2.51's behaviour that soak paces around: sequence A is abandoned; B's START at
    once waits in the backlog for A's idle timeout and is answered, but the reaper (which
    counts B's idle time from its START's arrival, backlog included) force-ends B at its next
    pass ~50 ms later, so B's next request is refused. Had B started after A was reaped, it
    would live (the second half). When the first half fails, Triton changed: soak's wait in
    soak.workload.sequences may then go."""
    from soak.errors import ServerError
    from soak.triton import Server, ServerOptions

    options = ServerOptions((one_second_accumulate,), runtime.backends_dir, server_id="soak-reap")
    with Server(options) as server:
        server.load_model("accumulate")

        def send(cid, x, flags):
            out = server.infer(
                "accumulate",
                {"X": np.array([x], np.int32)},
                ["SUM"],
                MemoryType.SYSTEM,
                10.0,
                sequence=(cid, flags),
            )
            return int(out["SUM"].array[0])

        try:
            base = sequences.next_id() + 1000
            send(base, 3, SEQUENCE_START)  # A: never ended
            assert send(base + 1, 5, SEQUENCE_START) == 5  # B: answered after A's timeout
            time.sleep(0.3)  # past the reaper's next pass
            with pytest.raises(ServerError, match="must specify the START flag"):
                send(base + 1, 1, SEQUENCE_END)
            send(base + 2, 3, SEQUENCE_START)  # C: never ended
            time.sleep(1.0 + 2 * sequences.REAP_MARGIN_S)  # what soak waits
            assert send(base + 3, 5, SEQUENCE_START) == 5
            time.sleep(0.3)
            assert send(base + 3, 1, SEQUENCE_END) == 6
        finally:
            server.unload_model("accumulate")


def test_the_python_backend_of_2_51_gives_implicit_state_its_initial_value_at_every_step(
    runtime,
):
    """accumulate_state keeps its sum in implicit state. soak plans it without the state
    input and Triton supplies it, but 2.51's python backend never returns OUTPUT_STATE to
    Triton (libtriton_python.so imports no TRITONBACKEND_StateNew/StateUpdate; Triton's docs
    name onnxruntime, tensorrt and pytorch as the backends with implicit state), so each step
    sees the initial zero: SUM = X. When this fails, the python backend carries the state:
    give accumulate_state running sums to check and add it to profiles/features.toml."""
    from soak.triton import Server, ServerOptions

    options = ServerOptions((EXAMPLES / "models",), runtime.backends_dir, server_id="soak-state")
    with Server(options) as server:
        server.load_model("accumulate_state")
        try:
            plan = plan_on(
                server,
                ModelSettings(
                    "accumulate_state",
                    input_data=EXAMPLES / "data" / "accumulate_state_2_51.json",
                    sequence_length=4,
                ),
            )
            assert [t.name for t in plan.inputs] == ["X"] and plan.placeholders == frozenset()
            done = exercise(server, plan, 8, np.random.default_rng(0))
            assert (done.requests, done.problems) == (8, [])
        finally:
            server.unload_model("accumulate_state")
