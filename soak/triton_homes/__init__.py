"""Triton homes that soak installs from `nvidia-pytriton` wheels, one per Triton version.

`install("2.43.0")` fetches the wheel, lays it out (soak.triton_homes.layout), asks the
library which version it is (in a child process: this one keeps its own core) and files it
under `$SOAK_CACHE/triton/<version>/` (`~/.cache/soak` by default). `installed_home(version)`
is what a profile's `triton = "2.43.0"` resolves through; the home works as `triton_home`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from soak.errors import EnvironmentProblem, ProfileError
from soak.triton.backends import python_version
from soak.triton.probe import probe
from soak.triton_homes import layout, wheels

ENV_CACHE = "SOAK_CACHE"
RECORD = "soak-home.json"
"""The file in a home that says what it is; a folder without it is not listed."""


@dataclass(frozen=True)
class InstalledHome:
    """One installed Triton home, as `soak triton list` shows it."""

    triton_version: str
    path: Path
    pytriton: str
    wheel: str
    size_bytes: int
    stub_pythons: tuple[str, ...]
    missing_symbols: tuple[str, ...]  # of soak's C API binding; soak cannot run it if any
    installed_at: str

    @property
    def serves_this_python(self) -> bool:
        return python_version() in self.stub_pythons

    def problems(self) -> list[str]:
        """What keeps soak from using this home fully, one sentence each."""
        found = []
        if not self.serves_this_python:
            found.append(
                f"Triton {self.triton_version} has no python backend stub for Python "
                f"{python_version()} (it has {', '.join(self.stub_pythons) or 'none'}): "
                "python models cannot be served with this Python"
            )
        if self.missing_symbols:
            found.append(
                f"Triton {self.triton_version} lacks {', '.join(self.missing_symbols)}, "
                "which soak's C API binding needs: soak cannot run on it in-process"
            )
        return found

    def as_dict(self) -> dict:
        return {
            "triton_version": self.triton_version,
            "path": str(self.path),
            "pytriton": self.pytriton,
            "wheel": self.wheel,
            "size_bytes": self.size_bytes,
            "stub_pythons": list(self.stub_pythons),
            "serves_this_python": self.serves_this_python,
            "missing_symbols": list(self.missing_symbols),
            "installed_at": self.installed_at,
        }


def cache_root() -> Path:
    """`$SOAK_CACHE/triton` (default `~/.cache/soak/triton`), created and writable."""
    base = os.environ.get(ENV_CACHE)
    what = f"${ENV_CACHE} ({base})" if base else "the cache folder"
    root = (Path(base).expanduser() if base else Path.home() / ".cache" / "soak") / "triton"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvironmentProblem(f"{what} cannot hold Triton homes: {root}: {exc}") from exc
    if not os.access(root, os.W_OK | os.X_OK):
        raise EnvironmentProblem(f"{what} cannot hold Triton homes: {root} is not writable")
    return root


def _read(home: Path) -> InstalledHome | None:
    try:
        record = json.loads((home / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return InstalledHome(
        triton_version=record["triton_version"],
        path=home,
        pytriton=record["pytriton"],
        wheel=record["wheel"],
        size_bytes=record["size_bytes"],
        stub_pythons=tuple(record["stub_pythons"]),
        missing_symbols=tuple(record["missing_symbols"]),
        installed_at=record["installed_at"],
    )


def list_homes() -> list[InstalledHome]:
    """The installed homes, oldest Triton first."""
    root = cache_root()
    found = [h for h in (_read(p) for p in root.iterdir() if p.is_dir()) if h is not None]
    return sorted(found, key=lambda h: wheels.version_key(h.triton_version))


def _normal(version: str) -> str:
    text = version.strip()
    return f"{text}.0" if text.count(".") == 1 else text


def installed_home(version: str) -> Path:
    """The home of an installed Triton version (`2.43.0`, `2.43`), or a one-line error that
    says how to install it."""
    home = _read(cache_root() / _normal(version))
    if home is None:
        have = ", ".join(h.triton_version for h in list_homes()) or "none"
        raise ProfileError(
            f"Triton {_normal(version)} is not installed (installed: {have}); "
            f"run: soak triton install {_normal(version)}"
        )
    return home.path


def resolve(value: str) -> Path:
    """What a profile's `triton` names: a path to a home (`/opt/tritonserver`, `~/t`,
    `./home`) as it is, else a Triton version installed here (see installed_home)."""
    text = value.strip()
    if "/" in text or text.startswith("~"):
        return Path(text).expanduser()
    return installed_home(text)


def default_version() -> str:
    """The version of the core soak finds with no home named ($SOAK_TRITON_HOME,
    /opt/tritonserver, else the nvidia-pytriton wheel), asked of its library once per
    process (a child interpreter: see soak.triton.probe)."""
    key = os.environ.get("SOAK_TRITON_HOME", "")
    if key not in _DEFAULT_VERSIONS:
        _DEFAULT_VERSIONS[key] = probe(None).version
    return _DEFAULT_VERSIONS[key]


_DEFAULT_VERSIONS: dict[str, str] = {}


def run_home(value: str) -> Path | None:
    """The home a run with `triton = value` uses; None: the default core (capi's search).

    A path or an installed version resolves as in :func:`resolve`; a version not installed
    that is the default core's (the wheel's 2.51.0 in soak's venv) needs no install."""
    text = value.strip()
    if not text:
        return None
    try:
        return resolve(text)
    except ProfileError:
        if _normal(text) == default_version():
            return None
        raise


def install(spec: str) -> InstalledHome:
    """Install the Triton core `spec` names (`2.43.0` or `pytriton==0.5.3`), or return the
    home already installed for it. The version filed is the one the library reports."""
    choice = wheels.choose(spec)
    root = cache_root()
    if choice.expected_triton is not None:
        existing = _read(root / choice.expected_triton)
        if existing is not None:
            return existing
    wheel = wheels.fetch(choice.pytriton, root / "wheels")
    staging = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=root))
    try:
        home = staging / "home"
        layout.unpack(wheel, home, python_version())
        core = probe(home)
        if choice.expected_triton is not None and core.version != choice.expected_triton:
            raise EnvironmentProblem(
                f"{wheel.name} carries Triton {core.version}, not {choice.expected_triton}"
            )
        record = {
            "triton_version": core.version,
            "pytriton": choice.pytriton,
            "wheel": wheel.name,
            "size_bytes": layout.size_bytes(home),
            "stub_pythons": list(layout.stub_pythons(home)),
            "missing_symbols": list(core.missing_symbols),
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (home / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        final = root / core.version
        existing = _read(final)
        if existing is not None:  # another install got there first, or pytriton==X again
            return existing
        if final.exists():  # a folder without a record: a broken earlier attempt
            shutil.rmtree(final)
        home.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    installed = _read(final)
    assert installed is not None
    return installed


def remove(version: str) -> InstalledHome:
    """Delete an installed home and its cached wheel; returns what was removed."""
    root = cache_root()
    home = _read(root / _normal(version))
    if home is None:
        have = ", ".join(h.triton_version for h in list_homes()) or "none"
        raise ProfileError(f"Triton {_normal(version)} is not installed (installed: {have})")
    shutil.rmtree(home.path)
    (root / "wheels" / home.wheel).unlink(missing_ok=True)
    return home


__all__ = [
    "ENV_CACHE",
    "InstalledHome",
    "cache_root",
    "default_version",
    "install",
    "installed_home",
    "list_homes",
    "remove",
    "resolve",
    "run_home",
]
