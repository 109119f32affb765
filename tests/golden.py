"""A deterministic results database and the CLI commands whose output is pinned on it.

Every value is fixed (times, host, pid, noise seeds, analysis times), so the output of the
read-only commands depends only on the code: ``tests/test_golden.py`` compares it byte for
byte with ``tests/data/golden/`` (run with TZ=UTC). Regenerate with
``.venv/bin/python -m tests.golden`` only when an output is meant to change.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from soak.judging import analyze_run, finding_row
from soak.store import Store
from tests.e2e import soak

GOLDEN = Path(__file__).parent / "data" / "golden"
T0 = 1_764_000_000.0
KiB = 1024
MiB = 1024 * KiB
N = 30
WARMUP = 2
ANALYZED_AT = T0 + 100_000.0


def _add_run(
    store: Store,
    k: int,
    profile: str,
    rss_slope: float,
    servers: int = 2,
    matrix: str | None = None,
    cell: dict | None = None,
    events: bool = False,
    status: str = "passed",
) -> int:
    rng = np.random.default_rng(k)
    started = T0 + 3600.0 * k
    text = f"servers = {servers}\niterations = {N}\nwarmup = {WARMUP}\n"
    run_id = store.create_run(
        {
            "profile": profile,
            "profile_source": "<golden>",
            "profile_text": text,
            "config": {"run": {"warmup": WARMUP, "iterations": N, "servers": servers}},
            "iterations_planned": N,
            "servers": servers,
            "memory_type": "system",
            "instance_kind": "cpu",
            "inferences_per_model": 10,
            "datatype": "int32",
            "started_at": started,
            "heartbeat_at": started,
            "host": "golden-host",
            "cpu_count": 2,
            "supervisor_pid": None,
            "triton_version": "2.51.0",
            "matrix": matrix,
            "cell": cell,
        }
    )
    for i in range(N):
        rss = int(200 * MiB + rss_slope * i + rng.normal(0, 48 * KiB)) // 4096 * 4096
        uss = int(150 * MiB + rng.normal(0, 48 * KiB)) // 4096 * 4096
        sample = {
            "iteration": i,
            "kind": "quiet",
            "t": started + i + 0.5,
            "rss_bytes": rss,
            "uss_bytes": uss,
            "threads": 40 + (i // 10 if events else 0),
            "fds": 64,
        }
        evs = []
        if events and i in (5, 9, 17):
            evs.append(
                {
                    "t": started + i,
                    "kind": "failure",
                    "iteration": i,
                    "instance": 1,
                    "phase": "infer",
                    "message": "output OUTPUT0 is wrong: expected [3 3], got [3 4]",
                }
            )
        if events and i == 7:
            evs.append(
                {
                    "t": started + i,
                    "kind": "triton_warning",
                    "iteration": i,
                    "message": "W1125 14:07:22.000001 77 model.cc:9] slow to unload",
                }
            )
        row = {
            "iteration": i,
            "ended_at": started + i + 0.5,
            "wall_s": 2.0 + 0.01 * i,
            "server_lifecycles": servers,
            "model_loads": 2 * servers,
            "inferences": 20 * servers,
            "failures": 0,
            "load_max_s": 0.5 + 0.01 * i,
            "unload_max_s": 0.25,
        }
        store.write_iteration(run_id, row, [sample], [], evs)
    end = started + N + 1
    store.update_run(run_id, status=status, ended_at=end, heartbeat_at=end)
    analysis = analyze_run(store.db, run_id)
    rows = [{**finding_row(f), "analyzed_at": ANALYZED_AT} for f in analysis.findings]
    store.write_findings(run_id, rows)
    store.update_run(
        run_id, status=analysis.status, verdict=analysis.verdict, exit_code=analysis.exit_code
    )
    return run_id


def build(path: Path) -> None:
    """Two plain runs (flat, leaking) and two sessions of a two-cell matrix 'grid'."""
    store = Store(path)
    try:
        _add_run(store, 1, "cpu", 0.0)
        _add_run(store, 2, "cpu", 200 * KiB, events=True)
        for session in (0, 1):
            for servers in (2, 4):
                slope = (50 * KiB if session else 0.0) * servers if servers == 4 else 0.0
                _add_run(
                    store,
                    3 + 2 * session + servers // 4,
                    "grid",
                    slope,
                    servers=servers,
                    matrix="grid",
                    cell={"memory_type": "system", "servers": servers},
                )
    finally:
        store.close()


#: name -> command-line arguments after `soak` (--db is added).
COMMANDS: dict[str, list[str]] = {
    "runs.txt": ["runs"],
    "runs.json": ["runs", "--json"],
    "runs.csv": ["runs", "--csv"],
    "show_1.txt": ["show", "1"],
    "show_2.txt": ["show", "2"],
    "show_2.json": ["show", "2", "--json"],
    "compare_runs.txt": ["compare", "1", "2"],
    "compare_runs.json": ["compare", "1", "2", "--json"],
    "compare_matrix.txt": ["compare", "grid@4", "grid"],
    "compare_matrix.json": ["compare", "grid@4", "grid", "--json"],
    "query_growth.json": ["query", "growth", "--json", "--param", "run=2"],
    "query_list.txt": ["query", "--list"],
    "analyze_2.txt": ["analyze", "2"],
    "analyze_6.txt": ["analyze", "6"],
    "report_2.txt": ["report", "2", "--json-file", "report.json", "--junit", "report.xml"],
}
#: Files a command writes (in the database's folder), appended to its pinned output.
WRITTEN = {"report_2.txt": ["report.json", "report.xml"]}


def run_cli(db: Path, args: list[str]) -> tuple[int, str]:
    """`python -m soak.cli ARGS --db DB` in DB's folder, off a terminal, in UTC: (exit status,
    stdout and stderr)."""
    env = {**os.environ, "TZ": "UTC", "COLUMNS": "160"}
    proc = soak(*args, "--db", db.name, cwd=db.parent, env=env, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def outputs(workdir: Path) -> dict[str, str]:
    """Every pinned command's output (first line: its exit status) on a fresh database."""
    db = workdir / "golden.db"
    build(db)
    out = {}
    for name, args in COMMANDS.items():
        target = db
        if args[0] == "analyze":  # it writes findings: work on a copy
            target = workdir / f"{name}.db"
            shutil.copy(db, target)
        code, text = run_cli(target, args)
        for written in WRITTEN.get(name, []):
            text += f"--- {written}\n" + (workdir / written).read_text()
        out[name] = f"exit {code}\n{text}"
    return out


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, text in outputs(Path(tmp)).items():
            (GOLDEN / name).write_text(text)
            print(f"wrote {GOLDEN / name}")
