"""The message protocol round-trips every message type and rejects garbage."""

from __future__ import annotations

import os

import pytest

from soak.runner import protocol as proto


@pytest.mark.parametrize(
    "message",
    [
        proto.Start(
            proto.ProfileMessage("p", "<test>", {"servers": 2}, {"load": 60.0}, {}, {}),
            "/tmp/x",
            None,
        ),
        proto.Continue(stop=True),
        proto.Hello(1, "/lib.so", "wheel", "1.34", "3.11.7"),
        proto.Hello(1, "/lib.so", "wheel", "1.34", "3.11.7", server_pids=[41, 42]),
        proto.Phase(3, 1, "load", 60.0),
        proto.Quiet(
            0, 1.5, 2, 4, 40, {"load": 0.4}, {"load": 0.3}, [], "2.51.0", {"gc_objects": 5}
        ),
        proto.Quiet(
            1,
            0.5,
            0,
            0,
            40,
            {},
            {},
            [],
            None,
            failed_loads=3,
            errors=20,
        ),
        proto.Hung(2, 0, "load", 3.0),
        proto.Failed("boom", "tb", setup=True),
        proto.Done(7),
        proto.Done(7, [{"instance": 0, "phase": "unload", "message": "simple1: stuck"}]),
    ],
)
def test_round_trip_over_a_pipe(message):
    r, w = os.pipe()
    channel = proto.Channel(r, w)
    try:
        channel.send(message)
        assert channel.receive() == message
    finally:
        channel.close()


def test_two_messages_in_one_read_are_both_delivered():
    r, w = os.pipe()
    channel = proto.Channel(r, w)
    try:
        os.write(w, proto.Done(1).encode() + proto.Continue().encode())
        assert channel.receive() == proto.Done(1)
        assert channel.pending() == proto.Continue()
        assert channel.pending() is None
    finally:
        channel.close()


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b'{"kind": "nope"}',
        b'{"kind": "done"}',
        b'{"kind": "start", "profile": [1], "workdir": "/tmp/x"}',
    ],
)
def test_garbage_is_a_protocol_error(line):
    with pytest.raises(proto.ProtocolError):
        proto.decode(line)


def test_end_of_stream_is_none():
    r, w = os.pipe()
    os.close(w)
    channel = proto.Channel(r, os.open(os.devnull, os.O_WRONLY))
    try:
        assert channel.receive() is None
    finally:
        channel.close()


def test_a_hello_that_names_no_server_process_means_the_worker_itself():
    line = b'{"kind": "hello", "pid": 7, "triton_library": "l", "triton_source": "wheel", '
    line += b'"api_version": "1.34", "python_version": "3.11.7"}'
    assert proto.decode(line).server_pids == []
