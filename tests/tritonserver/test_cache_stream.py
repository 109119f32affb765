"""Triton 2.51's gRPC stream and the response cache (the real executable, CPU): the reason a
profile with `streaming = true` and a response cache is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from soak.errors import ServerError
from soak.target.interface import MemoryType, ServerFeatures
from soak.tritonserver import executable
from soak.tritonserver.client import RemoteServer
from soak.tritonserver.process import ServerProcess
from soak.workload.polling import wait_unloaded

FEATURES = Path(__file__).resolve().parents[2] / "examples" / "features" / "models"


def test_every_cache_miss_over_the_grpc_stream_fails_and_the_hit_after_it_succeeds(
    server_executable, tmp_path
):
    """cached_square behind the local cache: over the stream a new input is answered
    'response output count mismatch' (the response was computed and cached all the same: the
    same input again is a hit and right); unary gRPC and HTTP misses are fine. When the first
    assertion fails, Triton fixed it: lift the refusal in soak.profile.targets."""
    args = executable.feature_args(server_executable, ServerFeatures(True, "local", 1 << 20))
    with ServerProcess(server_executable, [FEATURES], tmp_path / "log", args=args) as process:
        clients = {
            "stream": RemoteServer(process.url("grpc"), "grpc", True, "none"),
            "grpc": RemoteServer(process.url("grpc"), "grpc", False, "none"),
            "http": RemoteServer(process.url("http"), "http", False, "none"),
        }
        try:
            clients["http"].load_model("cached_square")

            def square(client: str, last: float) -> list[float]:
                x = np.array([1, 2, 3, last], np.float32)
                out = clients[client].infer("cached_square", {"X": x}, ["Y"], MemoryType.SYSTEM)
                return out["Y"].array.tolist()

            with pytest.raises(ServerError, match="response output count mismatch"):
                square("stream", 4)
            assert square("stream", 4) == [1, 4, 9, 16]  # the hit
            assert square("grpc", 5) == [1, 4, 9, 25]  # a miss
            assert square("http", 6) == [1, 4, 9, 36]
            assert square("stream", 6) == [1, 4, 9, 36]
            clients["http"].unload_model("cached_square")
            wait_unloaded(clients["http"], ["cached_square"], 30.0)
        finally:
            for client in clients.values():
                client.close()
    assert process.end is not None and process.end.clean and process.end.leftovers.empty
