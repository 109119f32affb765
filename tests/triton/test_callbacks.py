"""The response callback runs on the model instance's thread and only hands the response over:
the caller's thread reads and deletes it (in arrival order, once), unless nobody waits for it
any more (an abandoned request), when the callback deletes it as it comes."""

from __future__ import annotations

import pytest

from soak.target.interface import MemoryType
from soak.triton import callbacks, capi
from soak.triton.callbacks import Inference, registry


class _FakeLib:
    def __init__(self) -> None:
        self.deleted: list[int] = []

    def TRITONSERVER_InferenceResponseDelete(self, response: int) -> None:  # noqa: N802
        self.deleted.append(response)


@pytest.fixture
def fake(runtime, monkeypatch):
    cb = registry()
    lib = _FakeLib()
    read: list[int] = []
    monkeypatch.setattr(callbacks, "triton_lib", lambda: lib)
    monkeypatch.setattr(callbacks, "read_response", lambda _inf, r: read.append(r))
    made: list[Inference] = []

    def inference() -> Inference:
        inf = Inference(next(cb.ids), MemoryType.SYSTEM)
        cb.start(inf)
        made.append(inf)
        return inf

    yield cb, lib, read, inference
    for inf in made:
        cb.done(inf)
        cb.abandoned[:] = [(r, i) for r, i in cb.abandoned if i is not inf]


def test_responses_wait_for_the_callers_drain_and_come_out_in_order_once(fake):
    cb, lib, read, inference = fake
    inf = inference()
    cb._response(11, 0, inf.ident)
    cb._response(12, capi.RESPONSE_FINAL, inf.ident)
    assert (read, lib.deleted, inf.completed.is_set()) == ([], [], True)
    cb.drain(inf)
    cb.drain(inf)
    assert (read, lib.deleted, inf.pending) == ([11, 12], [11, 12], [])


def test_a_kept_response_is_read_but_never_deleted(fake):
    cb, lib, read, inference = fake
    inf = inference()
    inf.keep_response = True
    cb._response(21, capi.RESPONSE_FINAL, inf.ident)
    cb.drain(inf)
    assert (read, lib.deleted) == ([21], [])
    assert cb.kept_responses.pop() == 21


def test_an_abandoned_requests_responses_are_deleted_as_they_come(fake):
    cb, lib, read, inference = fake
    inf = inference()
    cb._response(31, 0, inf.ident)
    cb.abandon(1234, inf)  # what came before is freed at once
    assert lib.deleted == [31]
    cb._response(32, capi.RESPONSE_FINAL, inf.ident)
    assert (lib.deleted, inf.pending) == ([31, 32], [])
    assert (1234, inf) in cb.abandoned


def test_a_response_nobody_knows_is_deleted_at_once(fake):
    cb, lib, read, _ = fake
    cb._response(41, capi.RESPONSE_FINAL, 987654321)
    assert (read, lib.deleted) == ([], [41])
