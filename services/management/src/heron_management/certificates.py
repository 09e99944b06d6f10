"""The certificate manager's word about each service's certificate, and the retry asked for
through the API.

``record_issued`` and ``record_failed`` store a ``CertificateIssued``/``CertificateFailed``
(delivered by ``certificate_events``) for the service that has the event's domain, and derive
that service's status again (``service_status``), in one transaction under ``lock_writes``. An
event about a domain no service has (it was deleted or moved meanwhile) or older than what is
stored (redelivered, or handled late by another replica) changes nothing.

``request_certificate`` is the retry: it publishes ``CertificateRequested`` (the certificate
manager then orders without waiting for its backoff) and hides the failure shown so far.
"""

from collections.abc import Callable

import structlog
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_core.events import CertificateFailed, CertificateIssued, CertificateRequested
from heron_core.service import normalize_domain
from heron_core.types import AccountId
from heron_management.db.columns import utcnow
from heron_management.db.tables import ServiceCertificateRow, ServiceRow
from heron_management.db.write_lock import lock_writes
from heron_management.domain.certificates import is_newer
from heron_management.events import add_event
from heron_management.service_status import refresh_service

log = structlog.get_logger(__name__)

MAX_REASON_CHARS = 2048  # the column's size; a CA's problem document can be longer
MAX_ISSUER_CHARS = 512


async def record_issued(
    sessions: async_sessionmaker[AsyncSession], event: CertificateIssued
) -> None:
    def issued(row: ServiceCertificateRow) -> bool:
        if not is_newer(event.occurred_at, row.issued_at):
            return False
        row.issued_at, row.issuer = event.occurred_at, event.issuer[:MAX_ISSUER_CHARS]
        row.not_before, row.not_after = event.not_before, event.not_after
        return True

    await _record(sessions, event.domain, issued)


async def record_failed(
    sessions: async_sessionmaker[AsyncSession], event: CertificateFailed
) -> None:
    def failed(row: ServiceCertificateRow) -> bool:
        if not is_newer(event.occurred_at, row.failed_at):
            return False
        row.failed_at, row.retry_at = event.occurred_at, event.retry_at
        row.failure_reason = event.reason[:MAX_REASON_CHARS]
        return True

    await _record(sessions, event.domain, failed)


async def request_certificate(session: AsyncSession, service: ServiceRow) -> None:
    """Ask for ``service``'s certificate again, in the caller's transaction (which holds
    ``lock_writes``); the failure shown so far is hidden until the certificate manager reports."""
    row = await _certificate_row(session, service)
    row.requested_at = row.updated_at = utcnow()
    session.add(row)
    add_event(
        session,
        CertificateRequested(account_id=AccountId(service.account_id), domain=service.domain),
    )


async def _record(
    sessions: async_sessionmaker[AsyncSession],
    domain: str,
    change: Callable[[ServiceCertificateRow], bool],
) -> None:
    try:
        wanted = normalize_domain(domain)
    except ValueError as exc:
        log.warning(
            "certificate event for an invalid domain ignored", domain=domain, reason=str(exc)
        )
        return
    async with sessions() as session:
        await lock_writes(session)
        service = (
            await session.exec(select(ServiceRow).where(ServiceRow.domain == wanted))
        ).first()
        if service is None:
            log.info("certificate event for a domain no service has", domain=wanted)
            return
        row = await _certificate_row(session, service)
        if not change(row):
            log.info("stale certificate event ignored", domain=wanted)
            return
        row.updated_at = utcnow()
        session.add(row)
        await session.flush()
        await refresh_service(session, service)
        await session.commit()


async def _certificate_row(session: AsyncSession, service: ServiceRow) -> ServiceCertificateRow:
    row = await session.get(ServiceCertificateRow, service.id)
    if row is None:
        row = ServiceCertificateRow(
            service_id=service.id, account_id=service.account_id, domain=service.domain
        )
    return row


async def forget_certificate(session: AsyncSession, service_id: str) -> None:
    """The service moved to another domain: what was said about the old one's certificate goes
    (in the caller's transaction)."""
    await session.exec(
        delete(ServiceCertificateRow).where(col(ServiceCertificateRow.service_id) == service_id)
    )
