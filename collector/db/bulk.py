"""Multi-row statements through the database driver, for ingest's hottest statements.

SQLAlchemy's executemany builds and type-processes every row's parameters in generic
Python, and on the server each row is a statement of its own. For the few statements that
run for every message ingested (claims, devices' latest state, a device's and an asset's
"seen at") that cost more than the database's own work, so they are written here as one
statement per chunk of rows, built once per dialect, with parameters converted by the same
bind processors SQLAlchemy would use (values are stored exactly as the ORM stores them).

How the rows travel depends on the driver:
- SQLite: ``VALUES (?, ?), (?, ?), …``; sqlite3 binds natively, so a long list is cheap.
- PostgreSQL: one array parameter per column, ``unnest``-ed on the server. The statement
  stays short and the same whatever the batch size, so psycopg parses it once and caches
  it (a ``VALUES`` list of thousands of ``%s`` is re-parsed in Python on every call).

``MultiRowInsert`` for inserts that must say which rows they wrote (RETURNING);
``ValuesUpdate`` for per-row updates joined to the rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Dialect, Table

from campuswatch.collector.db.models import Base

_Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Rows:
    """A batch of rows as ``v(<columns>)``: how to write the source and bind its values."""

    names: tuple[str, ...]
    processors: tuple[_Processor, ...]
    group: str | None
    """SQLite: one row's ``(?, ?, …)``; None on PostgreSQL (``source`` takes arrays)."""
    source: str
    """PostgreSQL: ``SELECT * FROM unnest(%b::type[], …)``; SQLite: ``VALUES `` (rows follow)."""

    @staticmethod
    def prepare(table: Table, columns: Mapping[str, str], dialect: Dialect) -> _Rows:
        """``columns``: name in ``v`` → the table column whose type the values have."""
        processors = tuple(
            table.c[column].type.bind_processor(dialect) for column in columns.values()
        )
        if dialect.name == "postgresql":
            arrays = ", ".join(
                # %b: binary arrays; psycopg's text arrays quote each element by regex.
                f"%b::{table.c[column].type.compile(dialect=dialect)}[]"
                for column in columns.values()
            )
            return _Rows(tuple(columns), processors, None, f"SELECT * FROM unnest({arrays})")
        group = f"({', '.join('?' for _ in columns)})"
        return _Rows(tuple(columns), processors, group, "VALUES ")

    def bind(self, chunk: Sequence[Mapping[str, Any]]) -> tuple[str, tuple[Any, ...]]:
        """The row source SQL for ``chunk`` and its parameters."""
        pairs = tuple(zip(self.names, self.processors, strict=True))
        if self.group is None:
            arrays = tuple(
                [row[name] if process is None else process(row[name]) for row in chunk]
                for name, process in pairs
            )
            return self.source, arrays
        values = tuple(
            row[name] if process is None else process(row[name])
            for row in chunk
            for name, process in pairs
        )
        return self.source + ", ".join([self.group] * len(chunk)), values


class _Chunked(ABC):
    # SQLite allows 32,766 bound values per statement; 500 rows of a few columns is far below.
    def __init__(self, model: type[Base], columns: Mapping[str, str], chunk_rows: int) -> None:
        self.table = cast(Table, model.__table__)
        self.columns = dict(columns)
        self.chunk_rows = chunk_rows
        self._prepared: dict[str, tuple[_Rows, str, str]] = {}

    @abstractmethod
    def _statement(self, quote: Callable[[str], str]) -> tuple[str, str]:
        """SQL before and after the row source."""

    def _run(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        dialect = connection.dialect
        key = f"{dialect.name}+{dialect.driver}"
        prepared = self._prepared.get(key)
        if prepared is None:
            source = _Rows.prepare(self.table, self.columns, dialect)
            before, after = self._statement(dialect.identifier_preparer.quote)
            prepared = self._prepared[key] = (source, before, after)
        source, before, after = prepared
        returned: list[Any] = []
        for start in range(0, len(rows), self.chunk_rows):
            rows_sql, parameters = source.bind(rows[start : start + self.chunk_rows])
            result = connection.exec_driver_sql(f"{before}{rows_sql}{after}", parameters)
            if result.returns_rows:
                returned.extend(result.fetchall())
        return returned


class MultiRowInsert(_Chunked):
    """``INSERT INTO t (…) <rows> <tail>`` per chunk, returning what ``tail``'s RETURNING
    names (what SQLAlchemy's "insertmanyvalues" does, without its per-row processing).

    ``tail`` (``ON CONFLICT …``, ``RETURNING …``) is SQL SQLite and PostgreSQL both accept.
    """

    def __init__(
        self, model: type[Base], columns: Sequence[str], tail: str, chunk_rows: int = 500
    ) -> None:
        super().__init__(model, {name: name for name in columns}, chunk_rows)
        self.tail = tail

    def _statement(self, quote: Callable[[str], str]) -> tuple[str, str]:
        names = ", ".join(map(quote, self.columns))
        return f"INSERT INTO {quote(self.table.name)} ({names}) ", f" {self.tail}"

    def execute(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        return self._run(connection, rows)


class ValuesUpdate(_Chunked):
    """``WITH v(…) AS (<rows>) UPDATE t SET … FROM v WHERE …`` per chunk: a batch of
    per-row updates as one statement (the driver's executemany would still run one UPDATE
    per row on the server).

    ``columns`` names ``v``'s columns and the table column whose type each carries.
    ``assignments`` and ``where`` are SQL that SQLite (3.33+) and PostgreSQL both accept,
    naming the table's columns qualified and ``v.<column>``.
    """

    def __init__(
        self,
        model: type[Base],
        columns: Mapping[str, str],
        assignments: str,
        where: str,
        chunk_rows: int = 500,
    ) -> None:
        super().__init__(model, columns, chunk_rows)
        self.assignments = assignments
        self.where = where

    def _statement(self, quote: Callable[[str], str]) -> tuple[str, str]:
        names = ", ".join(map(quote, self.columns))
        return (
            f"WITH v ({names}) AS (",
            f") UPDATE {quote(self.table.name)} SET {self.assignments} FROM v WHERE {self.where}",
        )

    def execute(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        self._run(connection, rows)
