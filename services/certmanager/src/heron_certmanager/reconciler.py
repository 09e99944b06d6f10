"""Which domains need an order now, and the orders themselves, a few at a time.

Every replica runs one ``Reconciler`` over the mirrors of ``certmanager_domains`` and
``certificates``: a pass asks ``policy.due_at`` for each record and starts an order for every
domain due (at most ``max_concurrent``), then sleeps until the next due time, a change in
either bucket, or ``rescan_s`` (the certificate files may have changed). An order first takes
the domain's lease: with several replicas, one orders and the others see its certificate
arrive. Outcomes go to the record (backoff) and out as ``CertificateIssued``/``Failed``.
"""

import asyncio
import random
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from heron_bus.errors import BusError
from heron_certmanager.coverage import CoveringFiles, FileCertificate
from heron_certmanager.errors import LeaseLostError, OrderFailedError
from heron_certmanager.leases import Leases
from heron_certmanager.mirror import Mirror
from heron_certmanager.ordering import Orderer
from heron_certmanager.policy import RetryPolicy, Validity, due_at, on_failed, on_issued
from heron_certmanager.records import DomainRecord
from heron_certmanager.state import State
from heron_core.certificates import StoredCertificate
from heron_core.events import CertificateFailed, CertificateIssued, Event
from heron_core.tasks import spawn

log = structlog.get_logger(__name__)

#: another replica holds the lease: look again this much later (its certificate usually
#: arrives first, through the mirror)
LEASE_BUSY_RETRY_S = 10.0
#: NATS was away during an order's bookkeeping
BUS_RETRY_S = 5.0

Publish = Callable[[Event], Awaitable[None]]


def validity(certificate: StoredCertificate | None) -> Validity | None:
    return None if certificate is None else Validity(certificate.not_before, certificate.not_after)


@dataclass
class Reconciler:
    state: State
    records: Mirror[DomainRecord]
    certificates: Mirror[StoredCertificate]
    files: CoveringFiles
    leases: Leases
    orderer: Orderer
    publish: Publish
    retry: RetryPolicy
    max_concurrent: int
    rescan_s: float
    rng: random.Random = field(default_factory=random.Random)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _running: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    #: domain -> not before (lease busy, NATS away): kept in memory only, it is short
    _not_before: dict[str, datetime] = field(default_factory=dict)

    def poke(self, _key: str = "") -> None:
        self._wake.set()

    async def run(self) -> None:
        await self.records.synced.wait()
        await self.certificates.synced.wait()
        try:
            while True:
                self._wake.clear()
                now = datetime.now(UTC)
                wait_s = (self._pass(now) - now).total_seconds()
                with suppress(TimeoutError):
                    async with asyncio.timeout(max(wait_s, 0.0)):
                        await self._wake.wait()
        finally:
            for task in self._running.values():
                task.cancel()
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    def _pass(self, now: datetime) -> datetime:
        """Start what is due; return when the next pass should run at the latest."""
        files = self.files.certificates()
        next_pass = now + timedelta(seconds=self.rescan_s)
        for key, (record, revision) in list(self.records.entries.items()):
            if key in self._running:
                continue
            if record.expired_tombstone(now):
                self._start(key, self._forget(key, revision))
                continue
            due = self.due(record, files, now)
            if due is None:
                continue
            if due > now or len(self._running) >= self.max_concurrent:
                next_pass = min(next_pass, max(due, now + timedelta(seconds=1)))
                continue
            self._start(key, self._order(key))
        return next_pass

    def due(self, record: DomainRecord, files: list[FileCertificate], now: datetime) -> (
        datetime | None
    ):  # fmt: skip
        covered = any(cert.covers(record.domain, now) for cert in files)
        due = due_at(
            record, validity(self.certificates.get(record.domain)), covered=covered, now=now
        )
        held_off = self._not_before.get(record.domain)
        return max(due, held_off) if due is not None and held_off is not None else due

    def _start(self, domain: str, job: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await job
            except BusError as exc:
                log.warning("order interrupted", domain=domain, reason=str(exc))
                self._hold_off(domain, BUS_RETRY_S)
            except LeaseLostError as exc:
                log.warning("order abandoned", domain=domain, reason=str(exc))
            except Exception:  # a bug in one order must not stop the others
                log.exception("order crashed", domain=domain)
                self._hold_off(domain, self.retry.max_s)
            finally:
                self._running.pop(domain, None)
                self.poke()

        self._running[domain] = spawn(guarded(), name=f"certificate for {domain}")

    def _hold_off(self, domain: str, seconds: float) -> None:
        self._not_before[domain] = datetime.now(UTC) + timedelta(seconds=seconds)

    async def _forget(self, domain: str, revision: int) -> None:
        await self.state.forget_record(domain, revision)

    async def _order(self, domain: str) -> None:
        lease = await self.leases.acquire(domain)
        if lease is None:
            self._hold_off(domain, LEASE_BUSY_RETRY_S)
            return
        self._not_before.pop(domain, None)
        async with lease.kept():
            # what the mirror said may be stale: another replica may have just renewed it
            record = await self.state.record(domain)
            previous = await self.state.certificate(domain)
            now = datetime.now(UTC)
            due = (
                due_at(record, validity(previous), covered=False, now=now)
                if record is not None
                else None
            )
            if due is None or due > now:  # this replica's mirror lags: give it time
                await lease.release()
                self._hold_off(domain, LEASE_BUSY_RETRY_S)
                return
            try:
                issued = await self.orderer.obtain(domain, lease)
            except OrderFailedError as exc:
                await lease.release()
                await self._failed(domain, exc)
                return
            await lease.record()  # still ours: no other replica stored one meanwhile
            await self.state.store_certificate(issued)
            if await self.state.change_record(domain, _issued_if_wanted) is None:
                # the service went away while we ordered: its certificate goes too
                await self.state.drop_certificate(domain)
                await lease.release()
                return
            await lease.release()
        log.info("certificate issued", domain=domain, not_after=issued.not_after.isoformat())
        await self.publish(
            CertificateIssued(
                domain=domain,
                not_before=issued.not_before,
                not_after=issued.not_after,
                issuer=issued.issuer,
                renewal=previous is not None,
            )
        )

    async def _failed(self, domain: str, error: OrderFailedError) -> None:
        now = datetime.now(UTC)

        def failed(record: DomainRecord | None) -> DomainRecord | None:
            if record is None or not record.wanted:
                return None
            return on_failed(record, error, now=now, retry=self.retry, rng=self.rng)

        record = await self.state.change_record(domain, failed)
        if record is None:
            return  # nobody wants it any more: nobody to tell
        retry_at = record.next_attempt_at
        log.warning(
            "certificate order failed",
            domain=domain,
            reason=error.reason,
            retry_at=retry_at.isoformat() if retry_at else None,
        )
        await self.publish(CertificateFailed(domain=domain, reason=error.reason, retry_at=retry_at))


def _issued_if_wanted(record: DomainRecord | None) -> DomainRecord | None:
    return on_issued(record) if record is not None and record.wanted else None
