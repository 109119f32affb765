"""`soak query`: one read-only SQL statement (writes refused before SQLite sees them), or a
canned query by name; rows are streamed, and a query can be stopped (timeout, Ctrl-C)."""

from __future__ import annotations

import itertools
import math
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from soak.errors import StoreError
from soak.triage.canned import CANNED
from soak.triage.lookup import matrix_names, no_matrix_error, resolve_run


class QueryRefused(StoreError):
    """A query that would change the database (or a connection setting); never run."""


#: Seconds a `soak query` may take unless told otherwise (0: no limit).
DEFAULT_TIMEOUT_S = 60.0


#: SQLite virtual-machine steps between two checks of the deadline and of a cancel request.
_CHECK_EVERY_OPS = 10_000


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple]
    more: bool = False  # rows were cut at the limit asked for

    def as_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


# Statements that change a database or a connection; refused before SQLite parses them.
_WRITE_KEYWORDS = {
    "INSERT",
    "UPDATE",
    "DELETE",
    "REPLACE",
    "UPSERT",
    "DROP",
    "CREATE",
    "ALTER",
    "ATTACH",
    "DETACH",
    "VACUUM",
    "REINDEX",
    "ANALYZE",
    "BEGIN",
    "COMMIT",
    "END",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
}


# PRAGMAs whose argument names a table or index and that only read.
_TABLE_PRAGMAS = {
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
}


# PRAGMAs that may be read (never set: those forms carry an argument).
_READ_PRAGMAS = _TABLE_PRAGMAS | {
    "user_version",
    "schema_version",
    "application_id",
    "page_count",
    "page_size",
    "freelist_count",
    "journal_mode",
    "encoding",
    "compile_options",
    "database_list",
    "function_list",
    "pragma_list",
    "collation_list",
    "module_list",
    "data_version",
    "query_only",
    "auto_vacuum",
    "foreign_keys",
    "busy_timeout",
    "cache_size",
}


_READ_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}


_DENIED_ACTIONS = (
    "INSERT",
    "UPDATE",
    "DELETE",
    "CREATE_INDEX",
    "CREATE_TABLE",
    "CREATE_TEMP_INDEX",
    "CREATE_TEMP_TABLE",
    "CREATE_TEMP_TRIGGER",
    "CREATE_TEMP_VIEW",
    "CREATE_TRIGGER",
    "CREATE_VIEW",
    "CREATE_VTABLE",
    "DROP_INDEX",
    "DROP_TABLE",
    "DROP_TEMP_INDEX",
    "DROP_TEMP_TABLE",
    "DROP_TEMP_TRIGGER",
    "DROP_TEMP_VIEW",
    "DROP_TRIGGER",
    "DROP_VIEW",
    "DROP_VTABLE",
    "ALTER_TABLE",
    "DETACH",
    "SAVEPOINT",
    "ANALYZE",
    "REINDEX",
)


_ACTION_NAMES = {
    getattr(sqlite3, f"SQLITE_{name}"): name.replace("_", " ")
    for name in _DENIED_ACTIONS
    if hasattr(sqlite3, f"SQLITE_{name}")
}


_COMMENT_OR_SPACE = re.compile(r"(\s+|--[^\n]*(\n|$)|/\*.*?(\*/|$))", re.S)


def _strip_leading(sql: str) -> str:
    while True:
        m = _COMMENT_OR_SPACE.match(sql)
        if not m or not m.group(0):
            return sql
        sql = sql[m.end() :]


def split_statements(sql: str) -> list[str]:
    """The statements of ``sql`` (';' inside strings and comments does not split)."""
    out, start = [], 0
    for i, ch in enumerate(sql):
        if ch == ";" and sqlite3.complete_statement(sql[start : i + 1]):
            out.append(sql[start : i + 1])
            start = i + 1
    out.append(sql[start:])
    return [s for s in out if _strip_leading(s).strip(" ;\t\r\n")]


def _refuse_by_inspection(statement: str) -> None:
    body = _strip_leading(statement)
    word = re.match(r"[A-Za-z_]+", body)
    keyword = word.group(0).upper() if word else ""
    if keyword in _WRITE_KEYWORDS:
        raise QueryRefused(f"query refused: {keyword} statement: writes are not allowed")
    if keyword == "PRAGMA":
        m = re.match(r"PRAGMA\s+(?:\w+\s*\.\s*)?(\w+)\s*(=|\()?", body, re.I)
        name = m.group(1).lower() if m else "?"
        sets = m is not None and (
            m.group(2) == "=" or (m.group(2) == "(" and name not in _TABLE_PRAGMAS)
        )
        if sets:
            raise QueryRefused(f"query refused: PRAGMA {name} sets a value: writes are not allowed")


def _describe_action(action: int, arg1: str | None, arg2: str | None) -> str:
    what = _ACTION_NAMES.get(action, f"action {action}")
    if action == sqlite3.SQLITE_PRAGMA:
        return f"PRAGMA {arg1}" + (f" = {arg2}" if arg2 is not None else "")
    if action == sqlite3.SQLITE_ATTACH:
        return f"ATTACH of {arg1!r}"
    if action == sqlite3.SQLITE_TRANSACTION:
        return f"{arg1} (a transaction)"
    if action == sqlite3.SQLITE_UPDATE:
        return f"UPDATE of {arg1}.{arg2}"
    if action == sqlite3.SQLITE_INSERT:
        return f"INSERT into {arg1}"
    if action == sqlite3.SQLITE_DELETE:
        return f"DELETE from {arg1}"
    return f"{what} {arg1}" if arg1 else what


def _warm_pragma_tables(conn: sqlite3.Connection, sql: str) -> None:
    """Let `SELECT * FROM pragma_table_info('runs')` pass the authorizer.

    The first use of a pragma's table-valued function on a connection declares its
    eponymous virtual table, which SQLite reports to the authorizer as an UPDATE of
    sqlite_master; a query that names one is refused although it only reads. Declaring the
    read-only pragmas it names first, without the authorizer, leaves only the reads.
    """
    for name in set(re.findall(r"pragma_(\w+)", sql, re.I)):
        if name.lower() in _READ_PRAGMAS:
            try:
                conn.execute(f"SELECT * FROM pragma_{name.lower()} LIMIT 0").fetchall()
            except sqlite3.Error:
                pass  # this SQLite lacks it: the query itself will say so


@dataclass
class QueryStream:
    """A running query's columns and its rows, fetched one at a time as they are read."""

    columns: list[str]
    rows: Iterator[tuple]


@contextmanager
def stream_query(
    db: sqlite_utils.Database,
    sql: str,
    params: Mapping[str, Any] | None = None,
    timeout_s: float | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[QueryStream]:
    """One read-only statement, its rows streamed while the context is open; writes are
    refused before they run.

    Two guards besides the read-only connection: the statement's first keyword (INSERT,
    DELETE, PRAGMA x = y, ...) and an SQLite authorizer that allows only reading actions,
    so a write hidden in a CTE or a view is refused at prepare time, before it executes.
    A progress handler ends the statement once ``timeout_s`` (None or 0: no limit) has
    passed or ``cancel`` is set (a Ctrl-C handler's doing): a runaway recursive CTE runs
    inside SQLite, where no Python signal handler can stop it.
    """
    statements = split_statements(sql)
    for statement in statements:
        _refuse_by_inspection(statement)
    if not statements:
        raise StoreError("query failed: the query is empty")
    if len(statements) > 1:
        raise StoreError(
            f"query failed: {len(statements)} statements given; soak query runs one at a time"
        )
    denied: list[str] = []

    def authorize(action: int, arg1: str | None, arg2: str | None, _db: Any, _src: Any) -> int:
        if action in _READ_ACTIONS:
            return sqlite3.SQLITE_OK
        if (
            action == sqlite3.SQLITE_PRAGMA
            and arg1
            and arg1.lower() in _READ_PRAGMAS
            and (arg2 is None or arg1.lower() in _TABLE_PRAGMAS)
        ):
            return sqlite3.SQLITE_OK
        denied.append(_describe_action(action, arg1, arg2))
        return sqlite3.SQLITE_DENY

    deadline = time.monotonic() + timeout_s if timeout_s else None
    stopped: list[str] = []

    def keep_going() -> int:
        if cancel is not None and cancel.is_set():
            stopped.append("query interrupted")
        elif deadline is not None and time.monotonic() > deadline:
            stopped.append(f"query stopped after {timeout_s:g} s (--timeout; 0: no limit)")
        return 1 if stopped else 0

    def fail(exc: BaseException) -> StoreError:
        if denied:
            return QueryRefused(f"query refused: {denied[0]}: writes are not allowed")
        if stopped:
            return StoreError(stopped[0])
        return StoreError(f"query failed: {exc}")

    conn = db.conn
    _warm_pragma_tables(conn, statements[0])
    conn.set_authorizer(authorize)
    conn.set_progress_handler(keep_going, _CHECK_EVERY_OPS)
    try:
        try:
            cursor = conn.execute(statements[0], dict(params or {}))
        except (sqlite3.Error, sqlite3.Warning) as exc:
            raise fail(exc) from exc

        def rows() -> Iterator[tuple]:
            try:
                for row in cursor:
                    if keep_going():  # a query that streams fast never reaches the handler
                        raise StoreError(stopped[0])
                    yield tuple(row)
            except (sqlite3.Error, sqlite3.Warning) as exc:
                raise fail(exc) from exc

        yield QueryStream([d[0] for d in cursor.description or ()], rows())
    finally:
        conn.set_progress_handler(None, 0)
        conn.set_authorizer(None)


def run_query(
    db: sqlite_utils.Database,
    sql: str,
    params: Mapping[str, Any] | None = None,
    timeout_s: float | None = None,
    limit: int | None = None,
    cancel: threading.Event | None = None,
) -> QueryResult:
    """One read-only statement's rows, at most ``limit`` of them (None: all); see
    :func:`stream_query` for the guards and the time limit."""
    with stream_query(db, sql, params, timeout_s, cancel) as stream:
        rows = list(itertools.islice(stream.rows, limit))
        more = limit is not None and next(stream.rows, None) is not None
    return QueryResult(stream.columns, rows, more)


def coerce_param(value: str) -> Any:
    """'3' -> 3, '0.5' -> 0.5, anything else stays text (SQLite compares by type in JSON)."""
    if re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    try:
        number = float(value)
    except ValueError:
        return value
    return number if math.isfinite(number) else value


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """NAME=VALUE pairs as query parameters (numbers become numbers)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*", name.strip()):
            raise StoreError(f"--param {pair!r}: give NAME=VALUE, e.g. --param run=12")
        out[name.strip()] = coerce_param(value)
    return out


#: Tables a canned query reads that older databases lack.
_TABLES_OF = {"sites": ("sites", "site_samples")}


def canned_statement(
    db: sqlite_utils.Database, name: str, params: Mapping[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """A canned query's SQL and its parameter values; a run it names must exist (and
    'latest' means the newest)."""
    query = CANNED.get(name)
    if query is None:
        raise StoreError(f"no canned query {name!r}; known: {', '.join(CANNED)}")
    given = dict(params or {})
    unknown = sorted(set(given) - set(query.params))
    if unknown:
        accepted = ", ".join(query.params) or "none"
        raise StoreError(
            f"query {name} takes no parameter {', '.join(unknown)} (it takes: {accepted})"
        )
    missing = [t for t in _TABLES_OF.get(name, ()) if not db[t].exists()]
    if missing:
        raise StoreError(
            f"query {name}: this database has no {', '.join(missing)} table (it was made "
            f"before soak had them); it needs {query.needs}"
        )
    values = {p: given.get(p) for p in query.params}
    if values.get("run") is not None:
        values["run"] = resolve_run(db, values["run"])
    if values.get("matrix") is not None and values["matrix"] not in matrix_names(db):
        raise no_matrix_error(db, values["matrix"])
    return query.sql, values


def run_canned(
    db: sqlite_utils.Database,
    name: str,
    params: Mapping[str, Any] | None = None,
    timeout_s: float | None = None,
    limit: int | None = None,
) -> QueryResult:
    """A canned query by name (see :func:`canned_statement`), run as :func:`run_query`."""
    sql, values = canned_statement(db, name, params)
    return run_query(db, sql, values, timeout_s, limit)
