"""Assemble the python backend folder of a run and the environment its stub processes need.

Every precondition of the stub is checked here, before any server starts: a stub that
cannot start makes TRITONSERVER_ServerLoadModel retry forever instead of failing.
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from soak.errors import EnvironmentProblem
from soak.triton.capi import TritonInstall
from soak.triton.facts import STUB_EXECUTABLE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendSetup:
    backends_dir: Path
    stub: Path
    env: dict[str, str]  # what must be in os.environ before the first server starts


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def find_stub(install: TritonInstall) -> Path:
    version = python_version()
    if install.stubs_dir is not None:
        stub = install.stubs_dir / version / STUB_EXECUTABLE
        if not stub.is_file():
            have = sorted(p.name for p in install.stubs_dir.iterdir() if p.is_dir())
            raise EnvironmentProblem(
                f"no python backend stub for Python {version} in {install.stubs_dir} "
                f"(it has {', '.join(have) or 'none'}); run soak with one of those Pythons"
            )
        return stub
    stub = install.backends_dir / "python" / STUB_EXECUTABLE
    if not stub.is_file():
        raise EnvironmentProblem(f"no python backend stub at {stub}")
    return stub


def check_stub_requirements() -> None:
    """The stub embeds the system libpython and imports numpy (< 2) from our environment."""
    version = python_version()
    if ctypes.util.find_library(f"python{version}") is None:
        raise EnvironmentProblem(
            f"the python backend stub needs the shared library libpython{version}.so.1.0, "
            f"which this system lacks: install it (Debian/Ubuntu: apt install libpython{version})"
        )
    try:
        import numpy
    except ImportError as exc:
        raise EnvironmentProblem("numpy is not installed: pip install 'numpy<2'") from exc
    if int(numpy.__version__.split(".")[0]) >= 2:
        raise EnvironmentProblem(
            f"numpy {numpy.__version__} is installed; the python backend stub needs numpy < 2 "
            "(its tensors come through empty otherwise): pip install 'numpy<2'"
        )


def stub_environment(install: TritonInstall) -> dict[str, str]:
    """PATH must start with our interpreter's bin/ (the stub finds numpy through it)."""
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    parts = [p for p in path.split(os.pathsep) if p and p != bindir]
    ld = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    libdir = str(install.library_dir)
    if libdir not in ld:
        ld.insert(0, libdir)
    return {"PATH": os.pathsep.join([bindir, *parts]), "LD_LIBRARY_PATH": os.pathsep.join(ld)}


def assemble(install: TritonInstall, dest: Path, stub: Path | None = None) -> BackendSetup:
    """Build `<dest>/python/` with the backend library, utils and the stub for this interpreter.

    `stub` replaces the real stub (tests use a broken one on purpose).
    """
    check_stub_requirements()
    real_stub = find_stub(install)
    source = install.backends_dir / "python"
    lib = source / "libtriton_python.so"
    utils = source / "triton_python_backend_utils.py"
    for needed in (lib, utils):
        if not needed.is_file():
            raise EnvironmentProblem(f"python backend incomplete: {needed} is missing")
    target = dest / "python"
    target.mkdir(parents=True, exist_ok=True)
    for src in (lib, utils):
        link = target / src.name
        if not link.exists():
            link.symlink_to(src)
    stub_target = target / STUB_EXECUTABLE
    if not stub_target.exists():
        shutil.copy2(stub or real_stub, stub_target)
        stub_target.chmod(0o755)
    # Other backends of the install (onnxruntime, ...) stay reachable by name.
    if install.backends_dir.is_dir():
        for other in install.backends_dir.iterdir():
            link = dest / other.name
            if other.name != "python" and other.is_dir() and not link.exists():
                link.symlink_to(other)
    return BackendSetup(dest, stub_target, stub_environment(install))


def apply_environment(setup: BackendSetup) -> None:
    """Children inherit os.environ: set it once, before the first server starts."""
    os.environ.update(setup.env)
