"""Decoupled models through the real core: every response until the final flag, counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from soak.triton import Server, ServerOptions

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"


@pytest.fixture(scope="module")
def server(runtime):
    server = Server(ServerOptions((EXAMPLES,), runtime.backends_dir, server_id="soak-responses"))
    server.load_model("count_decoupled")
    yield server
    server.unload_model("count_decoupled")
    server.close()


@pytest.mark.parametrize("count", [0, 1, 5])
def test_every_response_is_collected_until_the_final_flag(server, count):
    responses = server.infer_responses(
        "count_decoupled", {"COUNT": np.array([count], np.int32)}, ["INDEX"]
    )
    # The final flag arrives alone (a null response): it adds nothing to the count.
    assert len(responses) == count
    assert [r["INDEX"].array.tolist() for r in responses] == [[i] for i in range(count)]
