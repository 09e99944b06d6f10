"""What the auth gateway needs to log users in: the KV bucket ``auth_services``, kept equal to
the database.

One ``ServiceAuthRecord`` per HTTP service with a browser login (password, PIN or SSO), keyed
by service id, with the secrets' argon2id hashes and the service's session version. The bucket
is rewritten from the database: after every committed service change of any replica (``notify``)
and every ``RESYNC_S`` in case a notice was lost; only keys whose value differs are written, and
keys of services that are gone (or no longer have a browser login) are deleted. Management
starts and runs without NATS: until it answers, nothing is written and the gateway keeps what
the bucket held.
"""

import asyncio
import contextlib

import structlog
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_bus import Bus, BusError
from heron_bus.bucket import Bucket
from heron_bus.kv import AUTH_SERVICES
from heron_core.auth import ServiceAuthRecord
from heron_core.tasks import stop_if_cancelled
from heron_core.types import ServiceMode
from heron_management.db.tables import ServiceRow
from heron_management.domain.stored_auth import StoredAuth
from heron_management.event_bus import connect_when_up

log = structlog.get_logger(__name__)

#: the bucket is compared with the database this often even without a notice
RESYNC_S = 30.0
#: after NATS failed mid-sync, before the next try
PAUSE_S = 2.0


def auth_record(row: ServiceRow) -> ServiceAuthRecord | None:
    """The gateway's record for ``row``; None when no browser can log in to it."""
    if row.mode != ServiceMode.HTTP.value or not row.auth:
        return None
    auth = StoredAuth.model_validate(row.auth)
    if not auth.browser_login:
        return None
    return ServiceAuthRecord(
        service_id=row.id,
        account_id=row.account_id,
        domain=row.domain,
        session_version=auth.session_version(row.id, row.auth_revision),
        password_hash=auth.password.hash if auth.password.enabled else None,
        pin_hash=auth.pin.hash if auth.pin.enabled else None,
        sso_enabled=auth.sso.enabled,
        sso_groups=list(auth.sso.groups),
    )


async def wanted_records(sessions: async_sessionmaker[AsyncSession]) -> dict[str, bytes]:
    async with sessions() as session:
        rows = await session.exec(
            select(ServiceRow).where(col(ServiceRow.mode) == ServiceMode.HTTP.value)
        )
        records = (auth_record(row) for row in rows)
        return {record.service_id: record.encode() for record in records if record is not None}


class AuthRecordsPublisher:
    def __init__(self, url: str, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._url = url
        self._sessions = sessions
        self._changed = asyncio.Event()
        #: what the bucket holds, as far as this replica knows (key → value)
        self._written: dict[str, bytes] | None = None

    def notify(self) -> None:
        """A service changed somewhere: compare again soon."""
        self._changed.set()

    async def run(self) -> None:
        while True:
            bus = await connect_when_up(
                self._url, name="heron-management-auth", waiting="auth records wait for NATS"
            )
            try:
                await self._sync_forever(bus)
            except BusError as exc:
                log.warning("auth records paused", error=str(exc), retry_in_s=PAUSE_S)
                await asyncio.sleep(PAUSE_S)
            finally:
                self._written = None
                await bus.close()

    async def _sync_forever(self, bus: Bus) -> None:
        kv = await Bucket.open(bus, AUTH_SERVICES)
        while True:
            self._changed.clear()
            try:
                await self.sync(kv)
            except BusError:
                raise
            except Exception as exc:  # noqa: BLE001  (the database: try again at the next notice or resync)
                stop_if_cancelled(exc)
                log.warning("auth records not synced", error=str(exc))
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: see OutboxRelay.run
                async with asyncio.timeout(RESYNC_S):
                    await self._changed.wait()

    async def sync(self, kv: Bucket) -> None:
        """Make the bucket hold exactly the records the database gives."""
        wanted = await wanted_records(self._sessions)
        written = self._written
        if written is None:
            written = {}
            for key in await kv.keys():
                entry = await kv.get(key)
                if entry is not None and entry.value is not None:
                    written[key] = entry.value
        self._written = written
        for key, value in wanted.items():
            if written.get(key) != value:
                await kv.put(key, value)
                written[key] = value
        for key in [key for key in written if key not in wanted]:
            await kv.delete(key)
            del written[key]
