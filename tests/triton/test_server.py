"""The binding's ownership rules, proven on a real server (CPU): nothing grows per request."""

from __future__ import annotations

import numpy as np
import psutil
import pytest

from soak.analysis.slope import theil_sen
from soak.sampling.heap import malloc_trim
from soak.triton import Server, ServerOptions, TritonError
from soak.workload.repos import ERROR_TOKEN, FAIL_MARK, Behaviour, write_model

REQUESTS = 2000
WARMUP = 400
EVERY = 50
MESSAGE_CHARS = 4000


def _rss() -> int:
    malloc_trim()
    return psutil.Process().memory_info().rss


def test_error_responses_do_not_grow_rss(runtime, tmp_path):
    """TRITONSERVER_InferenceResponseError returns a new error each call; the binding must
    delete it. Before the fix this grew ~4.2 KB per request with a 4,000-character message."""
    write_model(
        tmp_path / "repo", "errors", behaviour=Behaviour.ERROR_RESPONSE, message_chars=MESSAGE_CHARS
    )
    a = np.zeros((1, 16), np.int32)
    a[0, 0] = FAIL_MARK
    inputs = {"INPUT0": a, "INPUT1": np.ones((1, 16), np.int32)}
    options = ServerOptions((tmp_path / "repo",), runtime.backends_dir, server_id="soak-errors")
    counts, rss = [], []
    with Server(options) as server:
        server.load_model("errors")
        try:
            for i in range(REQUESTS):
                with pytest.raises(TritonError) as caught:
                    server.infer("errors", inputs, ["OUTPUT0", "OUTPUT1"])
                if i == 0:
                    assert ERROR_TOKEN in caught.value.message
                    assert len(caught.value.message) >= MESSAGE_CHARS
                if i >= WARMUP and i % EVERY == 0:
                    counts.append(i)
                    rss.append(_rss())
        finally:
            server.unload_model("errors")
            while any(m.get("state") != "UNAVAILABLE" for m in server.model_index()):
                pass
    slope = theil_sen(np.array(counts, float), np.array(rss, float))
    assert slope.slope < 256, f"RSS grows {slope.slope:.0f} B per error response"


def test_setup_shortens_the_gil_switch_interval(runtime):
    """Triton's threads deliver every response and release to soak through the GIL; at
    Python's default 5 ms they queue behind the submitting thread (the traffic bench)."""
    import sys

    from soak.triton import GIL_SWITCH_INTERVAL_S

    assert sys.getswitchinterval() <= GIL_SWITCH_INTERVAL_S < 0.005


def test_setup_turns_grpcs_fork_handlers_off_unless_the_user_chose(tmp_path):
    """The python backend forks its stubs from the process that hosts Triton; gRPC's fork
    handler can block such a child before exec (soak.triton.setup)."""
    import os
    import subprocess
    import sys

    script = (
        "import os, sys; from soak.triton import setup; setup(sys.argv[1]); "
        "print(os.environ.get('GRPC_ENABLE_FORK_SUPPORT'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    for given, want in ((None, "0"), ("1", "1")):
        run_env = env if given is None else {**env, "GRPC_ENABLE_FORK_SUPPORT": given}
        out = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / (given or "unset"))],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert out.stdout.strip().splitlines()[-1] == want
