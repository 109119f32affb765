"""One profile key: its type, range or choices, default and meaning; `Key.check` is the
validation, and the words an error uses for a value come from here."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from soak.errors import ProfileError


@dataclass(frozen=True)
class Key:
    name: str
    kind: type
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None

    def check(self, where: str, value: Any, label: str | None = None) -> Any:
        """Return the value (ints widened to float where floats are wanted) or raise.

        ``where`` is the file (or "" for a command-line flag), ``label`` how the key is
        written there (``timeouts.load``, ``--servers``; default: the key's name).
        """
        at = f"{where}: " if where else ""
        label = label or self.name
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.kind is int and isinstance(value, bool) or not isinstance(value, self.kind):
            raise ProfileError(
                f"{at}{label} must be {type_name(self.kind)}, got {show_value(value)} "
                f"({kind_of(value)}){self._limits()}"
            )
        if self.kind is float and not math.isfinite(value):
            raise ProfileError(
                f"{at}{label} must be a finite number, got {value!r}{self._limits()}"
            )
        if self.choices is not None and value not in self.choices:
            raise ProfileError(
                f"{at}{label} = {show_value(value)} is not allowed; use one of "
                + ", ".join(repr(c) for c in self.choices)
            )
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            raise ProfileError(f"{at}{label} = {value!r} is out of range; allowed {self.allowed()}")
        return value

    def _limits(self) -> str:
        bounded = self.choices or self.low is not None or self.high is not None
        return f"; allowed {self.allowed()}" if bounded else ""

    def allowed(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.low is not None and self.high is not None:
            return f"{fmt_number(self.low)} .. {fmt_number(self.high)}"
        if self.low is not None:
            return f">= {fmt_number(self.low)}"
        return type_name(self.kind)


def fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def type_name(t: type) -> str:
    return {
        int: "an integer",
        float: "a number",
        bool: "true or false",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(t, t.__name__)


def kind_of(value: Any) -> str:
    """What a value read from TOML is, in the words of an error message."""
    return "a boolean" if isinstance(value, bool) else type_name(type(value))


def show_value(value: Any, limit: int = 60) -> str:
    """A value as it appears in an error: TOML's true/false, else repr (one line), cut when long."""
    text = ("true" if value else "false") if isinstance(value, bool) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dotted(*parts: str) -> str:
    """A dotted TOML key; parts that are not bare keys are quoted, so it stays one line."""
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else repr(p) for p in parts)
