"""How soak writes numbers for people, and cleans them for JSON: the one home of formatting.

Pure (stdlib only), so the analysis, the reports, triage and the benchmark all share it and
every output stays the same wherever a value is shown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

_BINARY = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def finite(value: Any) -> float | None:
    """A finite float, or None (NULL, NaN, infinities and non-numbers all mean 'no number')."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None, containers are walked, bytes become hex."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def binary_size(value: float, decimals: int = 2) -> str:
    """Bytes in binary units (GiB, MiB, KiB) with ``decimals`` places, plain bytes below 1 KiB."""
    magnitude = abs(value)
    for unit, scale in _BINARY:
        if magnitude >= scale:
            return f"{value / scale:.{decimals}f} {unit}"
    return f"{value:.0f} B"


def human(value: float | None, metric: str) -> str:
    """A metric's value for tables: bytes (a name ending in _bytes) as KiB/MiB, counters as
    plain numbers; NaN and None as a dash."""
    if finite(value) is None:
        return "-"
    assert value is not None
    if metric.endswith("_bytes"):
        return binary_size(value)
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def by_kind(value: float | None, kind: str) -> str:
    """A value in a verdict's sentence: one decimal of binary units for memory, four
    significant digits for counters, 'n/a' when missing."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if kind == "counter":
        return f"{value:.4g}"
    return binary_size(value, 1)


def duration(seconds: float | None) -> str:
    """A compact human duration: 45s, 12m03s, 3h04m, 2d03h; '-' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def mib(size: float) -> str:
    """Bytes as MiB with one decimal, for footprints."""
    return f"{size / 2**20:.1f} MiB"


def cell_label(
    cell: Mapping[str, Any], order: Sequence[str] = (), sep: str = " ", empty: str = "-"
) -> str:
    """A matrix cell as k=v pairs joined by ``sep``: keys named in ``order`` first, in that
    order, the rest alphabetically; with no ``order``, the cell's own order. ``empty`` for {}."""
    if not cell:
        return empty
    keys = list(cell)
    if order:
        rank = {k: i for i, k in enumerate(order)}
        keys.sort(key=lambda k: (rank.get(k, len(rank)), k))
    return sep.join(f"{k}={cell[k]}" for k in keys)
