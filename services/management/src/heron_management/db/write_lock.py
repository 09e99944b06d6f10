"""One writer at a time for changes whose checks read before they write.

A service's domain, paths and listen port are checked against what is stored and then written;
two requests doing that at once would both pass the check. ``lock_writes`` starts a transaction
that holds the database's write lock until it commits, so the check and the write are one step:
PostgreSQL takes a transaction-scoped advisory lock; SQLite takes its database write lock with a
write statement that changes nothing (SQLite locks at the first write, and a transaction that
read first could not upgrade once another writer committed).

Writes are short and rare next to reads, so serialising them costs nothing a user would see.
"""

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

#: any fixed number; every lock_writes call takes the same lock
_ADVISORY_KEY = 0x4E524F4E  # "HRON"


async def lock_writes(session: AsyncSession) -> None:
    """End the session's current transaction and begin one that holds the write lock."""
    await session.commit()  # e.g. the authentication's read: a new transaction sees every commit
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_KEY})
    else:
        await connection.execute(text("UPDATE accounts SET name = name WHERE 1 = 0"))
