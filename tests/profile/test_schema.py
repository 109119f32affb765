"""soak.profile.schema: every key's default, type, range and choices, checked through parse."""

from __future__ import annotations

import pytest

from soak import profile as profiles
from soak.profile.keys import Key
from soak.profile.schema import RUN_KEYS, all_keys
from soak.profile.sections import SECTIONS
from tests.profile.helpers import SOURCE, error_of, toml_for


def test_defaults_pass_their_own_validation():
    for name, key in all_keys():
        if not name.startswith("thresholds."):
            assert key.check(SOURCE, key.default) == key.default, name


# -- error messages -------------------------------------------------------------------------


def _wrong_type(key: Key) -> object:
    return {str: 5, int: "x", float: "x", bool: 1, list: 5, dict: 5}[key.kind]


@pytest.mark.parametrize("qualified, key", all_keys(), ids=[n for n, _ in all_keys()])
def test_every_key_refuses_a_wrong_type_naming_file_key_and_type(qualified: str, key: Key):
    label = qualified.replace("<metric>", "rss_bytes").replace("<name>", "m")
    message = error_of(toml_for(qualified, _wrong_type(key)))
    assert message.startswith(SOURCE + ": ")
    assert f"{label} must be " in message
    if key.choices or key.low is not None:
        assert f"allowed {key.allowed()}" in message


BOUNDED = [(n, k) for n, k in all_keys() if k.low is not None or k.high is not None]


@pytest.mark.parametrize("qualified, key", BOUNDED, ids=[n for n, _ in BOUNDED])
def test_every_bounded_key_refuses_out_of_range_naming_the_range(qualified: str, key: Key):
    label = qualified.replace("<metric>", "rss_bytes").replace("<name>", "m")
    below = key.low - 1 if key.kind is int else key.low - 0.5
    cases = [below] + ([key.high + 1] if key.high is not None else [])
    for value in cases:
        message = error_of(toml_for(qualified, value))
        assert message.startswith(SOURCE + ": ")
        assert f"{label} = " in message and "out of range" in message
        assert key.allowed() in message
    assert key.check(SOURCE, key.low) == key.low
    if key.high is not None:
        assert key.check(SOURCE, key.high) == key.high


CHOICE_KEYS = [(n, k) for n, k in all_keys() if k.choices]


@pytest.mark.parametrize("qualified, key", CHOICE_KEYS, ids=[n for n, _ in CHOICE_KEYS])
def test_every_choice_key_lists_the_choices(qualified: str, key: Key):
    message = error_of(toml_for(qualified, "bogus"))
    assert f"{qualified} = 'bogus' is not allowed" in message
    assert ", ".join(repr(c) for c in key.choices) in message


def test_all_keys_covers_the_schema():
    names = {n for n, _ in all_keys()}
    assert {k.name for k in RUN_KEYS} <= names
    for section, keys in SECTIONS.items():
        assert {f"{section}.{k.name}" for k in keys} <= names
    assert profiles.THRESHOLD_KEYS and all(
        f"thresholds.<metric>.{k.name}" in names for k in profiles.THRESHOLD_KEYS
    )
