"""What soak knows of Triton outside the C API, stated once: executable and region names,
messages it matches, model states, and the format of Triton's log lines.

Plain Python, no C API: the supervisor (which samples Triton's processes but never hosts
Triton), the triage and a remote target import it without loading libtritonserver or the
ctypes prototypes (see soak/triton/__init__.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

STUB_EXECUTABLE = "triton_python_backend_stub"
"""File name of the python backend's stub executable: one process per model instance."""

REGION_PREFIX = "triton_python_backend_shm_region_"
"""Default ``shm-region-prefix-name`` of the python backend; a region is this plus a uuid."""

EXIT_TIMEOUT_EXPIRED = "Exit timeout expired"
"""In the error of a server stop that gave up waiting for models still in use."""

BUSY_MODEL_STATES = ("READY", "UNLOADING", "LOADING")
"""Model index states of a model that is not yet fully unloaded."""

#: How a Triton version's model statistics count an error response that a python model
#: returns: as a failed inference up to 2.43.0, as a success from 2.51.0 (both seen with the
#: upgrade profile; README: findings). Versions between were not run: either count passes.
ERROR_RESPONSE_FAILS_UP_TO = (2, 43)
ERROR_RESPONSE_SUCCEEDS_FROM = (2, 51)


def error_response_count(version: str | None) -> str:
    """'failure', 'success' or 'either': how `version` ('2.43.0') counts a python model's
    error response in its statistics; 'either' for a version not seen or not known."""
    parts = re.match(r"(\d+)\.(\d+)", version or "")
    if parts is None:
        return "either"
    major_minor = (int(parts.group(1)), int(parts.group(2)))
    if major_minor <= ERROR_RESPONSE_FAILS_UP_TO:
        return "failure"
    if major_minor >= ERROR_RESPONSE_SUCCEEDS_FROM:
        return "success"
    return "either"


#: Triton logs through glog: 'W1125 14:03:22.123456 42 file.cc:7] text', the first letter the
#: severity (Info, Warning, Error, Fatal), then month and day, time, thread id, source line.
_GLOG_HEAD = re.compile(r"^[WEIF]\d{4} ")
#: The severities soak stores as events, and the event kind each becomes.
EVENT_KINDS = {"W": "triton_warning", "E": "triton_error"}


def log_message(line: str) -> str:
    """A Triton log line without its glog prefix ('W1125 14:03:22.123 42 file.cc:7] '), so
    the same warning from different times and threads counts as one."""
    head, sep, rest = line.partition("] ")
    return rest.strip() if sep and _GLOG_HEAD.match(head) else line.strip()


@dataclass(frozen=True)
class LogLine:
    kind: str  # one of EVENT_KINDS' values
    text: str  # the whole line, prefix included, stripped


class LogReader:
    """The warning and error lines Triton has added to its log file since the last read;
    a line still being written is left for the next read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def new_lines(self) -> list[LogLine]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        out = []
        for raw in data[:end].splitlines():
            line = raw.decode(errors="replace")
            kind = EVENT_KINDS.get(line[:1])
            if kind:
                out.append(LogLine(kind, line.strip()))
        return out
