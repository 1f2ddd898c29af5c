"""Executemany through the database driver, for ingest's hottest statements.

SQLAlchemy's executemany builds and type-processes every row's parameters in generic
Python. For the few statements that run for every message ingested (a device's and an
asset's "seen at" update) that cost more than the database's own work, so they are
compiled once per dialect here and handed to the driver's ``executemany`` with parameters
converted by the same bind processors SQLAlchemy would use.

``DriverExecutemany`` is for statements without RETURNING (the driver's executemany
returns no rows); ``MultiRowInsert`` for inserts that must say which rows they wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import JSON, Connection, Dialect, Table
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement


@dataclass(frozen=True, slots=True)
class _Prepared:
    sql: str
    names: tuple[str, ...]
    """Distinct parameter names, each converted once per row."""
    processors: tuple[Callable[[Any], Any] | None, ...]
    order: tuple[int, ...] | None
    """Positional dialects: index into ``names`` for each placeholder (a name used twice
    appears twice); None for named placeholders."""


class DriverExecutemany:
    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._prepared: dict[str, _Prepared] = {}

    def _prepare(self, dialect: Dialect) -> _Prepared:
        compiled = cast(SQLCompiler, self.statement.compile(dialect=dialect))
        names = tuple(compiled.binds)
        processors = tuple(compiled.binds[name].type.bind_processor(dialect) for name in names)
        order = None
        if compiled.positional:
            order = tuple(names.index(name) for name in compiled.positiontup or ())
        return _Prepared(compiled.string, names, processors, order)

    def execute(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        dialect = connection.dialect
        key = f"{dialect.name}+{dialect.driver}"
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepared[key] = self._prepare(dialect)
        pairs = tuple(zip(prepared.names, prepared.processors, strict=True))
        converted = [
            [row[name] if process is None else process(row[name]) for name, process in pairs]
            for row in rows
        ]
        if prepared.order is None:
            named = [dict(zip(prepared.names, values, strict=True)) for values in converted]
            connection.exec_driver_sql(prepared.sql, named)
        else:
            order = prepared.order
            connection.exec_driver_sql(
                prepared.sql, [tuple(values[index] for index in order) for values in converted]
            )


class MultiRowInsert:
    """``INSERT INTO t (…) VALUES (…), (…), … <tail>`` as one statement per chunk of rows,
    returning what the tail's RETURNING names.

    What SQLAlchemy's "insertmanyvalues" does for an executemany with RETURNING, minus its
    per-row parameter processing, which for ingest's claims and latest-state upserts cost
    more than the database's own work. ``tail`` (``ON CONFLICT …``, ``RETURNING …``) is
    SQL that SQLite and PostgreSQL both accept; values go through the columns' own bind
    processors, so they are stored exactly as the ORM would store them.
    """

    def __init__(
        self, table: Table, columns: Sequence[str], tail: str, chunk_rows: int = 500
    ) -> None:
        self.table = table
        self.columns = tuple(columns)
        self.tail = tail
        # SQLite allows 32,766 bound values per statement; PostgreSQL 65,535.
        self.chunk_rows = chunk_rows
        self._prepared: dict[str, tuple[str, str, tuple[Callable[[Any], Any] | None, ...]]] = {}

    def _prepare(
        self, dialect: Dialect
    ) -> tuple[str, str, tuple[Callable[[Any], Any] | None, ...]]:
        quote = dialect.identifier_preparer.quote
        placeholder = "?" if dialect.paramstyle == "qmark" else "%s"
        slots = []
        processors = []
        for name in self.columns:
            column = self.table.c[name]
            # psycopg sends text; PostgreSQL needs to be told it is JSON.
            cast = (
                "::json" if dialect.name == "postgresql" and isinstance(column.type, JSON) else ""
            )
            slots.append(placeholder + cast)
            processors.append(column.type.bind_processor(dialect))
        head = (
            f"INSERT INTO {quote(self.table.name)} ({', '.join(map(quote, self.columns))}) VALUES "
        )
        return head, f"({', '.join(slots)})", tuple(processors)

    def execute(
        self, connection: Connection, rows: Sequence[Mapping[str, Any]]
    ) -> list[tuple[Any, ...]]:
        dialect = connection.dialect
        key = f"{dialect.name}+{dialect.driver}"
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepared[key] = self._prepare(dialect)
        head, group, processors = prepared
        pairs = tuple(zip(self.columns, processors, strict=True))
        returned: list[Any] = []
        for start in range(0, len(rows), self.chunk_rows):
            chunk = rows[start : start + self.chunk_rows]
            parameters = [
                row[name] if process is None else process(row[name])
                for row in chunk
                for name, process in pairs
            ]
            sql = f"{head}{', '.join([group] * len(chunk))} {self.tail}"
            returned.extend(connection.exec_driver_sql(sql, tuple(parameters)).fetchall())
        return returned
