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
        # An expanding statement (``IN`` lists) as rendered for a dialect and list lengths, and
        # where each of its parameters comes from: SQLAlchemy takes about 20 us to render one,
        # as long as SQLite takes to run it.
        self._expanded: dict[tuple[Any, ...], _Expanded] = {}

    def bind(self, dialect: Dialect, params: dict[str, Any]) -> tuple[str, Any]:
        """The SQL text and the parameters (a tuple for a positional driver such as sqlite3,
        else a dict) to execute, lists of expanding parameters (``IN``) spread out."""
        if dialect.name not in self._compiled:
            c = self.stmt.compile(dialect=dialect)
            procs = {k: p for k, b in c.binds.items() if (p := b.type.dialect_impl(dialect).bind_processor(dialect)) is not None}
            self._compiled[dialect.name] = (c, procs)
        c, procs = self._compiled[dialect.name]
        if not c.post_compile_params:
            values = c.construct_params(params, escape_names=False)
            for name, value in values.items():
                if (proc := procs.get(name)) is not None:
                    values[name] = proc(value)
            return c.string, (tuple(values[name] for name in c.positiontup) if c.positiontup is not None else values)
        shape = (dialect.name, *(len(params[b.key]) for b in c.post_compile_params))
        plan = self._expanded.get(shape)
        if plan is None:
            plan = _Expanded(c, procs, params)
            if len(self._expanded) < _EXPANDED_KEPT:
                self._expanded[shape] = plan
        return plan.sql, plan.values(params)

    def rows(self, dialect: Dialect, cursor: Any) -> list[tuple[Any, ...]]:
        """The rows ``cursor`` holds, each value converted as SQLAlchemy's result would."""
        procs = self._results.get(dialect.name)
        if procs is None:  # the column types are the statement's: read the description once
            procs = [col.type.dialect_impl(dialect).result_processor(dialect, d[1])
                     for col, d in zip(self.stmt.exported_columns, cursor.description, strict=True)]
            self._results[dialect.name] = procs
        return [tuple(v if p is None else p(v) for p, v in zip(procs, row)) for row in cursor.fetchall()]


_EXPANDED_KEPT = 256  # renderings kept per statement (an identification's lists hold at most top_k + 2 ids)


class _Expanded:
    """An expanding statement rendered for one set of list lengths: its SQL and, per
    parameter it sends, the caller's parameter (and list index) or the statement's own value
    it takes, and SQLAlchemy's bind processor for it."""

    def __init__(self, compiled: Any, procs: dict[str, Any], params: dict[str, Any]) -> None:
        state = compiled.construct_expanded_state(params, escape_names=False)
        origin = {name: (key, i) for key, names in (state.parameter_expansion or {}).items() for i, name in enumerate(names)}
        self.sql: str = state.statement
        self.positional = state.positiontup is not None
        names = state.positiontup if self.positional else list(state.parameters)
        self.slots: list[tuple[str, str, int | None, Any]] = []  # (name sent, key, index in its list, processor)
        self.own: dict[str, Any] = {}  # values the statement holds itself (a bound literal)
        for name in names:
            key, i = origin.get(name, (name, None))
            if key not in params:
                self.own[key] = state.parameters[name]
            self.slots.append((name, key, i, procs.get(key)))

    def values(self, params: dict[str, Any]) -> Any:
        out = []
        for _name, key, i, proc in self.slots:
            v = params[key][i] if i is not None else params[key] if key in params else self.own[key]
            out.append(v if proc is None else proc(v))
        return tuple(out) if self.positional else {slot[0]: v for slot, v in zip(self.slots, out, strict=True)}


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
