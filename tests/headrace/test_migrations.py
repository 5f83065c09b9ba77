"""`alembic upgrade head` builds exactly the tables headrace.tables declares."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from headrace.tables import metadata


async def test_the_migrated_database_matches_the_metadata(engine: AsyncEngine) -> None:
    def diff(conn: sa.Connection) -> list[Any]:
        def ours(name: str | None, type_: str, parents: dict[str, str | None]) -> bool:
            return type_ != "table" or name in metadata.tables  # not the example table

        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_name": ours}
        )
        return list(compare_metadata(context, metadata))

    async with engine.connect() as conn:
        differences = await conn.run_sync(diff)
    assert differences == []
