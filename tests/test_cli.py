"""The command line, end to end on the real Triton core (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e import soak

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
def test_smoke_run_prints_phases_and_passes(tmp_path):
    proc = soak(
        "run", "smoke", "--iterations", "2", "--db", str(tmp_path / "r.db"), "--no-progress"
    )
    # Two iterations after one of warm-up support no verdict; smoke is a machinery check
    # (purpose = "machinery"), so every check passing is a pass, exit 0, saying why.
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("iteration ")]
    assert len(lines) == 2
    assert all(" ok " in line and "load=" in line and "unload=" in line for line in lines)
    assert "status passed, verdict inconclusive" in proc.stdout
    assert (
        "run 1: machinery check: 2 iterations: a verdict needs at least 5 after the warm-up (1);"
        " run the cpu profile for one\n"
    ) in proc.stdout


def test_gpu_memory_on_cpu_machine_is_refused(tmp_path):
    from tests.conftest import cuda_problem

    if cuda_problem() is None:
        pytest.skip("this machine has a GPU")
    proc = soak("run", "smoke", "--memory-type", "gpu", "--db", str(tmp_path / "r.db"))
    assert proc.returncode == 2
    assert "gpu" in proc.stderr and "GPU" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_override_names_the_flag(tmp_path):
    proc = soak("run", "smoke", "--servers", "0", "--db", str(tmp_path / "r.db"))
    assert proc.returncode == 2
    assert "--servers" in proc.stderr and "out of range" in proc.stderr
