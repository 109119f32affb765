"""Lay an `nvidia-pytriton` wheel out as a Triton home, the shape soak.triton.capi reads.

    lib/                     the wheel's nvidia_pytriton.libs + libtritonserver.so -> the core
    backends/python/         libtriton_python.so, triton_python_backend_utils.py, and the stub
                             of the installing Python (what a tritonserver process would use)
    python_backend_stubs/    3.X/triton_python_backend_stub for every Python the wheel has
    bin/tritonserver         (its RPATH already names ../lib)
    caches/local/            the response cache, when the wheel has one

Only the Triton parts are unpacked: the pytriton Python package is not needed to serve.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path, PurePosixPath

from soak.errors import EnvironmentProblem

STUB = "triton_python_backend_stub"
LIBRARY_LINK = "libtritonserver.so"
_LIBS = "nvidia_pytriton.libs/"
_CORE = "pytriton/tritonserver/"
_STUBS = _CORE + "python_backend_stubs/"
_LIBPYTHON = re.compile(rb"libpython(3\.\d+)\.so")


def _target(name: str) -> PurePosixPath | None:
    """Where a member of the wheel goes in the home; None for what a home does not need."""
    if name.endswith("/"):
        return None
    if name.startswith(_LIBS):
        return PurePosixPath("lib", name[len(_LIBS) :])
    if name.startswith(_STUBS):
        return PurePosixPath("python_backend_stubs", name[len(_STUBS) :])
    for part in ("backends/", "bin/", "caches/"):
        if name.startswith(_CORE + part):
            return PurePosixPath(name[len(_CORE) :])
    return None


def stub_python(stub: Path) -> str | None:
    """The Python a stub was built for, from the libpython it links (`3.11`)."""
    found = _LIBPYTHON.search(stub.read_bytes())
    return found.group(1).decode() if found else None


def unpack(wheel: Path, home: Path, python: str) -> None:
    """Unpack `wheel` into `home` (which must not exist yet) as a Triton home.

    A wheel with one stub in its backend folder (0.2.x) gets it filed under the Python it
    links. The stub of `python` is copied next to the backend when the wheel has it.
    """
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise EnvironmentProblem(f"{wheel} is not a readable wheel: {exc}") from exc
    with archive:
        members = [(m, _target(m.filename)) for m in archive.infolist()]
        members = [(m, t) for m, t in members if t is not None]
        if not any(str(t).startswith("lib/libtritonserver") for _, t in members):
            raise EnvironmentProblem(f"{wheel.name} has no libtritonserver in {_LIBS}")
        home.mkdir(parents=True)
        for member, target in members:
            path = home / target
            path.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            executable = (member.external_attr >> 16) & 0o111
            path.chmod(0o755 if executable else 0o644)  # some wheels store 0o777
    cores = sorted((home / "lib").glob("libtritonserver*.so*"))
    (home / "lib" / LIBRARY_LINK).symlink_to(cores[0].name)
    _file_single_stub(home)
    chosen = home / "python_backend_stubs" / python / STUB
    if chosen.is_file():
        shutil.copy2(chosen, home / "backends" / "python" / STUB)


def _file_single_stub(home: Path) -> None:
    single = home / "backends" / "python" / STUB
    if not single.is_file() or (home / "python_backend_stubs").is_dir():
        return
    python = stub_python(single)
    if python is None:
        return
    folder = home / "python_backend_stubs" / python
    folder.mkdir(parents=True)
    shutil.move(single, folder / STUB)


def stub_pythons(home: Path) -> tuple[str, ...]:
    """The Pythons (`3.8`, `3.11`, ...) a home has a python backend stub for, in order."""
    folder = home / "python_backend_stubs"
    if not folder.is_dir():
        return ()
    found = [p.name for p in folder.iterdir() if (p / STUB).is_file()]
    return tuple(sorted(found, key=lambda v: tuple(int(x) for x in v.split("."))))


def size_bytes(home: Path) -> int:
    """Bytes of the files under `home` (links not followed)."""
    return sum(p.lstat().st_size for p in home.rglob("*") if p.is_file() and not p.is_symlink())
