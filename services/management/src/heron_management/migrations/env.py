"""Alembic environment: runs on the connection management hands over (see db/engine.py).

To write a new revision: ``HERON_DATABASE_URL=sqlite+aiosqlite:///tmp/x.db uv run alembic -c
services/management/alembic.ini revision --autogenerate -m "…"`` after upgrading that database.
"""

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import heron_management.db.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from heron_management.db.engine import create_engine


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


given = context.config.attributes.get("connection")
if given is not None:
    _run(given)
else:
    asyncio.run(_run_from_url(os.environ["HERON_DATABASE_URL"]))
