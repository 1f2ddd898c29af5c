"""Multi-row statements through the database driver, for ingest's hottest statements.

SQLAlchemy's executemany builds and type-processes every row's parameters in generic
Python, and on the server each row is a statement of its own. For the few statements that
run for every message ingested (claims, devices' latest state, a device's and an asset's
"seen at") that cost more than the database's own work, so they are written here as one
multi-row statement per chunk of rows, built once per dialect, with parameters converted
by the same bind processors SQLAlchemy would use.

``MultiRowInsert`` for inserts that must say which rows they wrote (RETURNING);
``ValuesUpdate`` for per-row updates joined to a VALUES list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, Connection, Dialect, Table


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


_Processors = tuple[Callable[[Any], Any] | None, ...]


class ValuesUpdate:
    """``WITH v(…) AS (VALUES (…), (…), …) UPDATE t SET … FROM v WHERE …``: a batch of
    per-row updates as one statement per chunk.

    The driver's executemany still runs one UPDATE per row on the server (parse, plan and
    a protocol round of its own each on PostgreSQL); this joins the batch instead.
    ``columns`` names ``v``'s columns and the table column whose type each carries (for
    the bind processor, and PostgreSQL's cast: VALUES of bare parameters are untyped
    there). ``assignments`` and ``where`` are SQL that SQLite (3.33+) and PostgreSQL both
    accept, naming the table's columns qualified and ``v.<column>``.
    """

    def __init__(
        self,
        table: Table,
        columns: Mapping[str, str],
        assignments: str,
        where: str,
        chunk_rows: int = 500,
    ) -> None:
        self.table = table
        self.columns = dict(columns)
        self.assignments = assignments
        self.where = where
        self.chunk_rows = chunk_rows
        self._prepared: dict[
            str, tuple[str, str, str, tuple[Callable[[Any], Any] | None, ...]]
        ] = {}

    def _prepare(
        self, dialect: Dialect
    ) -> tuple[str, str, str, tuple[Callable[[Any], Any] | None, ...]]:
        quote = dialect.identifier_preparer.quote
        slots = []
        processors = []
        for table_column in self.columns.values():
            column_type = self.table.c[table_column].type
            if dialect.name == "postgresql":
                slots.append(f"%s::{column_type.compile(dialect=dialect)}")
            else:
                slots.append("?")
            processors.append(column_type.bind_processor(dialect))
        head = f"WITH v ({', '.join(map(quote, self.columns))}) AS (VALUES "
        tail = f") UPDATE {quote(self.table.name)} SET {self.assignments} FROM v WHERE {self.where}"
        return head, f"({', '.join(slots)})", tail, tuple(processors)

    def execute(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        dialect = connection.dialect
        key = f"{dialect.name}+{dialect.driver}"
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepared[key] = self._prepare(dialect)
        head, group, tail, processors = prepared
        pairs = tuple(zip(self.columns, processors, strict=True))
        for start in range(0, len(rows), self.chunk_rows):
            chunk = rows[start : start + self.chunk_rows]
            parameters = [
                row[name] if process is None else process(row[name])
                for row in chunk
                for name, process in pairs
            ]
            sql = f"{head}{', '.join([group] * len(chunk))}{tail}"
            connection.exec_driver_sql(sql, tuple(parameters))
