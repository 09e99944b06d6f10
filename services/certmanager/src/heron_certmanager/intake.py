"""Events in: what services, custom domains and retry requests mean for each domain's record.

Three durable consumers of the ``EVENTS`` stream, shared by the replicas (each event is handled
by one of them): ``ServiceChanged`` says whether an HTTP service uses a domain (TLS, TCP and
UDP services pass TLS through or do not speak it: no certificate), ``CertificateRequested``
clears the wait before the next order, and a verified ``DomainChanged`` does that for every
domain under it. An event is acked once its record is written; a certificate nobody wants any
more is deleted at once. The reconciler of every replica sees the records change.
"""

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import aclosing, suppress
from datetime import datetime
from typing import TypeVar

import structlog

from heron_bus.connection import Bus
from heron_bus.consume import events
from heron_bus.errors import BusError
from heron_certmanager.mirror import Mirror
from heron_certmanager.policy import on_requested, on_wanted
from heron_certmanager.records import DomainRecord
from heron_certmanager.state import State
from heron_core.events import CertificateRequested, DomainChanged, Event, ServiceChanged
from heron_core.service import normalize_domain
from heron_core.types import ChangeKind, ServiceMode

log = structlog.get_logger(__name__)

E = TypeVar("E", bound=Event)

#: a handler that could not reach NATS sees its event again this much later
RETRY_EVENT_S = 5.0
#: the durable consumers' names, one per event type, shared by every replica
DURABLES = {
    ServiceChanged: "certmanager-services",
    DomainChanged: "certmanager-domains",
    CertificateRequested: "certmanager-requests",
}


class Intake:
    def __init__(self, bus: Bus, state: State, records: Mirror[DomainRecord]) -> None:
        self._bus = bus
        self._state = state
        self._records = records

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._consume(ServiceChanged, self.service_changed))
            group.create_task(self._consume(DomainChanged, self.domain_changed))
            group.create_task(self._consume(CertificateRequested, self.certificate_requested))

    async def service_changed(self, event: ServiceChanged) -> None:
        wanted = event.change is not ChangeKind.DELETED and event.mode is ServiceMode.HTTP
        domain = _domain(event.domain)
        previous = _domain(event.previous_domain) if event.previous_domain else None
        if previous and previous != domain:
            await self._set_wanted(previous, wanted=False, at=event.occurred_at)
        if domain:
            await self._set_wanted(domain, wanted=wanted, at=event.occurred_at)

    async def certificate_requested(self, event: CertificateRequested) -> None:
        if domain := _domain(event.domain):
            await self._request(domain, event.occurred_at)
            log.info("certificate requested", domain=domain)

    async def domain_changed(self, event: DomainChanged) -> None:
        """A custom domain verified: its domains' next orders need not wait for the backoff
        (they most likely failed because its DNS did not point here yet)."""
        parent = _domain(event.domain)
        if not parent or event.change is ChangeKind.DELETED or not event.verified:
            return
        for key, (record, _) in list(self._records.entries.items()):
            under = key == parent or key.endswith(f".{parent}")
            if under and record.wanted and (record.failures or record.halted):
                await self._request(key, event.occurred_at)

    async def _request(self, domain: str, at: datetime) -> None:
        await self._state.change_record(domain, lambda record: on_requested(record, domain, at=at))

    async def _set_wanted(self, domain: str, *, wanted: bool, at: datetime) -> None:
        record = await self._state.change_record(
            domain, lambda current: on_wanted(current, domain, wanted=wanted, at=at)
        )
        if record is None:
            log.info("stale event ignored", domain=domain, occurred_at=at.isoformat())
            return
        if not record.wanted and await self._state.certificate(domain) is not None:
            await self._state.drop_certificate(domain)
            log.info("certificate removed", domain=domain)

    async def _consume(self, event_type: type[E], handle: Callable[[E], Awaitable[None]]) -> None:
        durable = DURABLES[event_type]
        async with aclosing(events(self._bus, event_type, durable=durable)) as deliveries:
            async for delivery in deliveries:
                try:
                    await handle(delivery.event)
                except BusError as exc:
                    log.warning("event not handled yet", durable=durable, reason=str(exc))
                    with suppress(BusError):
                        await delivery.nak(RETRY_EVENT_S)
                    continue
                with suppress(BusError):  # unacked, it comes again and is handled again: same
                    await delivery.ack()


def _domain(value: str) -> str | None:
    try:
        return normalize_domain(value)
    except ValueError as exc:
        log.warning("event for an invalid domain ignored", domain=value, reason=str(exc))
        return None
