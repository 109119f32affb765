"""`soak compare --upgrade OLD NEW` on stored runs: a synthetic matrix on two Triton versions
whose cells differ only in `triton`, with known slopes per inference, a crash and a cell that
never ran on the newer version."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from soak.cli.common import SoakGroup
from soak.cli.triage import COMMANDS as TRIAGE_COMMANDS
from soak.errors import StoreError
from soak.run_analysis import analyze_run, finding_row
from soak.store import Store
from soak.triage.upgrade import upgrade

KiB = 1024
N_ITER = 30
WARMUP = 2
INFERENCES = 1000  # per iteration: 2 servers x 2 models x 250
PROFILE = (
    f"scenario = 'traffic'\niterations = {N_ITER}\nwarmup = {WARMUP}\n"
    "[thresholds.rss_bytes]\nslope_per_inference = 256\n"
)
OLD, NEW = "2.43.0", "2.51.0"


def add_cell(
    store: Store,
    behaviour: str,
    triton: str,
    bytes_per_inference: float,
    seed: int,
    status: str = "passed",
    iterations: int = N_ITER,
) -> int:
    """One traffic run of the matrix 'up' whose RSS grows by `bytes_per_inference`."""
    rng = np.random.default_rng(seed)
    run_id = store.create_run(
        {
            "profile": "up",
            "profile_source": "<test>",
            "profile_text": PROFILE,
            "config": {"run": {"warmup": WARMUP, "iterations": N_ITER}},
            "iterations_planned": N_ITER,
            "scenario": "traffic",
            "behaviour": behaviour,
            "started_at": 1000.0 + seed,
            "triton_version": triton,
            "triton_home": f"/homes/{triton}",
            "matrix": "up",
            "cell": {"behaviour": behaviour, "triton": triton},
        }
    )
    for i in range(iterations):
        rss = 200 * 1024 * KiB + bytes_per_inference * INFERENCES * i + rng.normal(0, 4 * KiB)
        sample = {"iteration": i, "kind": "quiet", "t": 1000.0 + i, "rss_bytes": int(rss)}
        sample |= {"uss_bytes": int(rss) - 50 * 1024 * KiB, "fds": 64, "threads": 40}
        row = {
            "iteration": i,
            "ended_at": 1000.0 + i,
            "wall_s": 1.0,
            "server_lifecycles": 0,
            "model_loads": 0,
            "inferences": INFERENCES,
            "failures": 0,
        }
        events = []
        if status == "crashed" and i == iterations - 1:
            events = [{"t": 1000.0 + i, "kind": "failure", "iteration": i, "message": "lost"}]
        store.write_iteration(run_id, row, [sample], [], events)
    reason = "worker killed by SIGSEGV" if status == "crashed" else "finished"
    store.update_run(run_id, status=status, iterations_done=iterations, reason=reason)
    if status == "passed":
        analysis = analyze_run(store.db, run_id)
        store.write_findings(run_id, [finding_row(f) for f in analysis.findings])
        store.update_run(run_id, status=analysis.status, verdict=analysis.verdict)
    return run_id


def build(tmp_path, new_slopes: dict[str, float], **new_cell) -> Store:
    store = Store(tmp_path / "up.db")
    for k, (behaviour, slope) in enumerate(new_slopes.items()):
        add_cell(store, behaviour, OLD, 10.0, seed=10 + k)
        add_cell(store, behaviour, NEW, slope, seed=20 + k, **new_cell.get(behaviour, {}))
    return store


def compare_cli(store: Store, *args: str):
    group = SoakGroup(name="soak", commands=TRIAGE_COMMANDS)
    runner = CliRunner(env={"COLUMNS": "200"})
    return runner.invoke(
        group,
        ["compare", "--upgrade", OLD, NEW, *args, "--db", str(store.path)],
        catch_exceptions=False,
    )


def verdicts(result, metric: str = "rss_bytes") -> dict[tuple[str, str], str]:
    return {
        (c.cell["behaviour"], m.unit): m.verdict
        for c in result.cells
        for m in c.metrics
        if m.metric == metric
    }


def test_a_higher_slope_per_inference_on_the_newer_version_is_a_regression(tmp_path):
    store = build(tmp_path, {"correct": 10.0, "execute_raises": 2048.0})
    result = upgrade(store.db, OLD, NEW, "up")
    seen = verdicts(result)
    assert seen[("execute_raises", "inference")] == "worse"
    assert seen[("correct", "inference")] == "same"
    assert seen[("correct", "iteration")] == "same"
    assert int(result.exit_code) == 1
    worse = next(
        m
        for c in result.cells
        for m in c.metrics
        if c.cell == {"behaviour": "execute_raises"}
        and m.metric == "rss_bytes"
        and m.unit == "inference"
    )
    assert worse.threshold == 256.0
    assert worse.new.slope == pytest.approx(2048.0, rel=0.02)
    assert worse.old.slope == pytest.approx(10.0, abs=3.0)
    done = compare_cli(store, "up")
    assert done.exit_code == 1, done.output
    assert "worse: [behaviour=execute_raises] rss_bytes per inference" in done.output
    assert f"Triton {NEW} regresses" in done.output


def test_equal_slopes_are_the_same_exit_0(tmp_path):
    store = build(tmp_path, {"correct": 10.0, "error_response": 10.0})
    result = upgrade(store.db, OLD, NEW)  # the newest matrix with both versions
    assert result.matrix == "up"
    assert set(verdicts(result).values()) == {"same"}
    assert int(result.exit_code) == 0
    done = compare_cli(store)
    assert done.exit_code == 0, done.output
    data = json.loads(compare_cli(store, "--json").output)
    assert data["exit_code"] == 0 and len(data["cells"]) == 2
    assert data["cells"][0]["new"]["triton_home"] == f"/homes/{NEW}"
    assert "fds, threads" in done.output  # flat on both: one line, not rows


def test_a_cell_that_crashed_on_the_newer_version_is_named(tmp_path):
    store = build(
        tmp_path,
        {"correct": 10.0, "execute_raises": 10.0},
        execute_raises={"status": "crashed", "iterations": 12},
    )
    result = upgrade(store.db, OLD, NEW, "up")
    (crashed,) = [c for c in result.cells if c.new_problems]
    assert crashed.cell == {"behaviour": "execute_raises"}
    assert crashed.new_problems == [
        "crashed on the newer version: worker killed by SIGSEGV",
        "1 failure(s) on the newer version, none before (first: lost)",
    ]
    assert int(result.exit_code) == 1
    done = compare_cli(store, "up")
    assert done.exit_code == 1
    assert f"new in {NEW}: crashed on the newer version" in done.output


def test_a_side_that_never_ran_exits_2(tmp_path):
    store = build(tmp_path, {"correct": 10.0})
    add_cell(store, "error_response", OLD, 10.0, seed=30)  # never on NEW
    add_cell(store, "execute_raises", OLD, 10.0, seed=31)
    add_cell(store, "execute_raises", NEW, 10.0, seed=32, status="failed", iterations=0)
    result = upgrade(store.db, OLD, NEW, "up")
    sides = {c.cell["behaviour"]: c.new for c in result.cells}
    assert sides["error_response"].run_id is None and not sides["error_response"].ran
    assert sides["execute_raises"].status == "failed" and not sides["execute_raises"].ran
    assert int(result.exit_code) == 2
    done = compare_cli(store, "up")
    assert done.exit_code == 2
    assert f"not compared: no iteration ran on {NEW}" in done.output


def test_bad_versions_are_one_line(tmp_path):
    store = build(tmp_path, {"correct": 10.0})
    with pytest.raises(StoreError, match="no matrix in this database has cells on Triton 2.40.0"):
        upgrade(store.db, "2.40.0", NEW)
    with pytest.raises(StoreError, match="has no cell on Triton 2.40.0 or 2.39.0"):
        upgrade(store.db, "2.40.0", "2.39.0", "up")
    with pytest.raises(StoreError, match="twice"):
        upgrade(store.db, NEW, "2.51", "up")
