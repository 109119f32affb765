"""soak.triton.facts: Triton's names without the C API, for the supervisor's sampling."""

from __future__ import annotations

import json
import subprocess
import sys

from soak.triton import backends, facts


def test_sampling_the_process_tree_loads_no_c_api():
    code = (
        "import json, sys, soak.sampling.process; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('soak.triton'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == ["soak.triton", "soak.triton.facts"]


def test_the_backend_folder_uses_the_same_stub_name():
    assert backends.STUB_EXECUTABLE == facts.STUB_EXECUTABLE == "triton_python_backend_stub"
