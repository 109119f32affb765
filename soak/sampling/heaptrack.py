"""Native allocation sites of a tritonserver process (heaptrack): trace the server from its
start, then read back, per allocation site, the bytes and allocations live at each quiet point
in the same shapes memray's reader gives (soak.sampling.memray_sites), so that store, judge and show
take them unchanged.

Why not `heaptrack -o FILE cmd`: that is a shell script that stays the parent of the command,
so its pid is the shell's, not the server's, and a SIGTERM sent to it kills the shell alone
(measured: tritonserver, heaptrack_interpret and zstd kept running, the capture empty).
`wrap` does what the script does (a fifo, heaptrack_interpret | zstd behind it, the preload
library in the environment) and then `exec`s the command: the pid soak starts is the server's
pid, SIGTERM reaches it, and its process tree holds the server and its stubs only (the
interpreter runs detached, its stderr in `<capture>.log`, not the server's log). The capture
appears under its final name once it is complete.

How the data meets the quiet points (heaptrack 1.4, file format 3, read from
src/analyze/accumulatedtracedata.cpp): the capture is a text line stream; `s` strings, `i`
instruction pointers with their frames, `t` trace nodes (ip, parent), `a` allocation infos
(size, trace), `+`/`-` one allocation/free of an info, and `c` a timestamp (ms since the
preload library started) every 10 ms. Live bytes per site at a time are the `+` minus `-` up
to the `c` line of that time. `c` has no wall clock: time 0 is when the preload library
starts, just before it opens the fifo, so the reader side writes the epoch time when its open
returns (`<capture>.start`, a `date` later). An anchor taken before the exec was 12 ms to
over 85 ms early on the loaded 2-core machine (exec and dynamic loading of ~40 libraries), which
put a 100 ms quiet point's reading inside the next burst. A quiet point is read at the `c`
nearest the middle of its window, so an error up to half the window is harmless.

The python-backend stubs are exec'd children and stay untraced (the preload library removes
itself from their environment).

Cost (heaptrack 1.4, 2.51 wheel, HTTP, on a 2-core machine at load 6-17): ready in 4.3-7.8 s
instead of 0.1-0.2 s (the server blocks on the fifo while heaptrack_interpret symbolises each
new address); about 550 `+`/`-` events per inference, 15-20 KB of zstd capture per 1,000
correct requests and 39 KB per 1,000 failed ones, on top of ~250 KB for the start; reading
1.1 million events took 1.2-1.8 s (~0.6 s of it the start's tables).
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from soak.errors import EnvironmentProblem
from soak.sampling import allocation_sites as sites
from soak.sampling.allocation_sites import Frame, Site, SiteCapture

log = logging.getLogger(__name__)

HEAPTRACK = "heaptrack"
HEAPTRACK_PRINT = "heaptrack_print"
INSTALL = "heaptrack is the Debian package `heaptrack`: `apt-get install heaptrack`"
#: heaptrack writes a timestamp this often (hard-coded in its timer thread).
TIMESTAMP_EVERY_MS = 10
START_SUFFIX = ".start"
#: The run's captures, one per server process, under the worker's work folder.
CAPTURE_DIR = "heaptrack"
_OWNER_SUFFIX = ".owner"
_FILE_VERSION = 3

#: $$ is this launch's id (and the command's pid after the exec): a relaunch with the same
#: capture path (ServerProcess retries taken ports) never shares a fifo or partial file with
#: an earlier launch, and only the last launch's pipeline puts its capture in place.
_SCRIPT = r"""
out=$1 interp=$2 preload=$3 compress=$4; shift 4
id=$$
fifo="$out.$id.fifo"
rm -f "$out" "$out.start"
echo "$id" > "$out.owner"
mkfifo "$fifo" || exit 127
( ( exec < "$fifo"; rm -f "$fifo"; date +%s.%N > "$out.$id.start"
    "$interp" 2> "$out.log" | $compress > "$out.$id.part"
    if [ "$(cat "$out.owner")" = "$id" ]; then
      mv -f "$out.$id.start" "$out.start"; mv -f "$out.$id.part" "$out"
    else rm -f "$out.$id.start" "$out.$id.part"; fi ) & )
if ! command -v "$1" > /dev/null; then : > "$fifo"; echo "soak: no executable $1" >&2; exit 127; fi
LD_PRELOAD="$preload${LD_PRELOAD:+:$LD_PRELOAD}"
DUMP_HEAPTRACK_OUTPUT="$fifo"
export LD_PRELOAD DUMP_HEAPTRACK_OUTPUT
exec "$@"
"""


def _parts() -> dict[str, Path] | None:
    """heaptrack's pieces, found as its script finds them (relative to the script)."""
    script = shutil.which(HEAPTRACK)
    printer = shutil.which(HEAPTRACK_PRINT)
    if not script or not printer:
        return None
    lib = Path(os.path.realpath(script)).parent.parent / "lib" / "heaptrack"
    parts = {
        "print": Path(printer),
        "interpret": lib / "libexec" / "heaptrack_interpret",
        "preload": lib / "libheaptrack_preload.so",
    }
    return parts if all(p.exists() for p in parts.values()) else None


def unavailable() -> str | None:
    """Why heaptrack cannot trace here (one line), or None when it can."""
    if _parts() is None:
        missing = [n for n in (HEAPTRACK, HEAPTRACK_PRINT) if not shutil.which(n)]
        what = " and ".join(missing) if missing else "heaptrack's interpreter or preload library"
        return f"heaptrack is not installed ({what} missing); {INSTALL}"
    if not shutil.which("zstd") and not shutil.which("gzip"):
        return "heaptrack's capture needs zstd or gzip on PATH"
    return None


def capture_file(capture_path: str | os.PathLike[str]) -> Path:
    """The file the capture is written to: `capture_path` when it ends in .zst or .gz,
    else `capture_path` + .zst (.gz where zstd is missing), as heaptrack's script names it."""
    path = Path(capture_path)
    if path.name.endswith((".zst", ".gz")):
        return path
    return path.with_name(path.name + (".zst" if shutil.which("zstd") else ".gz"))


def wrap(command: Sequence[str], capture_path: str | os.PathLike[str]) -> list[str]:
    """The argv that runs `command` under heaptrack, as the same process (exec): its pid is
    the command's; the capture lands at `capture_file(capture_path)` once the process has
    ended and the interpreter has written everything (`wait_capture`)."""
    parts = _parts()
    if parts is None:
        raise EnvironmentProblem(unavailable() or INSTALL)
    out = capture_file(capture_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    compress = "zstd -q -c" if out.name.endswith(".zst") else "gzip -c"
    args = [str(out), str(parts["interpret"]), str(parts["preload"]), compress]
    return ["/bin/sh", "-c", _SCRIPT, "soak-heaptrack", *args, *command]


def wait_capture(capture_path: str | os.PathLike[str], timeout_s: float = 60.0) -> Path:
    """The complete capture, once the interpreter has finished it (it may still be reading
    the fifo's backlog after the server has exited)."""
    out = capture_file(capture_path)
    deadline = time.monotonic() + timeout_s
    while not out.exists():
        if time.monotonic() > deadline:
            raise EnvironmentProblem(f"heaptrack capture {out} not complete after {timeout_s:g} s")
        time.sleep(0.05)
    return out


def started_at(capture: str | os.PathLike[str]) -> float | None:
    """Epoch seconds of the capture's time 0 (when the traced process opened the fifo)."""
    try:
        return float(Path(str(capture_file(capture)) + START_SUFFIX).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


#: Bytes decompressed per step of the reader (a capture is ~7 bytes per event).
CHUNK_BYTES = 32 << 20
_HEX = np.full(256, -1, dtype=np.int64)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)


def _chunks(path: Path) -> Iterator[bytes]:
    """The decompressed capture in pieces that end at a line's end."""
    if path.name.endswith(".zst"):
        proc = subprocess.Popen(["zstd", "-dcq", str(path)], stdout=subprocess.PIPE)
        stream: Any = proc.stdout
    else:
        proc = None
        stream = gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")
    rest = b""
    try:
        while block := stream.read(CHUNK_BYTES):
            block = rest + block
            cut = block.rfind(b"\n") + 1
            rest = block[cut:]
            if cut:
                yield block[:cut]
        if rest:
            yield rest + b"\n"
    finally:
        stream.close()
        if proc is not None:
            proc.wait()


def _hex_fields(chunk: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The hex number from starts[i] to ends[i] of each line, vectorised one digit position
    at a time: the bulk of a capture is one-number lines (`+`, `-`, `c`), ~550 per request."""
    width = ends - starts
    value = np.zeros(starts.size, dtype=np.int64)
    for k in range(int(width.max()) if width.size else 0):
        more = width > k
        digit = _HEX[chunk[np.where(more, starts + k, 0)]]
        value = np.where(more, value * 16 + digit, value)
    return value


class _Capture:
    """One pass over a capture: the tables as lists, the event stream as arrays."""

    def __init__(self) -> None:
        self.strings: list[str] = [""]  # 1-based in the file; 0 is "none"
        self.ips: list[tuple[int, list[tuple[int, int, int]]]] = [(0, [])]  # (module, frames)
        self.traces: list[tuple[int, int]] = [(0, 0)]  # (ip, parent)
        self.info_size: list[int] = []
        self.info_trace: list[int] = []
        self._events: list[np.ndarray] = []  # info index per allocation, ~index per free
        self._stamps: list[np.ndarray] = []  # ms
        self._stamp_events: list[np.ndarray] = []  # events before each stamp
        self._n_events = 0
        self._frames: dict[int, list[Frame]] = {}

    @property
    def events(self) -> np.ndarray:
        return np.concatenate(self._events) if self._events else np.zeros(0, np.int64)

    @property
    def stamps(self) -> np.ndarray:
        return np.concatenate(self._stamps) if self._stamps else np.zeros(0, np.int64)

    @property
    def stamp_events(self) -> np.ndarray:
        return np.concatenate(self._stamp_events) if self._stamp_events else np.zeros(0, np.int64)

    def read(self, chunks: Iterable[bytes]) -> _Capture:
        for chunk in chunks:
            self._read_chunk(chunk)
        return self

    def _read_chunk(self, raw: bytes) -> None:
        chunk = np.frombuffer(raw, dtype=np.uint8)
        ends = np.flatnonzero(chunk == 10)
        starts = np.concatenate(([0], ends[:-1] + 1))
        mode = chunk[np.minimum(starts, chunk.size - 1)]
        mode[ends == starts] = ord("#")
        plus, minus, stamp = mode == ord("+"), mode == ord("-"), mode == ord("c")
        event = plus | minus
        numbers = np.zeros(starts.size, dtype=np.int64)
        simple = event | stamp
        numbers[simple] = _hex_fields(chunk, starts[simple] + 2, ends[simple])
        values = np.where(minus, ~numbers, numbers)[event]
        before = np.cumsum(event) - event  # events before each line, in this chunk
        self._events.append(values)
        self._stamps.append(numbers[stamp])
        self._stamp_events.append(before[stamp] + self._n_events)
        self._n_events += int(values.size)
        for k in np.flatnonzero(~simple & (mode != ord("#"))):
            self._table_line(raw[starts[k] : ends[k]].decode("utf-8", "replace"))

    def _table_line(self, line: str) -> None:
        mode = line[:1]
        if mode == "a":
            size, trace = line[2:].split()
            self.info_size.append(int(size, 16))
            self.info_trace.append(int(trace, 16))
        elif mode == "t":
            ip, parent = line[2:].split()
            self.traces.append((int(ip, 16), int(parent, 16)))
        elif mode == "i":
            # ip module [function [file line [function file line]...]]
            fields = [int(x, 16) for x in line[2:].split()]
            frames = [(fields[2], 0, 0)] if len(fields) in (3, 4) else []
            frames += [(*fields[k : k + 3],) for k in range(2, len(fields) - 2, 3)]
            self.ips.append((fields[1], frames))  # type: ignore[arg-type]
        elif mode == "s":
            self.strings.append(line[2:].split(" ", 1)[-1])
        elif mode == "v":
            parts = line.split()
            version = int(parts[2], 16) if len(parts) > 2 else 0
            if version != _FILE_VERSION:
                raise EnvironmentProblem(
                    f"heaptrack file format {version} is not the one soak reads "
                    f"({_FILE_VERSION}, heaptrack 1.4)"
                )

    def _ip_frames(self, ip: int) -> list[Frame]:
        """An ip's frames (its own first, then those it was inlined into), made once."""
        made = self._frames.get(ip)
        if made is None:
            module, frames = self.ips[ip]
            library = os.path.basename(self.strings[module]) or "?"
            made = self._frames[ip] = [
                Frame(
                    self.strings[fn] or "<unknown>",
                    self.strings[file] or "<unknown>",
                    line,
                    library,
                )
                for fn, file, line in frames or [(0, 0, 0)]
            ]
        return made

    def frames(self, trace: int, depth: int) -> list[Frame]:
        """The stack of a trace, innermost first."""
        out: list[Frame] = []
        seen = 0
        while trace and len(out) < depth and seen < 4096:
            seen += 1
            ip, trace = self.traces[trace]
            out += self._ip_frames(ip)
        return out


def _trimmed(frames: list[Frame]) -> list[Frame]:
    start = 0
    while start < len(frames) - 1 and (
        frames[start].function in sites.ALLOCATOR_NAMES
        or frames[start].function.startswith(sites.ALLOCATOR_PREFIXES)
        or frames[start].library.startswith("libheaptrack")
    ):
        start += 1
    return frames[start:]


def _quiet_stamps(
    stamps: np.ndarray, windows: Mapping[int, tuple[float, float]], start_s: float
) -> tuple[list[int], np.ndarray]:
    """(iterations, stamp index) for each quiet window that holds a timestamp: the one
    nearest the window's middle."""
    iterations, indices = [], []
    for it in sorted(windows):
        begin, end = ((t - start_s) * 1000 for t in windows[it])
        if stamps.size == 0:
            break
        mid = (begin + end) / 2
        at = int(np.searchsorted(stamps, mid))
        near = min(
            (k for k in (at - 1, at) if 0 <= k < stamps.size), key=lambda k: abs(stamps[k] - mid)
        )
        if math.ceil(begin) <= stamps[near] <= math.floor(end):
            iterations.append(it)
            indices.append(near)
    return iterations, np.asarray(indices, dtype=np.int64)


def read_sites(
    capture: str | os.PathLike[str],
    windows: Mapping[int, tuple[float, float]],
    depth: int = 8,
    top: int = 50,
    start_s: float | None = None,
) -> SiteCapture:
    """Live bytes and counts per site at each quiet point (`windows`: iteration -> (begin,
    end) in epoch seconds); keeps the `top` sites that grew most, and the sum of all.

    `start_s`: epoch seconds of the capture's time 0 (default: what `wrap` wrote)."""
    began = time.perf_counter()
    path = capture_file(capture)
    start = started_at(path) if start_s is None else start_s
    if start is None:
        raise EnvironmentProblem(f"{path}{START_SUFFIX}: missing (the capture's start time)")
    data = _Capture().read(_chunks(path))
    stamps = data.stamps
    iterations, quiet = _quiet_stamps(stamps, windows, start)
    n = len(iterations)
    missed = sorted(set(windows) - set(iterations))
    if missed:
        log.warning(
            "quiet points without a heaptrack timestamp: %s (capture %.3f..%.3f s)",
            missed,
            start,
            start + (stamps[-1] / 1000 if stamps.size else 0),
        )
    # Site of each allocation info: its trimmed stack's first `depth` frames.
    by_key: dict[str, int] = {}
    site_frames: list[tuple[Frame, ...]] = []
    site_of_trace: dict[int, int] = {}
    info_site = np.empty(len(data.info_trace), dtype=np.int64)
    for k, trace in enumerate(data.info_trace):
        site = site_of_trace.get(trace)
        if site is None:
            frames = _trimmed(data.frames(trace, depth + sites.SHOWN_FRAMES))
            key = " <- ".join(f"{f.function}@{f.library}" for f in frames[:depth])
            site = by_key.get(key)
            if site is None:
                site = by_key[key] = len(site_frames)
                site_frames.append(tuple(frames[: sites.SHOWN_FRAMES]))
            site_of_trace[trace] = site
        info_site[k] = site
    events = data.events
    sign = np.where(events >= 0, 1, -1)
    info = np.where(events >= 0, events, ~events)
    sizes = np.asarray(data.info_size, dtype=float)
    # Quiet point j sees the events before stamp_events[quiet[j]]: segment of each event.
    cut = data.stamp_events[quiet] if n else np.zeros(0, np.int64)
    segment = np.searchsorted(cut, np.arange(events.size), side="right")
    inside = segment < n
    n_sites = len(site_frames)
    flat = segment[inside] * n_sites + info_site[info[inside]]
    size_ev = sizes[info[inside]] * sign[inside]
    live_bytes = np.cumsum(
        np.bincount(flat, weights=size_ev, minlength=n * n_sites).reshape(n, n_sites), axis=0
    ).T
    live_count = np.cumsum(
        np.bincount(flat, weights=sign[inside], minlength=n * n_sites).reshape(n, n_sites),
        axis=0,
    ).T
    order = sites.rank_by_growth(live_bytes)[:top]
    keys = list(by_key)
    chosen = [Site(k + 1, keys[i], site_frames[i]) for k, i in enumerate(order)]
    return SiteCapture(
        iterations=iterations,
        sites=chosen,
        live_bytes=live_bytes[order],
        live_count=live_count[order],
        total_bytes=live_bytes.sum(axis=0),
        total_count=live_count.sum(axis=0),
        capture_bytes=path.stat().st_size,
        stats={
            "read_s": time.perf_counter() - began,
            "events": float(events.size),
            "duration_s": float(stamps[-1]) / 1000 if stamps.size else 0.0,
        },
    )


def captures_in(folder: str | os.PathLike[str]) -> list[Path]:
    """The capture of every process launched under `wrap` into `folder` (complete or not
    yet), in launch order: each launch writes `<capture>.owner` before the exec."""
    owners = Path(folder).glob(f"*{_OWNER_SUFFIX}")
    found = [p.with_name(p.name[: -len(_OWNER_SUFFIX)]) for p in owners]
    return sorted(found, key=lambda p: (len(p.name), p.name))


def read_servers(
    captures: Sequence[Path],
    windows: Mapping[int, tuple[float, float]],
    depth: int = 8,
    top: int = 50,
    timeout_s: float = 60.0,
) -> SiteCapture:
    """The sites of several server processes summed by stack (N servers run the same code,
    as their RSS is summed), at the quiet points every process that lived at one saw; the
    `top` that grew most. Waits for each capture to be complete (`wait_capture`)."""
    began = time.perf_counter()
    results = [
        read_sites(wait_capture(c, timeout_s), windows, depth, top=1 << 30) for c in captures
    ]
    if not results:
        raise EnvironmentProblem("no heaptrack capture to read")
    # A process that ended before the first quiet point (a user model's preflight) holds
    # nothing at any: it takes no part.
    results = [r for r in results if r.iterations] or results[:1]
    common = sorted(set.intersection(*(set(r.iterations) for r in results)))
    n = len(common)
    keys: dict[str, int] = {}
    frames: list[Site] = []
    rows_bytes: list[np.ndarray] = []
    rows_count: list[np.ndarray] = []
    total_bytes, total_count = np.zeros(n), np.zeros(n)
    for result in results:
        cols = [result.iterations.index(it) for it in common]
        total_bytes += result.total_bytes[cols]
        total_count += result.total_count[cols]
        for k, site in enumerate(result.sites):
            row = keys.get(site.key)
            if row is None:
                row = keys[site.key] = len(frames)
                frames.append(site)
                rows_bytes.append(np.zeros(n))
                rows_count.append(np.zeros(n))
            rows_bytes[row] += result.live_bytes[k, cols]
            rows_count[row] += result.live_count[k, cols]
    live_bytes = np.asarray(rows_bytes).reshape(len(frames), n)
    live_count = np.asarray(rows_count).reshape(len(frames), n)
    order = sites.rank_by_growth(live_bytes)[:top]
    return SiteCapture(
        iterations=common,
        sites=[replace(frames[i], site_id=k + 1) for k, i in enumerate(order)],
        live_bytes=live_bytes[order],
        live_count=live_count[order],
        total_bytes=total_bytes,
        total_count=total_count,
        capture_bytes=sum(r.capture_bytes for r in results),
        stats={"read_s": time.perf_counter() - began, "captures": float(len(results))},
    )


__all__ = [
    "CAPTURE_DIR",
    "INSTALL",
    "captures_in",
    "capture_file",
    "read_servers",
    "read_sites",
    "started_at",
    "unavailable",
    "wait_capture",
    "wrap",
]
