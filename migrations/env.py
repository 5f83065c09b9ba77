"""Alembic environment: the same settings and metadata as the application.

`headrace migrate` passes an open connection in ``config.attributes["connection"]``; plain
``alembic upgrade head`` builds an engine from ``HEADRACE_DATABASE_URL``.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import context

from headrace.db import create_engine, database_url
from headrace.settings import load_settings
from headrace.tables import metadata

config = context.config


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(load_settings())
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=database_url(load_settings()), target_metadata=metadata, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()
elif (connection := config.attributes.get("connection")) is not None:
    _run(connection)
else:
    asyncio.run(_run_async())
