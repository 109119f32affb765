"""soak.formatting: the one home of value formatting and of NaN -> None cleaning."""

from __future__ import annotations

import math

from soak.formatting import binary_size, by_kind, cell_label, duration, finite, human, plain
from soak.profile import MATRIX_KEYS


def test_formatting_helpers():
    assert duration(45) == "45s" and duration(723) == "12m03s"
    assert duration(3 * 3600 + 240) == "3h04m" and duration(None) == "-"
    assert (
        cell_label({"servers": 4, "memory_type": "gpu"}, MATRIX_KEYS) == "servers=4 memory_type=gpu"
    )
    assert cell_label({}) == "-"
    assert finite(math.nan) is None and finite("3") == 3.0


def test_cell_label_keeps_the_cell_order_without_one():
    cell = {"servers": 4, "memory_type": "gpu"}
    assert cell_label({"memory_type": "gpu", "servers": 4}, MATRIX_KEYS) == cell_label(cell, ())
    assert cell_label({"b": 1, "a": 2}, sep=",") == "b=1,a=2"
    assert cell_label({}, empty="") == ""


def test_values_in_tables_and_in_verdict_sentences():
    assert human(1536, "rss_bytes") == "1.50 KiB" and human(512, "rss_bytes") == "512 B"
    assert human(0.0871, "threads") == "0.0871" and human(12345.0, "threads") == "12345"
    assert human(math.nan, "rss_bytes") == "-" and human(None, "fds") == "-"
    assert by_kind(3 * 2**20, "memory") == "3.0 MiB" and by_kind(2.5, "counter") == "2.5"
    assert by_kind(math.inf, "memory") == "n/a"
    assert binary_size(-(2**31), 1) == "-2.0 GiB"


def test_plain_cleans_nested_values_for_json():
    value = {"a": math.nan, 1: [math.inf, 2.0, b"\x01"], "t": (None, "x")}
    assert plain(value) == {"a": None, "1": [None, 2.0, "01"], "t": [None, "x"]}
