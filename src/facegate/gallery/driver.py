"""Core statements sent on the raw driver connection.

The hottest path of the gallery, an identification's write transaction, runs a handful of
small statements, and SQLAlchemy's execution machinery cost more per statement than SQLite
running it (on the 1M SQLite gallery the transaction's seven statements took 0.97 ms p50 through
SQLAlchemy, 0.67 ms this way). Those statements are still written as Core
statements once, and :class:`DriverStatement` compiles each once per dialect and binds its
parameters and converts its rows with SQLAlchemy's own type processors: the values stored
and read are exactly the ones SQLAlchemy would store and read.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError


class DriverStatement:
    """A Core statement compiled once per dialect, run on a DBAPI cursor."""

    def __init__(self, stmt: Any) -> None:
        self.stmt = stmt
        self._compiled: dict[str, tuple[Any, dict[str, Any]]] = {}
        self._results: dict[str, list[Any]] = {}

    def bind(self, dialect: Dialect, params: dict[str, Any]) -> tuple[str, Any]:
        """The SQL text and the parameters (a tuple for a positional driver such as sqlite3,
        else a dict) to execute, lists of expanding parameters (``IN``) spread out."""
        if dialect.name not in self._compiled:
            c = self.stmt.compile(dialect=dialect)
            procs = {k: p for k, b in c.binds.items() if (p := b.type.dialect_impl(dialect).bind_processor(dialect)) is not None}
            self._compiled[dialect.name] = (c, procs)
        c, procs = self._compiled[dialect.name]
        if c.post_compile_params:  # expanding parameters: spread each list out
            state = c.construct_expanded_state(params, escape_names=False)
            sql, values, order = state.statement, state.parameters, state.positiontup
            origin = {name: key for key, names in (state.parameter_expansion or {}).items() for name in names}
        else:
            sql, values, order, origin = c.string, c.construct_params(params, escape_names=False), c.positiontup, {}
        for name, value in values.items():
            if (proc := procs.get(origin.get(name, name))) is not None:
                values[name] = proc(value)
        return sql, (tuple(values[name] for name in order) if order is not None else values)

    def rows(self, dialect: Dialect, cursor: Any) -> list[tuple[Any, ...]]:
        """The rows ``cursor`` holds, each value converted as SQLAlchemy's result would."""
        procs = self._results.get(dialect.name)
        if procs is None:  # the column types are the statement's: read the description once
            procs = [col.type.dialect_impl(dialect).result_processor(dialect, d[1])
                     for col, d in zip(self.stmt.selected_columns, cursor.description, strict=True)]
            self._results[dialect.name] = procs
        return [tuple(v if p is None else p(v) for p, v in zip(procs, row)) for row in cursor.fetchall()]


def run(dialect: Dialect, raw: Any, stmt: DriverStatement, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Execute ``stmt`` on the driver connection ``raw``; its rows (none for a write). A driver
    error is raised as SQLAlchemy raises it (``OperationalError``, ``IntegrityError``, …), so the
    stores map it to their errors as they map any other."""
    sql, values = stmt.bind(dialect, params)
    cur = raw.cursor()
    try:
        cur.execute(sql, values)
        return stmt.rows(dialect, cur) if cur.description else []
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(sql, values, exc, dialect.loaded_dbapi.Error, dialect=dialect) from exc
    finally:
        cur.close()
