"""Triton's log lines as a bounded number of event rows per iteration.

One Triton log line per request (a model raising on every request) made one row per line:
about 300 KB a quiet point at 500 requests, tens of GB in a week-long soak. The same message
(glog prefix aside) of one kind in one read is therefore one row with its `count` and the
times of its first and (when it came more than once) last line; past `ceiling` distinct
messages the rest are one `triton_log_dropped` event whose count is the lines not stored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from soak.store import event
from soak.triton.facts import LogLine, log_message

DROPPED_KIND = "triton_log_dropped"
TRITON_LOG_ROWS = 20  # the profile key's default (soak.profile.schema)


@dataclass
class _Group:
    first: LogLine
    last: LogLine
    count: int = 1


def line_time(text: str, now: float) -> float | None:
    """When glog wrote a line ('W1125 14:03:22.123456 ...', local time, no year): the latest
    such moment not after `now` (a line from before new year is from last year)."""
    try:
        month, day = int(text[1:3]), int(text[3:5])
        clock, fraction = text[6:21].split(".")
        hour, minute, second = (int(x) for x in clock.split(":"))
        year = time.localtime(now).tm_year
        for y in (year, year - 1):
            t = time.mktime((y, month, day, hour, minute, second, 0, 0, -1)) + float(
                "0." + fraction
            )
            if t <= now + 60:
                return t
    except (ValueError, OverflowError, IndexError):
        return None
    return None


def log_events(lines: list[LogLine], iteration: int | None, ceiling: int) -> list[dict[str, Any]]:
    """Events of one read of Triton's log: one per distinct (kind, message), errors first,
    then in the order they first came; at most `ceiling` of them plus one dropped count."""
    groups: dict[tuple[str, str], _Group] = {}
    for line in lines:
        key = (line.kind, log_message(line.text))
        group = groups.get(key)
        if group is None:
            groups[key] = _Group(line, line)
        else:
            group.count += 1
            group.last = line
    ordered = sorted(groups.values(), key=lambda g: g.first.kind != "triton_error")
    now = time.time()
    out = []
    for group in ordered[: max(0, ceiling)]:
        row = event(group.first.kind, group.first.text, iteration)
        row["t"] = line_time(group.first.text, now) or now
        if group.count > 1:
            row["last_t"] = line_time(group.last.text, now) or now
        row["count"] = group.count
        out.append(row)
    dropped = ordered[max(0, ceiling) :]
    if dropped:
        lines_dropped = sum(g.count for g in dropped)
        row = event(
            DROPPED_KIND,
            f"{lines_dropped} Triton log line(s) of {len(dropped)} distinct message(s) not "
            f"stored: more than triton_log_rows = {ceiling} distinct messages this iteration",
            iteration,
        )
        row["count"] = lines_dropped
        out.append(row)
    return out
