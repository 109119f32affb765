"""soak.triton.facts: Triton's names and log-line format without the C API, for the
supervisor's sampling and the triage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from soak.triton import backends, facts
from soak.triton.facts import LogLine, LogReader, log_message


def test_the_facts_import_without_the_c_api_binding():
    code = "import soak.triton.facts, sys; print('soak.triton.capi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_warnings_and_errors_are_read_once_and_a_partial_line_waits(tmp_path: Path):
    log = tmp_path / "triton.log"
    log.write_text("I1125 00:00:00.1 1 a.cc:1] loaded\nW1125 00:00:00.2 1 a.cc:2] careful\nE11")
    reader = LogReader(log)
    assert reader.new_lines() == [LogLine("triton_warning", "W1125 00:00:00.2 1 a.cc:2] careful")]
    with log.open("a") as f:
        f.write("25 00:00:00.3 1 a.cc:3] broke \n")
    assert reader.new_lines() == [LogLine("triton_error", "E1125 00:00:00.3 1 a.cc:3] broke")]
    assert reader.new_lines() == []
    assert log_message(reader.path.read_text().splitlines()[-1]) == "broke"


def test_a_missing_log_reads_as_no_lines(tmp_path: Path):
    assert LogReader(tmp_path / "none.log").new_lines() == []


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
