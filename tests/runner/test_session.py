"""soak.runner.session: a soak run as one library call (real Triton, CPU), and its up-front
checks (the GPU check looks where the profile's Triton lives)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from soak import profile as profiles
from soak.errors import ExitCode
from soak.phases import PHASES
from soak.profile import parse
from soak.runner import session
from soak.runner.session import gpu_problem
from soak.triton import capi

GRID = (
    "iterations = 3\nwarmup = 1\ninferences_per_model = 2\nservers = 1\n"
    '[matrix]\ndatatype = ["int32", "fp32"]\n'
)


def stored(db: Path) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT r.id, r.status, r.verdict, r.exit_code, COUNT(f.metric) "
            "FROM runs r LEFT JOIN findings f ON f.run_id = r.id GROUP BY r.id ORDER BY r.id"
        ).fetchall()
    finally:
        conn.close()


@pytest.mark.e2e
def test_run_judges_and_stores_every_cell(tmp_path: Path) -> None:
    prof = profiles.parse(GRID, str(tmp_path / "grid.toml"), "grid")
    db = tmp_path / "r.db"
    store = session.prepare(prof, db)
    cells, iterations, done = [], [], []
    analyses = session.run(
        prof,
        store,
        on_cell=lambda cell: cells.append(cell.cell),
        on_iteration=lambda view: iterations.append(view.iteration),
        on_done=lambda outcome, analysis: done.append((outcome.run_id, analysis.run_id)),
    )
    store.close()
    assert cells == [{"datatype": "int32"}, {"datatype": "fp32"}]
    assert iterations == [0, 1, 2, 0, 1, 2]
    assert [a.run_id for a in analyses] == [1, 2] and done == [(1, 1), (2, 2)]
    rows = stored(db)
    assert [(r[1], r[2], r[3]) for r in rows] == [
        (a.status, a.verdict, int(a.exit_code)) for a in analyses
    ]
    assert all(r[4] == len(a.findings) > 0 for r, a in zip(rows, analyses, strict=True))


@pytest.mark.e2e
def test_a_stop_ends_the_cell_after_its_iteration_and_starts_no_other(tmp_path: Path) -> None:
    prof = profiles.parse(GRID, str(tmp_path / "grid.toml"), "grid")
    store = session.prepare(prof, tmp_path / "r.db")
    stopper = session.Stopper()
    analyses = session.run(prof, store, on_iteration=lambda view: stopper.stop(), stopper=stopper)
    store.close()
    assert len(analyses) == 1
    assert analyses[0].status == "interrupted"
    assert analyses[0].exit_code in (ExitCode.LEAK, ExitCode.INCONCLUSIVE)
    assert stored(tmp_path / "r.db")[0][1] == "interrupted"


def test_a_stop_before_the_run_starts_nothing(tmp_path: Path) -> None:
    prof = profiles.parse(GRID, str(tmp_path / "grid.toml"), "grid")
    stopper = session.Stopper()
    stopper.stop()
    store = session.prepare(prof, tmp_path / "r.db")
    assert session.run(prof, store, stopper=stopper) == []
    store.close()
    assert stored(tmp_path / "r.db") == []


def test_the_package_offers_the_run_without_importing_it_up_front() -> None:
    import subprocess
    import sys

    code = (
        "import sys, soak; assert 'soak.runner.session' not in sys.modules; "
        "from soak.runner import session; "
        "assert soak.run is session.run and soak.prepare is session.prepare; "
        "assert soak.load_profile is __import__('soak.profile').profile.load"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def only_install_at(tmp_path: Path, monkeypatch) -> Path:
    """A Triton home laid out like NVIDIA's containers, and no other Triton on the machine.

    Its lib/ links the wheel's core and libcudart; the wheel itself is then hidden.
    """
    wheel = capi.locate()
    lib = tmp_path / "home" / "lib"
    lib.mkdir(parents=True)
    (lib / "libtritonserver.so").symlink_to(wheel.library)
    for cudart in wheel.library_dir.glob("libcudart*.so*"):
        (lib / cudart.name).symlink_to(cudart)
    monkeypatch.delenv(capi.ENV_HOME, raising=False)
    monkeypatch.setattr(capi, "CONTAINER_HOME", tmp_path / "no-container")
    monkeypatch.setattr(capi, "_from_wheel", lambda: None)
    return lib.parent


def test_gpu_check_uses_the_profiles_triton_home(tmp_path, monkeypatch):
    home = only_install_at(tmp_path, monkeypatch)
    profile = parse(f'memory_type = "gpu"\ntriton_home = "{home}"\n', "gpu.toml")
    # Without the profile the machine has no Triton at all ...
    assert "no Triton core found" in (gpu_problem() or "")
    # ... with it, the question is only whether CUDA answers.
    problem = gpu_problem(profile)
    assert problem is None or "Triton" not in problem
    if problem is not None:
        assert "CUDA" in problem  # e.g. "CUDA reports no usable device (cuda error 35: ...)"


@pytest.mark.gpu
def test_gpu_device_cuda_does_not_see_is_a_problem(gpu):
    assert gpu_problem(parse('memory_type = "gpu"\n')) is None
    problem = gpu_problem(parse('memory_type = "gpu"\ngpu_device = 63\n'))
    assert problem is not None and problem.startswith("gpu_device = 63 names no device")


def test_a_wrong_triton_home_is_reported_as_such_not_as_a_missing_gpu(tmp_path):
    from soak.errors import EnvironmentProblem
    from soak.runner.session import prepare

    missing = tmp_path / "nowhere"
    profile = parse(f'memory_type = "gpu"\ntriton_home = "{missing}"\n', "gpu.toml")
    with pytest.raises(EnvironmentProblem, match=f"triton_home points at {missing}"):
        prepare(profile, tmp_path / "r.db")
    assert not (tmp_path / "r.db").exists()  # refused before any database is made


@pytest.mark.e2e
def test_on_phase_hears_every_phase_of_every_server_before_the_quiet_point(tmp_path: Path):
    prof = profiles.parse(
        "iterations = 2\nwarmup = 1\ninferences_per_model = 2\nservers = 2\n",
        str(tmp_path / "p.toml"),
        "p",
    )
    store = session.prepare(prof, tmp_path / "r.db")
    heard: list[tuple] = []
    session.run(
        prof,
        store,
        on_iteration=lambda view: heard.append(("quiet", view.iteration)),
        on_phase=lambda view: heard.append(
            (view.iteration, view.phase, view.servers_done, view.servers, dict(view.phases))
        ),
    )
    store.close()
    first_quiet = heard.index(("quiet", 0))
    first = heard[:first_quiet]
    assert first, "nothing was heard before the first quiet point"
    for instance in (0, 1):
        entered = [h[1] for h in first if h[4].get(instance) == h[1]]
        assert [p for p in PHASES if p in entered] == list(PHASES)  # every phase, in order
    assert {h[3] for h in first} == {2}
    assert first[-1][1] == "delete" and first[-1][2] == 2  # both servers done
    assert heard[-1] == ("quiet", 1)
