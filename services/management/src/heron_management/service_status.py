"""Service status: the edges' reports, stored, and the status derived from them.

An edge's ``ServiceStatus`` reports are facts about one (edge, service) pair; they live in the
table ``edge_service_reports``, tagged with the reporting stream's session. Why a table and not
the stream's memory: with several management replicas, an edge's stream may sit on any of them,
while a service's status depends on every edge of its cluster; the database is the one place all
replicas see, and it already knows which edges are live (``presence``). A report counts while its
session is its edge's current one and the edge is live; the stream's end deletes its reports.

``domain.status.derive_status`` turns the facts into a status. Every derivation runs under
``lock_writes`` and reads everything afresh, so whichever replica derives last has seen every
committed fact: two replicas can never leave a status that contradicts the stored reports.
The service row is written only when its status or reason changes, never with an event: the
status is not configuration, and an event would echo through every edge's config stream.

The certificate manager's word about each service's certificate (``service_certificates``,
written by ``certificates``) is a fact too: a failure it reported shows as
``certificate_failed``, and an issued certificate sets ``certificate_issued_at``.

Derivations happen when a report changes, when an edge's stream opens or ends, when a stream's
heartbeat finds that the account's set of live edges changed (an edge whose replica died ages
out), when the certificate manager reports on a certificate, and inside every service change
(``service_catalog``).
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy import delete, func
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_core.types import ServiceMode
from heron_management.db.columns import utcnow
from heron_management.db.tables import (
    EdgeReportRow,
    EdgeRow,
    ServiceCertificateRow,
    ServiceRow,
    TargetRow,
)
from heron_management.db.write_lock import lock_writes
from heron_management.domain.certificates import CertificateRecord
from heron_management.domain.presence import is_live
from heron_management.domain.status import (
    EdgeReport,
    ServiceFacts,
    derive_status,
    needs_certificate,
)

log = structlog.get_logger(__name__)

MAX_ERROR_MESSAGE_CHARS = 1000  # the column holds 1024; an edge's message is a sentence


@dataclass(frozen=True)
class ServiceReport:
    """One ``ServiceStatus`` from an edge."""

    service_id: str
    tunnel_up: bool
    certificate_available: bool
    error_message: str


@dataclass(frozen=True)
class ReportingStream:
    """The edge stream a report came in on."""

    edge_id: str
    account_id: str
    stream_session: str


async def record_reports(
    sessions: async_sessionmaker[AsyncSession],
    stream: ReportingStream,
    reports: Sequence[ServiceReport],
) -> list[ServiceReport]:
    """Store ``reports`` and derive the statuses they touch; the reports that were stored
    (those about services of the stream's account)."""
    async with sessions() as session:
        await lock_writes(session)
        latest = {r.service_id: r for r in reports}  # a later report replaces an earlier one
        ids = list(latest)
        services = (
            await session.exec(
                select(ServiceRow).where(
                    col(ServiceRow.id).in_(ids), ServiceRow.account_id == stream.account_id
                )
            )
        ).all()
        known = {row.id for row in services}
        stored = [r for r in latest.values() if r.service_id in known]
        await _store(session, stream, stored)
        if ignored := sorted(set(ids) - known):
            log.info("report about no service of this account", service_ids=ignored)
        await _derive(session, stream.account_id, services, only=ids)
        await session.commit()
    return stored


async def refresh_account(
    sessions: async_sessionmaker[AsyncSession], account_id: str
) -> frozenset[str]:
    """Derive every service of the account again (an edge came, went or aged out); the IDs of
    the live edges it counted."""
    async with sessions() as session:
        await lock_writes(session)
        services = (
            await session.exec(select(ServiceRow).where(ServiceRow.account_id == account_id))
        ).all()
        live = await _derive(session, account_id, services, only=None)
        await session.commit()
    return live


async def refresh_service(
    session: AsyncSession, row: ServiceRow, targets: Sequence[TargetRow] | None = None
) -> None:
    """Derive ``row``'s status inside the caller's transaction, which holds ``lock_writes``;
    ``targets``: its targets as the transaction holds them (None: as stored)."""
    enabled = None if targets is None else {row.id: sum(1 for t in targets if t.enabled)}
    await _derive(session, row.account_id, [row], only=[row.id], enabled_targets=enabled)


async def forget_reports(
    session: AsyncSession, edge_id: str, *, stream_session: str | None = None
) -> None:
    """Delete an edge's reports: those of one stream, or (None) of all its streams."""
    statement = delete(EdgeReportRow).where(col(EdgeReportRow.edge_id) == edge_id)
    if stream_session is not None:
        statement = statement.where(col(EdgeReportRow.stream_session) == stream_session)
    await session.exec(statement)


async def live_edge_ids(session: AsyncSession, account_id: str) -> frozenset[str]:
    """The account's edges that count as connected now (each with its current stream)."""
    return frozenset(e.id for e in _live(await _edges(session, account_id)))


async def _store(
    session: AsyncSession, stream: ReportingStream, reports: Sequence[ServiceReport]
) -> None:
    existing = {
        row.service_id: row
        for row in await session.exec(
            select(EdgeReportRow).where(
                EdgeReportRow.edge_id == stream.edge_id,
                col(EdgeReportRow.service_id).in_([r.service_id for r in reports]),
            )
        )
    }
    now = utcnow()
    for report in reports:
        row = existing.get(report.service_id) or EdgeReportRow(
            edge_id=stream.edge_id,
            service_id=report.service_id,
            account_id=stream.account_id,
            stream_session=stream.stream_session,
        )
        row.stream_session = stream.stream_session
        row.tunnel_up, row.certificate_available = report.tunnel_up, report.certificate_available
        row.error_message = report.error_message[:MAX_ERROR_MESSAGE_CHARS]
        row.reported_at = now
        session.add(row)


async def _edges(session: AsyncSession, account_id: str) -> list[EdgeRow]:
    return list(await session.exec(select(EdgeRow).where(EdgeRow.account_id == account_id)))


def _live(edges: Iterable[EdgeRow]) -> list[EdgeRow]:
    now = utcnow()
    return [e for e in edges if is_live(e.connected, e.last_seen, now)]


async def _derive(
    session: AsyncSession,
    account_id: str,
    services: Sequence[ServiceRow],
    *,
    only: list[str] | None,
    enabled_targets: dict[str, int] | None = None,
) -> frozenset[str]:
    """Derive and, where it changed, write the status of each of ``services``: the services
    ``only`` names, or (None) every service of the account. The IDs of the live edges."""
    edges = await _edges(session, account_id)
    live = {e.id: e for e in _live(edges)}
    if not services:
        return frozenset(live)
    if enabled_targets is None:
        enabled_targets = await _enabled_targets(session, account_id, only)
    reports = await _reports(session, account_id, only, live)
    certificates = await _certificates(session, account_id, only)
    for row in services:
        certificate = _certificate_of(row, certificates.get(row.id))
        # a service of a cluster counts that cluster's edges only; one without, every edge
        serving = [e for e in edges if row.proxy_cluster in (None, e.proxy_domain)]
        facts = ServiceFacts(
            domain=row.domain,
            mode=ServiceMode(row.mode),
            enabled=row.enabled,
            enabled_targets=enabled_targets.get(row.id, 0),
            proxy_cluster=row.proxy_cluster,
            connected_clusters=sorted({e.proxy_domain for e in serving if e.id in live}),
            known_clusters=sorted({e.proxy_domain for e in serving}),
            reports=[
                report
                for cluster, report in reports.get(row.id, ())
                if row.proxy_cluster in (None, cluster)
            ],
            certificate_failure=certificate.failure(),
        )
        _apply(session, row, facts, certificate)
    return frozenset(live)


def _apply(
    session: AsyncSession, row: ServiceRow, facts: ServiceFacts, certificate: CertificateRecord
) -> None:
    status, reason = derive_status(facts)
    changed = False
    if (row.status, row.status_reason) != (status.value, reason):
        log.info(
            "service status changed", service_id=row.id, status=status.value, reason=reason,
            was=row.status,
        )  # fmt: skip
        row.status, row.status_reason = status.value, reason
        changed = True
    if needs_certificate(facts.mode):
        issued = certificate.issued_at
        if issued is None and row.certificate_issued_at is None:
            # as NetBird: when the edges first hold one (a static or wildcard file's, too)
            certified = any(r.certificate_available for r in facts.reports)
            issued = utcnow() if certified else None
        if issued is not None and row.certificate_issued_at != issued:
            row.certificate_issued_at = issued  # the certificate manager's: when it was issued
            changed = True
    if changed:
        session.add(row)


def _certificate_of(row: ServiceRow, stored: ServiceCertificateRow | None) -> CertificateRecord:
    """What the certificate manager said about ``row``'s certificate; nothing for a service
    without one (L4) or when what it said was about the domain the service had before."""
    if (
        stored is None
        or stored.domain != row.domain
        or not needs_certificate(ServiceMode(row.mode))
    ):
        return CertificateRecord()
    return CertificateRecord(
        issued_at=stored.issued_at,
        failed_at=stored.failed_at,
        failure_reason=stored.failure_reason,
        retry_at=stored.retry_at,
        requested_at=stored.requested_at,
    )


async def _certificates(
    session: AsyncSession, account_id: str, only: list[str] | None
) -> dict[str, ServiceCertificateRow]:
    query = select(ServiceCertificateRow).where(ServiceCertificateRow.account_id == account_id)
    if only is not None:
        query = query.where(col(ServiceCertificateRow.service_id).in_(only))
    return {row.service_id: row for row in await session.exec(query)}


async def _enabled_targets(
    session: AsyncSession, account_id: str, only: list[str] | None
) -> dict[str, int]:
    query = (
        select(TargetRow.service_id, func.count())
        .where(TargetRow.account_id == account_id, col(TargetRow.enabled))
        .group_by(col(TargetRow.service_id))
    )
    if only is not None:
        query = query.where(col(TargetRow.service_id).in_(only))
    return dict((await session.exec(query)).all())


async def _reports(
    session: AsyncSession, account_id: str, only: list[str] | None, live: dict[str, EdgeRow]
) -> dict[str, list[tuple[str, EdgeReport]]]:
    """The reports of live edges' current streams, by service, each with its edge's cluster."""
    if not live:
        return {}
    query = select(EdgeReportRow).where(
        EdgeReportRow.account_id == account_id, col(EdgeReportRow.edge_id).in_(list(live))
    )
    if only is not None:
        query = query.where(col(EdgeReportRow.service_id).in_(only))
    rows = await session.exec(query)
    grouped: dict[str, list[tuple[str, EdgeReport]]] = defaultdict(list)
    for row in rows:
        edge = live[row.edge_id]
        if row.stream_session != edge.stream_session:
            continue  # an older stream's, not yet cleaned up
        report = EdgeReport(
            edge=edge.instance_id,
            tunnel_up=row.tunnel_up,
            certificate_available=row.certificate_available,
            error_message=row.error_message,
        )
        grouped[row.service_id].append((edge.proxy_domain, report))
    return grouped
