"""Every profile run key has a home: a runs column, a WorkloadConfig field, or a named reader."""

from __future__ import annotations

import dataclasses

from soak import profile as profiles
from soak.profile.schema import RUN_KEYS
from soak.runner.protocol import ProfileMessage
from soak.runner.run_keys import NOT_RUN_KEY_FIELDS, RUN_KEY_HOMES
from soak.runner.views import run_columns
from soak.runner.worker import workload_config
from soak.store.schema import TABLES
from soak.target.interface import MemoryType
from soak.workload.iteration import WorkloadConfig
from soak.workload.repos import Behaviour


def test_every_run_key_has_exactly_one_entry():
    names = [h.key for h in RUN_KEY_HOMES]
    assert sorted(names) == sorted(k.name for k in RUN_KEYS)
    assert len(names) == len(set(names))


def test_every_entry_names_a_real_home():
    columns = TABLES["runs"].columns
    fields = {f.name for f in dataclasses.fields(WorkloadConfig)}
    for h in RUN_KEY_HOMES:
        assert h.column or h.field or h.read_by, h.key
        assert h.column is None or h.column in columns, h
        assert h.field is None or h.field in fields, h


def test_every_workload_field_comes_from_the_table_or_is_named():
    fields = {f.name for f in dataclasses.fields(WorkloadConfig)}
    from_keys = [h.field for h in RUN_KEY_HOMES if h.field]
    assert len(from_keys) == len(set(from_keys))
    assert fields == set(from_keys) | set(NOT_RUN_KEY_FIELDS)


def test_run_columns_and_workload_config_follow_the_table():
    prof = profiles.parse(
        'servers = 3\niterations = 7\nmemory_type = "pinned"\n'
        'behaviour = "error_response"\nerror_fraction = 0.5\nbls = "sync"\n',
        "<test>",
    )
    row = run_columns(prof)
    assert row["servers"] == 3
    assert row["iterations_planned"] == 7
    assert row["memory_type"] == "pinned"
    assert row["behaviour"] == "error_response"
    assert row["error_fraction"] == 0.5
    assert set(row) <= set(TABLES["runs"].columns)
    config = workload_config(ProfileMessage.of(prof))
    assert config.servers == 3
    assert config.memory_type is MemoryType.PINNED
    assert config.behaviour is Behaviour.ERROR_RESPONSE
    assert config.error_fraction == 0.5
    assert config.bls == "sync"
