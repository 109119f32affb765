"""soak.bench.cpp_anchor: Triton's multi_server.cc made concurrent, compiled and run for real."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from soak.bench import cli, cpp_anchor


def _ours() -> set[str]:
    out = subprocess.run(["pgrep", "-af", "soak-bench-cpp-"], capture_output=True, text=True).stdout
    return {line for line in out.splitlines() if "pgrep" not in line}


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
def test_multi_server_compiles_and_times_an_iteration_of_two_servers():
    shm_before = set(os.listdir("/dev/shm"))
    result = cpp_anchor.multi_server(servers=2, iterations=1)
    assert result["returncode"] == 0, result.get("output_tail")
    assert len(result["walls_s"]) == 2 and result["median_s"] > 0
    assert set(result["phase_median_s"]) == {
        "server_new",
        "load",
        "infer",
        "unload",
        "stop",
        "delete",
    }
    assert _ours() == set()
    assert set(os.listdir("/dev/shm")) - shm_before == set()
    row = cli.multi_server_row({"median_s": 2 * result["median_s"]}, result)
    assert "= x2.00" in row[1]


def test_missing_gpp_is_one_line(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    result = cpp_anchor.multi_server()
    assert result == {"missing": "no C++ anchor: g++ is not installed"}
    assert cli.multi_server_row({"median_s": 1.0}, result)[1] == result["missing"]


def test_missing_header_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(cpp_anchor, "HEADER", tmp_path / "tritonserver.h")
    why = cpp_anchor.missing()
    assert why is not None and "header" in why and str(tmp_path) in why
