"""Find the `tritonserver` executable of a Triton install and the environment it and
perf_analyzer need; the backend folder is the one the in-process path assembles.

Where the executable comes from follows soak.triton.capi.locate (triton_home, then
/opt/tritonserver, then the nvidia-pytriton wheel), so both targets run the same core.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from soak.errors import EnvironmentProblem
from soak.target.interface import ServerFeatures
from soak.triton import backends, capi

EXECUTABLE = "tritonserver"
PERF_ANALYZER = "perf_analyzer"
#: perf_analyzer's NEEDED names and the globs of the wheel's hashed copies of those libraries.
PERF_ANALYZER_LIBS = {"libb64.so.0d": "libb64-*.so.0d", "libcudart.so.12": "libcudart-*.so.12*"}


@dataclass(frozen=True)
class ServerExecutable:
    """What starting a tritonserver process takes: the binary, the backend folder of this run
    and the complete environment of the child (the stub's PATH and LD_LIBRARY_PATH in it)."""

    path: Path
    backends_dir: Path
    env: dict[str, str]
    install: capi.TritonInstall


def executable_path(install: capi.TritonInstall) -> Path:
    """`<home>/bin/tritonserver` for a home laid out like NVIDIA's containers, the wheel's
    `pytriton/tritonserver/bin/tritonserver` otherwise."""
    if install.source == "nvidia-pytriton":
        path = install.backends_dir.parent / "bin" / EXECUTABLE
    else:
        path = install.library_dir.parent / "bin" / EXECUTABLE
    if not path.is_file() or not os.access(path, os.X_OK):
        raise EnvironmentProblem(
            f"no tritonserver executable at {path} (Triton install from {install.source}); "
            "the server target needs the executable, not only the library"
        )
    return path


def prepare(
    workdir: Path, home: str | os.PathLike | None = None, stub: Path | None = None
) -> ServerExecutable:
    """Locate the install, assemble `<workdir>/backends` as soak.triton.setup does, and build
    the child's environment; loads no library into this process."""
    install = capi.locate(home)
    path = executable_path(install)
    setup = backends.assemble(install, Path(workdir) / "backends", stub=stub)
    return ServerExecutable(path, setup.backends_dir, {**os.environ, **setup.env}, install)


def feature_args(executable: ServerExecutable, features: ServerFeatures) -> list[str]:
    """The flags of the profile's server-wide features, as soak.triton.server sets them
    through the C API: strict model config always (the executable's default is false,
    the C API's true), the cache with the install's caches/ folder (the executable's default
    is /opt/tritonserver/caches, absent for the wheel)."""
    strict = "true" if features.strict_model_config else "false"
    args = [f"--strict-model-config={strict}"]
    if features.response_cache:
        caches = executable.install.backends_dir.parent / "caches"
        args += [
            f"--cache-directory={caches}",
            f"--cache-config={features.response_cache},size={features.response_cache_bytes}",
        ]
    return args


def find_perf_analyzer() -> Path:
    """The perf_analyzer that tritonclient's wheel installs next to our interpreter."""
    beside = Path(sys.executable).parent / PERF_ANALYZER
    found = beside if beside.is_file() else shutil.which(PERF_ANALYZER)
    if not found:
        raise EnvironmentProblem(
            "perf_analyzer is not installed: pip install 'tritonclient[http,grpc]==2.51.0' "
            "(its wheel ships the binary)"
        )
    return Path(found)


def perf_analyzer_environment(install: capi.TritonInstall, linkdir: Path) -> dict[str, str]:
    """perf_analyzer links libb64.so.0d and libcudart.so.12, which the wheel ships only under
    hashed names: link them under their plain names in `linkdir` and put it on its
    LD_LIBRARY_PATH (with the install's library folder, for an install that has plain names)."""
    linkdir.mkdir(parents=True, exist_ok=True)
    for name, pattern in PERF_ANALYZER_LIBS.items():
        link = linkdir / name
        if link.is_symlink() or link.exists():
            continue
        found = sorted(install.library_dir.glob(pattern))
        if found:
            link.symlink_to(found[0])
    env = dict(os.environ)
    ld = [str(linkdir), str(install.library_dir)]
    ld += [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p not in ld]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(ld)
    return env
