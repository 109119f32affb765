"""Shared by the profile tests: a profile's one-line error, and TOML setting one key."""

from __future__ import annotations

import json

import pytest

from soak.errors import ProfileError
from soak.profile.loading import parse

SOURCE = "some/dir/p.toml"


def error_of(text: str, source: str = SOURCE) -> str:
    with pytest.raises(ProfileError) as info:
        parse(text, source)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"
    return message


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def toml_for(qualified: str, value: object) -> str:
    """A profile setting one key, written as a TOML table where the key is in one."""
    parts = qualified.replace("<metric>", "rss_bytes").replace("<name>", "m").split(".")
    if len(parts) == 1:
        return f"{parts[0]} = {toml_value(value)}\n"
    return f"[{'.'.join(parts[:-1])}]\n{parts[-1]} = {toml_value(value)}\n"
