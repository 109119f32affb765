"""The results database (SQLite through sqlite-utils): schema, writes, read-only opens.

WAL mode and one transaction per iteration, so a run killed at any moment keeps every
committed iteration. Never imports triton; the workload never sees SQL. Units are in the
column names (`_bytes`, `_s`) so a query never has to guess.

`schema` holds the tables and their forward migration, `files` inspects and opens existing
files, `writer` is the writable `Store`, `rows` builds and reads back rows, `reads` reads
runs and their series.
"""

from soak.phases import PHASES
from soak.store.files import BUSY_TIMEOUT_S, check_writable_target, open_readonly
from soak.store.reads import (
    LOAD_CHUNK,
    export_run,
    latest_run_id,
    load_series,
    load_site_series,
    run_row,
)
from soak.store.rows import HEAP_COLUMNS, event, finding_from_row, finding_row, sample_row
from soak.store.schema import (
    INDEXES,
    LATER_UNITS,
    RUN_STATUSES,
    SAMPLE_COLUMNS,
    SCHEMA_VERSION,
    SERVER_SAMPLE_COLUMNS,
    TABLES,
    UNIT_COLUMNS,
    ensure_schema,
)
from soak.store.writer import Store

__all__ = [
    "BUSY_TIMEOUT_S",
    "HEAP_COLUMNS",
    "INDEXES",
    "LATER_UNITS",
    "LOAD_CHUNK",
    "PHASES",
    "RUN_STATUSES",
    "SAMPLE_COLUMNS",
    "SCHEMA_VERSION",
    "SERVER_SAMPLE_COLUMNS",
    "TABLES",
    "UNIT_COLUMNS",
    "Store",
    "check_writable_target",
    "ensure_schema",
    "event",
    "export_run",
    "finding_from_row",
    "finding_row",
    "latest_run_id",
    "load_series",
    "load_site_series",
    "open_readonly",
    "run_row",
    "sample_row",
]
