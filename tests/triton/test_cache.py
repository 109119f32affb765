"""The response cache through the C API (Triton 2.51): configured per server, one per process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from soak.triton import Server, ServerOptions, TritonError

REPO = Path(__file__).resolve().parents[2] / "examples" / "features" / "models"
CACHE = {"cache": "local", "cache_config": json.dumps({"size": 1 << 20})}


def test_a_second_server_with_a_cache_fails_and_breaks_the_first_ones_ensembles(runtime):
    """Why a profile with response_cache is refused with servers > 1 (soak.profile.loading):
    the failed ServerNew leaves the live server's ensemble unable to copy its outputs."""
    x = np.arange(4, dtype=np.float32)
    with Server(ServerOptions((REPO,), runtime.backends_dir, server_id="cache-a", **CACHE)) as a:
        a.load_model("ens_double_inc")
        try:
            assert a.infer("ens_double_inc", {"X": x}, ["Y"])["Y"].array.tolist() == [1, 3, 5, 7]
            with pytest.raises(TritonError, match="TritonCacheManager already holds a cache"):
                Server(ServerOptions((REPO,), runtime.backends_dir, server_id="cache-b", **CACHE))
            with pytest.raises(TritonError, match="uninitialized memory"):
                a.infer("ens_double_inc", {"X": x}, ["Y"])
        finally:
            a.unload_model("ens_double_inc")
