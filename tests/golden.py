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

from soak.store import Store
from tests.e2e import soak
from tests.synthetic import WARMUP, RunSpec, add_run, failures

GOLDEN = Path(__file__).parent / "data" / "golden"
T0 = 1_764_000_000.0
KiB = 1024
N = 30
ANALYZED_AT = T0 + 100_000.0


def _golden_events(i: int, started: float) -> list[dict]:
    events = failures(i, started)
    if i == 7:
        events.append(
            {
                "t": started + i,
                "kind": "triton_warning",
                "iteration": i,
                "message": "W1125 14:07:22.000001 77 model.cc:9] slow to unload",
            }
        )
    return events


def _add_run(
    store: Store,
    k: int,
    profile: str,
    rss_slope: float,
    servers: int = 2,
    matrix: str | None = None,
    cell: dict | None = None,
    events: bool = False,
) -> int:
    """Run k: started k hours after T0 on a fixed host, its findings analysed at a fixed time."""
    text = f"servers = {servers}\niterations = {N}\nwarmup = {WARMUP}\n"
    spec = RunSpec(
        profile,
        seed=k,
        rss_slope=rss_slope,
        thread_step_every=10 if events else 0,
        iterations=N,
        servers=servers,
        matrix=matrix,
        cell=cell,
        events=_golden_events if events else None,
        started_ago_s=0.0,
        run={
            "profile_source": "<golden>",
            "profile_text": text,
            "config": {"run": {"warmup": WARMUP, "iterations": N, "servers": servers}},
            "host": "golden-host",
            "cpu_count": 2,
            "supervisor_pid": None,
        },
        analyzed_at=ANALYZED_AT,
    )
    return add_run(store, spec, now=T0 + 3600.0 * k)


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
