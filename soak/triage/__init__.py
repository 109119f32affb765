"""Triage of stored runs: list, show, query, compare, browse. Reads the database, never writes it.

One module per job: :mod:`~soak.triage.lookup` (opening read-only, run ids, cells, times),
:mod:`~soak.triage.abandoned` (runs whose supervisor is gone), :mod:`~soak.triage.runs`,
:mod:`~soak.triage.show`, :mod:`~soak.triage.query` (with its read-only guard),
:mod:`~soak.triage.canned` (the canned SQL), :mod:`~soak.triage.compare` and
:mod:`~soak.triage.browse`. Every function takes a database opened with
:func:`soak.triage.lookup.readonly` (a connection that refuses writes); ``run_query`` also
refuses writes itself, before SQLite sees them, so that a user's ``DELETE`` is answered with a
clear sentence rather than a driver error. Nothing here prints: ``soak.report`` renders what
these functions return. This package exports the public names of its modules.
"""

from soak.triage.abandoned import display_status, staleness_limit, supervisor_alive
from soak.triage.browse import datasette_command
from soak.triage.canned import CANNED, CannedQuery, canned_list
from soak.triage.compare import (
    SIGNIFICANCE_RULE,
    CellComparison,
    Comparison,
    MetricComparison,
    SlopeSide,
    compare,
    compare_sides,
    is_run_spec,
    matrix_runs,
    run_slopes,
)
from soak.triage.lookup import (
    iso_time,
    local_time,
    matrix_names,
    parse_cell,
    readonly,
    resolve_run,
    run_duration,
)
from soak.triage.query import (
    DEFAULT_TIMEOUT_S,
    QueryRefused,
    QueryResult,
    QueryStream,
    canned_statement,
    coerce_param,
    parse_params,
    run_canned,
    run_query,
    split_statements,
    stream_query,
)
from soak.triage.runs import RunSummary, WorstMetric, list_runs, worst_metric
from soak.triage.show import (
    EventGroup,
    EventMessage,
    PhaseTiming,
    RunDetail,
    finding_from_row,
    run_detail,
    site_finding_from_row,
    triton_message,
)

__all__ = [
    "CANNED",
    "SIGNIFICANCE_RULE",
    "CannedQuery",
    "CellComparison",
    "Comparison",
    "EventGroup",
    "EventMessage",
    "MetricComparison",
    "PhaseTiming",
    "QueryRefused",
    "QueryResult",
    "QueryStream",
    "DEFAULT_TIMEOUT_S",
    "canned_statement",
    "stream_query",
    "RunDetail",
    "RunSummary",
    "SlopeSide",
    "WorstMetric",
    "canned_list",
    "coerce_param",
    "compare",
    "compare_sides",
    "datasette_command",
    "display_status",
    "finding_from_row",
    "is_run_spec",
    "iso_time",
    "list_runs",
    "local_time",
    "matrix_names",
    "matrix_runs",
    "parse_cell",
    "parse_params",
    "readonly",
    "resolve_run",
    "run_canned",
    "run_detail",
    "run_duration",
    "run_query",
    "run_slopes",
    "site_finding_from_row",
    "split_statements",
    "staleness_limit",
    "supervisor_alive",
    "triton_message",
    "worst_metric",
]
