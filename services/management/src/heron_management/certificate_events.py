"""The certificate manager's events in: durable JetStream consumers of ``CertificateIssued`` and
``CertificateFailed``, shared by management's replicas (each event is handled by one of them),
whose events ``certificates`` stores.

Management starts without NATS and rides out its outages: until NATS answers, the connection is
tried again with backoff; once connected, nats-py reconnects by itself and the durables resume
where they stood, so nothing published meanwhile is missed (the ``EVENTS`` stream keeps a week).
An event is acked once stored; one that could not be (the database is away) comes back later.
"""

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import aclosing, suppress
from typing import TypeVar

import structlog
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_bus import Bus, BusError, ensure_streams, events
from heron_core.events import CertificateFailed, CertificateIssued, Event
from heron_core.tasks import stop_if_cancelled
from heron_management.certificates import record_failed, record_issued
from heron_management.event_bus import connect_when_up

log = structlog.get_logger(__name__)

E = TypeVar("E", bound=Event)
Handler = Callable[[async_sessionmaker[AsyncSession], E], Awaitable[None]]

#: the durable consumers' names, one per event type, shared by every replica
DURABLES: dict[type[Event], str] = {
    CertificateIssued: "management-certificate-issued",
    CertificateFailed: "management-certificate-failed",
}
#: an event that could not be stored is delivered again this much later
RETRY_EVENT_S = 5.0
#: after the connection broke for good (it was closed), before connecting again
PAUSE_S = 2.0


class CertificateEvents:
    def __init__(self, url: str, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._url = url
        self._sessions = sessions

    async def run(self) -> None:
        while True:
            bus = await connect_when_up(
                self._url,
                name="heron-management-certificates",
                waiting="certificate events wait for NATS",
            )
            try:
                await self._consume_all(bus)
            except* BusError as failed:
                reason = str(failed.exceptions[0])
                log.warning("certificate events paused", error=reason, retry_in_s=PAUSE_S)
                await asyncio.sleep(PAUSE_S)
            finally:
                await bus.close()

    async def _consume_all(self, bus: Bus) -> None:
        await ensure_streams(bus)  # the certificate manager may not have started yet
        log.info("consuming certificate events", url=bus.url)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._consume(bus, CertificateIssued, record_issued))
            group.create_task(self._consume(bus, CertificateFailed, record_failed))

    async def _consume(self, bus: Bus, event_type: type[E], handle: Handler[E]) -> None:
        durable = DURABLES[event_type]
        async with aclosing(events(bus, event_type, durable=durable)) as deliveries:
            async for delivery in deliveries:
                try:
                    await handle(self._sessions, delivery.event)
                except Exception as exc:  # noqa: BLE001  (the database is away: see it again later)
                    stop_if_cancelled(exc)
                    log.warning("certificate event not stored yet", durable=durable, error=str(exc))
                    with suppress(BusError):
                        await delivery.nak(RETRY_EVENT_S)
                    continue
                with suppress(BusError):  # unacked, it comes again and is stored again: the same
                    await delivery.ack()
