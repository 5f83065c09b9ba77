"""The target tables this worker writes: reflected once, re-read when a message disagrees.

Identifiers only ever come from here (the reflected table and the allow-list in
``worker.tables``), never from a message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from headrace.errors import SchemaError
from headrace.schema import TableSchema, reflect_table

__all__ = ["Tables", "column_mismatch"]


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
            async with asyncio.timeout(self._timeout_s), self._engine.connect() as conn:
                schema = await reflect_table(conn, table, allowed=self._allowed)
            self._schemas[table] = schema
        return schema

    async def matching(
        self, table: str, columns: Sequence[str]
    ) -> tuple[TableSchema, SchemaError | None]:
        """The table and whether it has ``columns``; a mismatch is re-checked on a fresh read
        (a column may have been added since the table was read)."""
        schema = await self.get(table)
        drift = column_mismatch(schema, columns)
        if drift is not None:
            schema = await self.get(table, refresh=True)
            drift = column_mismatch(schema, columns)
        return schema, drift


def column_mismatch(schema: TableSchema, columns: Sequence[str]) -> SchemaError | None:
    try:
        schema.specs_for(columns)
    except SchemaError as exc:
        return exc
    return None
