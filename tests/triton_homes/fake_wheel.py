"""A small zip shaped like an nvidia-pytriton wheel: the layout code's unit of work."""

from __future__ import annotations

import zipfile
from pathlib import Path

STUB_BYTES = b"\x7fELF fake stub NEEDED libpython{python}.so.1.0 end"


def _add(archive: zipfile.ZipFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    archive.writestr(info, data)


def make_wheel(
    folder: Path,
    pytriton: str = "0.5.3",
    pythons: tuple[str, ...] = ("3.10", "3.11"),
    single_stub: str | None = None,
    core: bool = True,
) -> Path:
    """A fake wheel; `single_stub` files one stub (linking that Python) in the backend folder
    as 0.2.x wheels do, instead of python_backend_stubs/."""
    path = folder / f"nvidia_pytriton-{pytriton}-py3-none-manylinux_2_35_x86_64.whl"
    core_dir = "pytriton/tritonserver/"
    with zipfile.ZipFile(path, "w") as archive:
        _add(archive, f"nvidia_pytriton-{pytriton}.dist-info/METADATA", b"Name: nvidia-pytriton")
        if core:
            _add(
                archive, "nvidia_pytriton.libs/libtritonserver-abc123.so", b"core", 0o666
            )  # as 0.5.3 stores it
        _add(archive, "nvidia_pytriton.libs/libcurl-def456.so.4", b"curl")
        _add(archive, "pytriton/__init__.py", b"")
        _add(archive, core_dir + "backends/python/libtriton_python.so", b"backend", 0o755)
        _add(archive, core_dir + "backends/python/triton_python_backend_utils.py", b"# utils")
        _add(archive, core_dir + "bin/tritonserver", b"server", 0o777)
        _add(archive, core_dir + "caches/local/libtritoncache_local.so", b"cache")
        for python in pythons:
            stub = STUB_BYTES.replace(b"{python}", python.encode())
            _add(
                archive,
                f"{core_dir}python_backend_stubs/{python}/triton_python_backend_stub",
                stub,
                0o755,
            )
        if single_stub is not None:
            stub = STUB_BYTES.replace(b"{python}", single_stub.encode())
            _add(archive, core_dir + "backends/python/triton_python_backend_stub", stub, 0o755)
    return path
