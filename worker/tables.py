"""The target tables this worker writes: reflected once, re-read when a message disagrees.

Identifiers only ever come from here (the reflected table and the allow-list in
``worker.tables``), never from a message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from headrace.db import mysql_errno
from headrace.errors import SchemaError
from headrace.schema import TableSchema, reflect_table

__all__ = ["NAME_ERRORS", "Tables", "column_mismatch"]

# Errors about one table name, not the database: no SELECT on it (1142), a name MySQL refuses
# (1103), no such table (1146). A message naming such a table is poison.
NAME_ERRORS = frozenset({1103, 1142, 1146})


class Tables:
    def __init__(self, engine: AsyncEngine, *, allowed: Sequence[str], timeout_s: float) -> None:
        self._engine = engine
        self._allowed = list(allowed)
        self._timeout_s = timeout_s
        self._schemas: dict[str, TableSchema] = {}

    def __getitem__(self, table: str) -> TableSchema:
        """A table already read (every buffered message's table is)."""
        return self._schemas[table]

    async def get(self, table: str, *, refresh: bool = False) -> TableSchema:
        """The table's schema, read from the database the first time (or when ``refresh``).

        Raises :class:`SchemaError` for a table that is not allowed or does not exist, and the
        database's own errors when it cannot be asked.
        """
        schema = None if refresh else self._schemas.get(table)
        if schema is None:
            try:
                async with asyncio.timeout(self._timeout_s), self._engine.connect() as conn:
                    schema = await reflect_table(conn, table, allowed=self._allowed)
            except DBAPIError as exc:
                if mysql_errno(exc) in NAME_ERRORS:  # this name, not the database
                    raise SchemaError(f"table {table!r}: {exc.orig}"[:500]) from None
                raise
            self._schemas[table] = schema
        return schema

    def waits_for(self, table: str) -> bool:
        """Whether a missing ``table`` is worth waiting for: named in the allow-list itself
        (a migration may be creating it), not merely allowed by ``*``."""
        return table in self._allowed

    async def mismatch(self, table: str, columns: Sequence[str]) -> SchemaError | None:
        """Why the table lacks one of ``columns``, if it does; a mismatch is re-checked on a
        fresh read (a column may have been added since the table was read)."""
        drift = column_mismatch(await self.get(table), columns)
        if drift is not None:
            drift = column_mismatch(await self.get(table, refresh=True), columns)
        return drift


def column_mismatch(schema: TableSchema, columns: Sequence[str]) -> SchemaError | None:
    try:
        schema.specs_for(columns)
    except SchemaError as exc:
        return exc
    return None
