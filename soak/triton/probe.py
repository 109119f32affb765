"""Ask a Triton home which server version its library is, in a child process.

A process can load one libtritonserver only (soak.triton.capi refuses a second), so a home
is probed from a fresh interpreter: `python -m soak.triton.probe HOME` loads it, starts one
server on an empty repository (no model, so no stub process), prints its metadata as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from soak.errors import EnvironmentProblem


@dataclass(frozen=True)
class ProbedCore:
    """What a home's library says about itself: `TRITONSERVER_ServerMetadata` and API."""

    version: str
    api_version: tuple[int, int]
    extensions: tuple[str, ...]
    missing_symbols: tuple[str, ...]  # of soak's binding: soak cannot run this core if any


def probe(home: str | os.PathLike | None, timeout_s: float = 120.0) -> ProbedCore:
    """Load the library of `home` (None: the core capi.locate finds without one) in a child
    interpreter and read its server version."""
    home_args = [] if home is None else [str(home)]
    home = "the default Triton" if home is None else home
    try:
        done = subprocess.run(
            [sys.executable, "-m", "soak.triton.probe", *home_args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentProblem(
            f"the Triton library of {home} did not report its version within {timeout_s:.0f} s"
        ) from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise EnvironmentProblem(f"the Triton library of {home} does not load: {why}")
    answer = json.loads(lines[-1])
    return ProbedCore(
        answer["version"],
        tuple(answer["api_version"]),
        tuple(answer["extensions"]),
        tuple(answer["missing_symbols"]),
    )


def _report(home: Path | None) -> dict:
    """Load `home`'s library with the few prototypes a version read needs (not capi.load:
    an older core lacks symbols soak's binding declares, and must still say what it is)."""
    import ctypes
    from ctypes import POINTER, byref, c_char_p, c_size_t, c_uint32, c_void_p

    from soak.triton import capi

    install = capi.locate(home)
    capi._preload_siblings(install.library)
    try:
        lib = ctypes.CDLL(str(install.library), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot load {install.library}: {exc}") from exc
    p, pp = c_void_p, POINTER(c_void_p)
    prototypes = {
        "TRITONSERVER_ApiVersion": [POINTER(c_uint32), POINTER(c_uint32)],
        "TRITONSERVER_ErrorMessage": [p],
        "TRITONSERVER_ServerOptionsNew": [pp],
        "TRITONSERVER_ServerOptionsDelete": [p],
        "TRITONSERVER_ServerOptionsSetModelRepositoryPath": [p, c_char_p],
        "TRITONSERVER_ServerOptionsSetModelControlMode": [p, ctypes.c_int],
        "TRITONSERVER_ServerOptionsSetBackendDirectory": [p, c_char_p],
        "TRITONSERVER_ServerOptionsSetLogFile": [p, c_char_p],
        "TRITONSERVER_ServerNew": [pp, p],
        "TRITONSERVER_ServerMetadata": [p, pp],
        "TRITONSERVER_MessageSerializeToJson": [p, POINTER(c_char_p), POINTER(c_size_t)],
        "TRITONSERVER_MessageDelete": [p],
        "TRITONSERVER_ServerStop": [p],
        "TRITONSERVER_ServerDelete": [p],
    }
    for name, argtypes in prototypes.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, c_void_p
    lib.TRITONSERVER_ErrorMessage.restype = c_char_p

    def check(err: int | None) -> None:
        if err:
            raise EnvironmentProblem(lib.TRITONSERVER_ErrorMessage(err).decode())

    major, minor = c_uint32(), c_uint32()
    check(lib.TRITONSERVER_ApiVersion(byref(major), byref(minor)))
    with tempfile.TemporaryDirectory(prefix="soak-probe-") as tmp:
        repo = Path(tmp) / "models"
        repo.mkdir()
        opts, server, message = c_void_p(), c_void_p(), c_void_p()
        check(lib.TRITONSERVER_ServerOptionsNew(byref(opts)))
        check(lib.TRITONSERVER_ServerOptionsSetModelRepositoryPath(opts, str(repo).encode()))
        check(lib.TRITONSERVER_ServerOptionsSetModelControlMode(opts, capi.MODEL_CONTROL_EXPLICIT))
        backends = str(install.backends_dir).encode()
        check(lib.TRITONSERVER_ServerOptionsSetBackendDirectory(opts, backends))
        check(lib.TRITONSERVER_ServerOptionsSetLogFile(opts, str(Path(tmp) / "log").encode()))
        try:
            check(lib.TRITONSERVER_ServerNew(byref(server), opts))
        finally:
            lib.TRITONSERVER_ServerOptionsDelete(opts)
        try:
            check(lib.TRITONSERVER_ServerMetadata(server, byref(message)))
            base, size = c_char_p(), c_size_t()
            check(lib.TRITONSERVER_MessageSerializeToJson(message, byref(base), byref(size)))
            metadata = json.loads(ctypes.string_at(base, size.value))
            lib.TRITONSERVER_MessageDelete(message)
        finally:
            lib.TRITONSERVER_ServerStop(server)
            lib.TRITONSERVER_ServerDelete(server)
    return {
        "version": metadata.get("version"),
        "api_version": [major.value, minor.value],
        "extensions": list(metadata.get("extensions", [])),
        "missing_symbols": [
            name
            for name in capi._PROTOTYPES
            if name not in capi.OPTIONAL and not hasattr(lib, name)
        ],
    }


def main(argv: list[str]) -> int:
    from soak.errors import SoakError

    try:
        print(json.dumps(_report(Path(argv[0]) if argv else None)))
    except SoakError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
