"""The one exception hierarchy of soak, and its exit codes; the CLI maps one to the other in
one place (soak.cli.common)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum


class ExitCode(IntEnum):
    """soak's exit statuses, for every command and for `soak run` over all its cells."""

    PASSED = 0
    LEAK = 1
    FAILED = 2  # a failed run, or bad input (one `soak: error:` line)
    INCONCLUSIVE = 3

    @classmethod
    def worst(cls, codes: Iterable[int]) -> ExitCode:
        """The code of a set of runs: a failure outranks a leak, a leak an inconclusive
        result, which outranks a pass; no runs at all is a failure."""
        rank = {cls.FAILED: 3, cls.LEAK: 2, cls.INCONCLUSIVE: 1, cls.PASSED: 0}
        return cls(max(codes, key=lambda c: rank.get(c, 3), default=cls.FAILED))


class SoakError(Exception):
    """Anything soak reports to its user as a clear one-line error."""


class ProfileError(SoakError):
    """A profile (file, key or value) or a command-line override is invalid."""


class StoreError(SoakError):
    """The results database cannot be opened, written or queried as asked."""


class ServerError(SoakError):
    """A server refused or failed a call, with the server's own error code name and message;
    the workload catches this whatever kind of server it drives (soak.target)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ServerTimeout(ServerError):
    """No answer within the timeout; the call may still be running inside the server."""


class EnvironmentProblem(SoakError):
    """The machine lacks something a run needs (library, stub, GPU); says what to install."""


class OutputError(SoakError):
    """A file or folder asked for on the command line (--junit, --json-file, --out) cannot be
    written; never a verdict."""
