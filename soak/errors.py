"""The one exception hierarchy of soak; the CLI maps it to exit codes in one place."""

from __future__ import annotations


class SoakError(Exception):
    """Anything soak reports to its user as a clear one-line error."""


class ProfileError(SoakError):
    """A profile (file, key or value) or a command-line override is invalid."""


class StoreError(SoakError):
    """The results database cannot be opened, written or queried as asked."""


class EnvironmentProblem(SoakError):
    """The machine lacks something a run needs (library, stub, GPU); says what to install."""
