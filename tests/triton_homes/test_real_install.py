"""`soak triton install 2.43.0` for real: pip fetches nvidia-pytriton 0.5.3 (40 MB), its
library reports 2.43.0 from the laid-out home, and soak runs the smoke profile on it (and on
2.41.0, a core older than the load retry count option).

Skipped, saying so, when the package index cannot be reached. $SOAK_TEST_CACHE names a cache
to keep between sessions; otherwise the session's temporary folder holds it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from soak.triton.backends import python_version
from soak.triton.probe import probe
from tests.e2e import query
from tests.triton_homes.test_wheels import _offline

VERSION = "2.43.0"
OLDER = "2.41.0"


def soak(*args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 600):
    return subprocess.run(
        [sys.executable, "-m", "soak.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        cwd=cwd,
    )


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    """A $SOAK_CACHE with Triton 2.43.0 installed through the command line."""
    root = Path(os.environ.get("SOAK_TEST_CACHE") or tmp_path_factory.mktemp("soak-cache"))
    done = soak("triton", "install", VERSION, env={"SOAK_CACHE": str(root)})
    if done.returncode != 0 and "cannot reach the package index" in done.stderr:
        pytest.skip(f"package index unreachable: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{root / 'triton' / VERSION}\n"
    return root


@pytest.fixture(scope="session")
def home(cache) -> Path:
    return cache / "triton" / VERSION


def test_the_installed_library_reports_its_version(home):
    core = probe(home)
    assert core.version == VERSION and core.missing_symbols == ()
    assert core.api_version[0] == 1


def test_the_home_has_the_stubs_of_the_wheel(home, cache):
    listed = soak("triton", "list", "--json", env={"SOAK_CACHE": str(cache)})
    assert listed.returncode == 0, listed.stderr
    (entry,) = [e for e in json.loads(listed.stdout) if e["triton_version"] == VERSION]
    assert entry["pytriton"] == "0.5.3" and entry["stub_pythons"] == ["3.8", "3.9", "3.10", "3.11"]
    assert entry["serves_this_python"] == (python_version() in entry["stub_pythons"])
    assert (home / "bin" / "tritonserver").stat().st_mode & 0o111


def test_offline_with_the_wheel_cached_installs(cache, tmp_path, monkeypatch):
    wheels = tmp_path / "cache" / "triton" / "wheels"
    wheels.mkdir(parents=True)
    for wheel in (cache / "triton" / "wheels").glob("nvidia_pytriton-0.5.3-*.whl"):
        shutil.copy(wheel, wheels)
    _offline(monkeypatch)  # pip could fetch nothing now
    done = soak("triton", "install", VERSION, env={"SOAK_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    assert probe(Path(done.stdout.strip())).version == VERSION


@pytest.fixture(scope="session")
def older_home(cache) -> Path:
    """2.41.0 (pytriton 0.5.0): a core without TRITONSERVER_ServerOptionsSetModelLoadRetryCount."""
    done = soak("triton", "install", OLDER, env={"SOAK_CACHE": str(cache)})
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


@pytest.mark.e2e
@pytest.mark.parametrize("which", ["home", "older_home"])
def test_a_smoke_run_on_the_installed_home_records_its_version(which, request, tmp_path):
    home = request.getfixturevalue(which)
    version = home.name
    if python_version() not in ("3.8", "3.9", "3.10", "3.11"):
        pytest.skip(f"Triton {version} has no python backend stub for Python {python_version()}")
    db = tmp_path / "r.db"
    done = soak(
        "run",
        "smoke",
        "--iterations",
        "2",
        "--no-progress",
        "--db",
        str(db),
        env={"SOAK_TRITON_HOME": str(home)},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert query(db, "SELECT status, triton_version FROM runs") == [("passed", version)]


@pytest.mark.e2e
def test_a_two_version_smoke_matrix_records_both_versions_and_homes(cache, home, tmp_path):
    """`[matrix] triton = [2.43.0, the wheel's]`: the wheel's version needs no install; each
    run records the version its library reported and the home it came from."""
    if python_version() not in ("3.8", "3.9", "3.10", "3.11"):
        pytest.skip(f"Triton {VERSION} has no python backend stub for Python {python_version()}")
    from soak.triton_homes import default_version

    wheel = default_version()
    profile = tmp_path / "two.toml"
    profile.write_text(
        f"purpose = 'machinery'\nservers = 1\niterations = 3\nwarmup = 1\n"
        f"inferences_per_model = 2\n[matrix]\ntriton = ['{VERSION}', '{wheel}']\n"
    )
    db = tmp_path / "r.db"
    done = soak(
        "run", str(profile), "--no-progress", "--db", str(db), env={"SOAK_CACHE": str(cache)}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = query(db, "SELECT status, cell, triton_version, triton_home FROM runs ORDER BY id")
    assert [(r[0], json.loads(r[1])["triton"], r[2]) for r in rows] == [
        ("passed", VERSION, VERSION),
        ("passed", wheel, wheel),
    ]
    assert rows[0][3] == str(home.resolve())
    assert rows[1][3].endswith("tritonserver") and rows[1][3] != rows[0][3]
    compared = soak(
        "compare",
        "--upgrade",
        VERSION,
        wheel,
        "two",
        "--db",
        str(db),
        env={"SOAK_CACHE": str(cache)},
    )
    # Too few iterations for slopes: no data, so no regression; both sides ran.
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert f"matrix two: Triton {VERSION} -> {wheel}" in compared.stdout
    assert (
        f"{VERSION}: run 1 passed" in compared.stdout
        and f"{wheel}: run 2 passed" in compared.stdout
    )


@pytest.mark.e2e
def test_the_tritonserver_target_runs_the_executable_of_the_chosen_version(cache, home, tmp_path):
    """`--triton 2.43.0` with target tritonserver: the server processes are that install's
    bin/tritonserver, and the run records its version and home."""
    if python_version() not in ("3.8", "3.9", "3.10", "3.11"):
        pytest.skip(f"Triton {VERSION} has no python backend stub for Python {python_version()}")
    profile = tmp_path / "remote.toml"
    profile.write_text(
        "purpose = 'machinery'\ntarget = 'tritonserver'\nprotocol = 'grpc'\n"
        "scenario = 'traffic'\nservers = 1\niterations = 3\nwarmup = 1\n"
        "inferences_per_model = 20\n"
    )
    db = tmp_path / "r.db"
    done = soak(
        "run",
        str(profile),
        "--triton",
        VERSION,
        "--no-progress",
        "--db",
        str(db),
        env={"SOAK_CACHE": str(cache)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert query(db, "SELECT status, triton_version, triton_home FROM runs") == [
        ("passed", VERSION, str(home))
    ]


@pytest.mark.e2e
@pytest.mark.parametrize("target", ["in_process", "tritonserver"])
def test_error_responses_on_the_installed_home_are_counted_as_failures(target, cache, tmp_path):
    """traffic with behaviour error_response on 2.43.0: soak's statistics check holds the
    python model's error responses to Triton's failed count (2.43's way; 2.51 counts them as
    successes), and passes. With the tritonserver target /metrics, which soak stores, counted
    each error response as a failure too, without a reason label."""
    if python_version() not in ("3.8", "3.9", "3.10", "3.11"):
        pytest.skip(f"Triton {VERSION} has no python backend stub for Python {python_version()}")
    profile = tmp_path / "errors.toml"
    profile.write_text(
        f"purpose = 'machinery'\ntarget = '{target}'\nscenario = 'traffic'\n"
        "behaviour = 'error_response'\nerror_fraction = 0.5\nservers = 1\niterations = 3\n"
        "warmup = 1\ninferences_per_model = 6\n"
    )
    db = tmp_path / "r.db"
    done = soak(
        "run",
        str(profile),
        "--triton",
        VERSION,
        "--no-progress",
        "--db",
        str(db),
        env={"SOAK_CACHE": str(cache)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert query(db, "SELECT status, triton_version FROM runs") == [("passed", VERSION)]
    assert query(db, "SELECT message FROM events WHERE kind = 'failure'") == []
    rows = query(
        db,
        "SELECT inferences, errors, responses, metrics_successes, metrics_failures, "
        "metrics_failure_reasons, failures FROM iterations ORDER BY iteration",
    )
    assert len(rows) == 3 and sum(r[1] for r in rows) > 0, rows
    for inferences, errors, responses, successes, failures, reasons, failed in rows:
        assert (inferences, responses + errors, failed) == (12, 12, 0)
        if target == "tritonserver":
            assert (successes, failures) == (responses, errors)
            assert json.loads(reasons) == ({"": errors} if errors else {})
        else:
            assert (successes, failures, reasons) == (None, None, None)
