"""`make bench` anchor for the `servers` scenario: Triton's own multi-server test
(src/multi_server.cc, vendored in multi_server/ with its licence) made concurrent, compiled
with g++ against the same libtritonserver soak loads, over the same repositories.

N threads each create a server over the common and their own repository, load, infer and
check, unload and delete; one iteration is all N, timed by the program. Where g++ or the
header is missing there is no figure, and one line says why.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

SOURCE_DIR = Path(__file__).parent / "multi_server"
SOURCE = SOURCE_DIR / "multi_server.cc"
HEADER = SOURCE_DIR / "triton" / "core" / "tritonserver.h"
#: The same inferences per model as the bench's in-process lifecycle cell.
INFERENCES_PER_MODEL = 10
TIMEOUT_S = 300


def missing() -> str | None:
    """Why the anchor cannot be built here, or None."""
    if shutil.which("g++") is None:
        return "no C++ anchor: g++ is not installed"
    if not HEADER.is_file():
        return f"no C++ anchor: the Triton C API header {HEADER} is missing"
    return None


def compile_program(library: Path, dest: Path) -> Path:
    """g++ the program against `library` (its folder as rpath: the wheel's siblings)."""
    exe = dest / "multi_server"
    subprocess.run(
        [
            "g++",
            "-O2",
            "-std=c++17",
            "-pthread",
            f"-I{SOURCE_DIR}",
            str(SOURCE),
            "-o",
            str(exe),
            str(library),
            f"-Wl,-rpath,{library.parent}",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    return exe


def multi_server(servers: int = 4, iterations: int = 4) -> dict[str, Any]:
    """Per-iteration seconds of the C++ program (the first iteration dropped, as soak's), or
    {"missing": why}."""
    from soak.triton import backends, capi
    from soak.workload import repos

    why = missing()
    if why:
        return {"missing": why}
    install = capi.locate()
    with tempfile.TemporaryDirectory(prefix="soak-bench-cpp-") as tmp:
        root = Path(tmp)
        exe = compile_program(install.library, root)
        common, unique = repos.write_repositories(root / "repos", servers)
        backend = backends.assemble(install, root / "backends")
        cmd = [str(exe), str(backend.backends_dir), str(iterations + 1)]
        cmd += [str(INFERENCES_PER_MODEL), str(common)] + [str(u) for u in unique]
        returncode, output = _run(cmd, {**os.environ, **backend.env})
    walls = [
        float(line.split()[1]) for line in output.splitlines() if line.startswith("iteration_s ")
    ]
    out: dict[str, Any] = {"servers": servers, "returncode": returncode, "walls_s": walls}
    if returncode != 0 or len(walls) != iterations + 1:
        out["output_tail"] = output[-2000:]
    if len(walls) > 1:
        out["median_s"] = statistics.median(walls[1:])
        out["phase_median_s"] = _phase_medians(output, servers)
    return out


def _phase_medians(output: str, servers: int) -> dict[str, float]:
    """Median over iterations (the first dropped) of each phase's slowest thread, from the
    program's 'phases_s <thread> server_new=<s> load=<s> ...' lines."""
    rows = [
        dict((k, float(v)) for k, v in (f.split("=") for f in line.split()[2:]))
        for line in output.splitlines()
        if line.startswith("phases_s ")
    ][servers:]
    if not rows:
        return {}
    iterations = [rows[i : i + servers] for i in range(0, len(rows), servers)]
    return {p: statistics.median(max(r[p] for r in it) for it in iterations) for p in rows[0]}


def _run(cmd: list[str], env: dict[str, str]) -> tuple[int, str]:
    """The program in its own session, so that a hang past TIMEOUT_S is killed with every
    python stub it started (a stub was seen outliving its killed parent, SIGTERM too)."""
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        output += f"\n(killed after {TIMEOUT_S} s)"
    return proc.returncode, output
