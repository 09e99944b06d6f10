"""Custom domains: the use cases behind ``/api/domains``, and their verification.

``/api/domains`` lists the account's cluster domains (type ``free``: the addresses of its
clusters on record, as ``/api/proxy-clusters`` shows them; nothing to configure) and its custom
domains (type ``custom``). Adding one checks it (not under a cluster address of the account,
unique across the installation, its ``target_cluster`` a cluster of the account), stores it
with a ``DomainChanged`` and asks the ``DomainVerifier`` to verify it; the answer names the
CNAME to create (rules and record: ``domain.custom_domains``).

The verifier runs in the background: a verification asked for (added, or ``…/validate``) and,
every ``HERON_MANAGEMENT_DOMAIN_RECHECK_S``, the domains not verified yet, at most
``RECHECK_BATCH`` a round. A verification whose outcome flips publishes a ``DomainChanged``;
one that succeeds moves the services waiting under the domain without a cluster into its
target cluster (``service_catalog.join_cluster``).
"""

import asyncio
from collections.abc import Callable
from datetime import timedelta

import structlog
from sqlalchemy import or_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_core.events import DomainChanged
from heron_core.ids import new_id
from heron_core.tasks import stop_if_cancelled
from heron_core.types import AccountId, ChangeKind
from heron_management.cname_lookup import CnameLookup
from heron_management.db.columns import utcnow
from heron_management.db.tables import CustomDomainRow, ServiceRow
from heron_management.db.write_lock import lock_writes
from heron_management.domain.clusters import Cluster, cluster_of
from heron_management.domain.custom_domains import covering, validation_name, verdict
from heron_management.domain.permissions import Action
from heron_management.domain.principal import Principal
from heron_management.errors import (
    ConflictError,
    DnsLookupError,
    FieldProblem,
    InvalidRequestError,
    NotFoundError,
)
from heron_management.events import add_event
from heron_management.placement import account_custom_domains
from heron_management.proxy_clusters import account_clusters
from heron_management.service_catalog import domain_at_or_under, join_cluster
from heron_management.service_status import refresh_account
from heron_management.target_references import ServiceRef, refuse_if_targeted

log = structlog.get_logger(__name__)

#: verifications running at once (each waits on DNS for up to the lookup timeout)
VERIFY_WORKERS = 4
#: unverified domains verified again per round: a bound on what one replica asks DNS at once
RECHECK_BATCH = 100
MAX_REASON_CHARS = 1024  # the column's size


class CustomDomainCatalog:
    def __init__(
        self, on_commit: Callable[[], None], request_verification: Callable[[str], None]
    ) -> None:
        self._on_commit = on_commit  # wakes the outbox relay
        self._request_verification = request_verification

    async def listing(
        self, session: AsyncSession, principal: Principal
    ) -> tuple[list[Cluster], list[CustomDomainRow]]:
        """The account's clusters (its free domains) and its custom domains."""
        principal.require(Action.READ_SERVICES)
        rows = await session.exec(
            select(CustomDomainRow)
            .where(CustomDomainRow.account_id == principal.account_id)
            .order_by(col(CustomDomainRow.domain))
        )
        return await account_clusters(session, principal.account_id), list(rows)

    async def get(
        self, session: AsyncSession, principal: Principal, domain_id: str
    ) -> CustomDomainRow:
        principal.require(Action.READ_SERVICES)
        return await _load(session, principal.account_id, domain_id)

    async def add(
        self,
        session: AsyncSession,
        principal: Principal,
        domain: str,
        target_cluster: str | None,
    ) -> CustomDomainRow:
        principal.require(Action.MANAGE_SERVICES)
        await lock_writes(session)
        clusters = [c.address for c in await account_clusters(session, principal.account_id)]
        target, problems = _target(target_cluster, clusters)
        if (parent := cluster_of(domain, clusters)) is not None:
            needless = f"{domain!r} is under the cluster domain {parent!r}: its services need no custom domain"
            problems.insert(0, FieldProblem(("domain",), needless))
        if problems or target is None:
            raise InvalidRequestError(problems)
        taken = await session.exec(
            select(CustomDomainRow.id).where(CustomDomainRow.domain == domain)
        )
        if taken.first() is not None:
            raise ConflictError(f"domain {domain!r} is already a custom domain")
        row = CustomDomainRow(
            id=new_id("dom"), account_id=principal.account_id, domain=domain, target_cluster=target
        )
        session.add(row)
        add_event(session, _event(row, ChangeKind.CREATED))
        try:
            await session.commit()
        except IntegrityError as exc:
            await session.rollback()
            raise ConflictError(f"domain {domain!r} is already a custom domain") from exc
        self._on_commit()
        self._request_verification(row.id)
        return row

    async def delete(self, session: AsyncSession, principal: Principal, domain_id: str) -> None:
        """Refused (409, naming them) while services use the domain."""
        principal.require(Action.MANAGE_SERVICES)
        await lock_writes(session)
        row = await _load(session, principal.account_id, domain_id)
        refuse_if_targeted(
            f"custom domain {row.domain!r}",
            await _services_using(session, row),
            "delete them or move them to another domain first",
        )
        add_event(session, _event(row, ChangeKind.DELETED))
        await session.delete(row)
        await session.commit()
        self._on_commit()

    async def validate(
        self, session: AsyncSession, principal: Principal, domain_id: str
    ) -> CustomDomainRow:
        """Verify the domain again, in the background; the row as it stands now."""
        principal.require(Action.MANAGE_SERVICES)
        row = await _load(session, principal.account_id, domain_id)
        self._request_verification(row.id)
        return row


class DomainVerifier:
    """Verifies custom domains in the background: on request, and the unverified ones again
    every ``recheck_s``."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        lookup: CnameLookup,
        *,
        recheck_s: float,
        on_commit: Callable[[], None],
    ) -> None:
        self._sessions = sessions
        self._lookup = lookup
        self._recheck_s = recheck_s
        self._on_commit = on_commit
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()

    def request(self, domain_id: str) -> None:
        """Verify ``domain_id`` soon (once, however often it is asked before its turn)."""
        if domain_id not in self._queued:
            self._queued.add(domain_id)
            self._queue.put_nowait(domain_id)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for number in range(VERIFY_WORKERS):
                group.create_task(self._work(), name=f"domain-verifier-{number}")
            group.create_task(self._recheck(), name="domain-recheck")

    async def verify(self, domain_id: str) -> None:
        """Look the domain's validation CNAME up and store the outcome."""
        async with self._sessions() as session:
            row = await session.get(CustomDomainRow, domain_id)
        if row is None:
            return  # deleted meanwhile
        name = validation_name(row.domain)
        try:
            chain = await self._lookup.chain(name, stop_at=row.target_cluster)
            reason = verdict(chain, row.target_cluster)
        except DnsLookupError as exc:
            reason = f"the DNS lookup of {name} did not succeed: {exc}"
        await self._store(domain_id, row.target_cluster, reason)

    async def _work(self) -> None:
        while True:
            domain_id = await self._queue.get()
            self._queued.discard(domain_id)
            try:
                await self.verify(domain_id)
            except Exception as exc:  # noqa: BLE001  (the database is away: the next round retries)
                stop_if_cancelled(exc)
                log.warning("custom domain not verified", domain_id=domain_id, error=str(exc))

    async def _recheck(self) -> None:
        while True:
            try:
                for domain_id in await self._due():
                    self.request(domain_id)
            except Exception as exc:  # noqa: BLE001  (the database is away: the next round retries)
                stop_if_cancelled(exc)
                log.warning("custom domains not rechecked", error=str(exc))
            await asyncio.sleep(self._recheck_s)

    async def _due(self) -> list[str]:
        """Unverified domains not checked within the last round, least recently checked first."""
        since = utcnow() - timedelta(seconds=self._recheck_s)
        async with self._sessions() as session:
            rows = await session.exec(
                select(CustomDomainRow.id)
                .where(
                    col(CustomDomainRow.validated).is_(False),
                    or_(
                        col(CustomDomainRow.checked_at).is_(None),
                        col(CustomDomainRow.checked_at) < since,
                    ),
                )
                .order_by(col(CustomDomainRow.checked_at).asc().nulls_first())
                .limit(RECHECK_BATCH)
            )
            return list(rows.all())

    async def _store(self, domain_id: str, target: str, reason: str | None) -> None:
        async with self._sessions() as session:
            await lock_writes(session)
            row = await session.get(CustomDomainRow, domain_id)
            if row is None or row.target_cluster != target:
                return  # deleted (or replaced) while DNS was asked
            now = utcnow()
            flipped = row.validated != (reason is None)
            row.checked_at, row.validated = now, reason is None
            row.validation_reason = reason[:MAX_REASON_CHARS] if reason else None
            if flipped:
                row.validated_at = now if reason is None else None
                add_event(session, _event(row, ChangeKind.UPDATED))
                log.info(
                    "custom domain verification",
                    domain=row.domain,
                    verified=row.validated,
                    reason=reason,
                )
            joined = []
            if flipped and row.validated:
                joined = await join_cluster(session, row.account_id, target, under=row.domain)
            session.add(row)
            await session.commit()
        if flipped:
            self._on_commit()
        if joined:
            await refresh_account(self._sessions, row.account_id)


def _target(requested: str | None, clusters: list[str]) -> tuple[str | None, list[FieldProblem]]:
    """The cluster a new custom domain targets (the one asked for, or the account's only one),
    or why there is none."""
    if requested is not None:
        wanted = requested.strip().lower().removesuffix(".")
        if wanted in clusters:
            return wanted, []
        problem = f"no cluster {requested!r} in this account"
    elif len(clusters) == 1:
        return clusters[0], []
    else:
        problem = "name the cluster its services go to"
    known = ", ".join(repr(c) for c in clusters)
    none = "it has none yet: connect an edge first (its proxy domain is the cluster's address)"
    hint = f"its clusters: {known}" if known else none
    return None, [FieldProblem(("target_cluster",), f"{problem}; {hint}")]


async def _load(session: AsyncSession, account_id: str, domain_id: str) -> CustomDomainRow:
    row = await session.get(CustomDomainRow, domain_id)
    if row is None or row.account_id != account_id:
        raise NotFoundError("custom domain", domain_id)
    return row


async def _services_using(session: AsyncSession, row: CustomDomainRow) -> list[ServiceRef]:
    """The account's services whose domain this custom domain places: it covers them (as the
    longest custom domain that does) and no cluster address does."""
    customs = await account_custom_domains(session, row.account_id)
    clusters = [c.address for c in await account_clusters(session, row.account_id)]
    below = await session.exec(
        select(ServiceRow)
        .where(ServiceRow.account_id == row.account_id, domain_at_or_under(row.domain))
        .order_by(col(ServiceRow.name))
    )
    return [
        ServiceRef(id=s.id, name=s.name)
        for s in below
        if cluster_of(s.domain, clusters) is None
        and (custom := covering(s.domain, customs)) is not None
        and custom.domain == row.domain
    ]


def _event(row: CustomDomainRow, change: ChangeKind) -> DomainChanged:
    return DomainChanged(
        account_id=AccountId(row.account_id),
        domain=row.domain,
        change=change,
        verified=row.validated,
    )
