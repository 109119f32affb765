"""memray's hybrid stacks as site frames: allocator frames trimmed, each frame's library told
from its names, soak's files shortened, and the lifecycle phase read from the source line of
the `Lifecycle.run` frame."""

from __future__ import annotations

import functools
import linecache
import re

from soak.sampling.allocation_sites import ALLOCATOR_NAMES, ALLOCATOR_PREFIXES, Frame


def _library(function: str, file: str) -> str:
    """memray names a native frame's function and source file, not its library: say where it
    lives from what the name tells (good enough to tell Triton from Python from libffi)."""
    if file.endswith(".py"):
        return "python"
    if file.startswith(("Objects/", "Python/", "Modules/", "Include/", "./Include/", "Parser/")):
        return "libpython"
    if "Python-3" in file or "_ctypes" in file:
        return "libpython"
    if function.startswith("ffi_"):
        return "libffi"
    if "TRITON" in function or "triton::" in function:
        return "libtritonserver"
    if function.startswith(("std::", "__cxx")):
        return "libstdc++"
    return "?"


def _short(file: str) -> str:
    """soak's files relative to the package's parent (soak/workload/inject.py); others as is."""
    at = file.rfind("/soak/")
    return file[at + 1 :] if at >= 0 and file.endswith(".py") else file


_PHASE_LINE = re.compile(r'_phase\("([a-z_]+)"\)')


def phase_of(stack: list[Frame]) -> str | None:
    """The lifecycle phase the allocation was made in: the `with self._phase("...")` block of
    `Lifecycle.run` that encloses the line it was running (read from the source)."""
    frame = next(
        (f for f in stack if f.function == "run" and f.file.endswith("workload/lifecycle.py")),
        None,
    )
    return None if frame is None else _phase_at(frame.file, frame.line)


@functools.lru_cache(maxsize=1024)
def _phase_at(file: str, line: int) -> str | None:
    for at in range(line, max(0, line - 40), -1):
        found = _PHASE_LINE.search(linecache.getline(file, at))
        if found:
            return found.group(1)
    return None


class FrameMaker:
    """Frame objects per raw (function, file, line), made once per read: thousands of stacks
    share most of their frames (measured: 736,000 frames of 22,000 stacks in one capture)."""

    def __init__(self) -> None:
        self._full: dict[tuple[str, str, int], Frame] = {}
        self._short: dict[Frame, Frame] = {}

    def full(self, raw: tuple[str, str, int]) -> Frame:
        frame = self._full.get(raw)
        if frame is None:
            fn, file, line = raw
            fn, file = fn or "<unknown>", file or "<unknown>"
            frame = self._full[raw] = Frame(fn, file, int(line or 0), _library(fn, file))
        return frame

    def short(self, frame: Frame) -> Frame:
        """The frame as shown: soak's files relative to the package's parent."""
        made = self._short.get(frame)
        if made is None:
            made = self._short[frame] = Frame(
                frame.function, _short(frame.file), frame.line, frame.library
            )
        return made


def _trimmed(stack: list[tuple[str, str, int]], make: FrameMaker) -> list[Frame]:
    frames = [make.full(raw) for raw in stack]
    start = 0
    while start < len(frames) - 1 and (
        frames[start].function in ALLOCATOR_NAMES
        or frames[start].function.startswith(ALLOCATOR_PREFIXES)
    ):
        start += 1
    return frames[start:]


def site_frames(
    stack: list[tuple[str, str, int]], make: FrameMaker | None = None
) -> tuple[list[Frame], Frame | None, str | None]:
    """(trimmed frames, innermost soak frame, phase) of one hybrid stack."""
    make = make or FrameMaker()
    frames = _trimmed(stack, make)
    phase = phase_of(frames)
    soak = next((f for f in frames if f.python and "/soak/" in f.file), None)
    return [make.short(f) for f in frames], (make.short(soak) if soak else None), phase
