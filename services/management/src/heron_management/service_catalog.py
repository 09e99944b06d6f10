"""Services and their targets: the use cases behind ``/api/services``.

Every change is checked (``domain.service_spec``), checked against the account (domain free
and placed in a cluster — ``placement`` —, targets exist, port free), stored with its
``ServiceChanged`` event and its status derived again from the edges' reports
(``service_status``) in one transaction, and then the outbox relay is woken to publish the event.
"""

import ipaddress
from collections.abc import Callable, Sequence

from sqlalchemy import ColumnElement, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_core.events import ServiceChanged
from heron_core.ids import new_id
from heron_core.service import (
    AccessRestrictions,
    Service,
    ServiceMeta,
    ServiceRequest,
    Target,
    TargetOptions,
    TargetRequest,
)
from heron_core.types import (
    AccountId,
    ChangeKind,
    ResourceType,
    ServiceId,
    ServiceMode,
    ServiceSource,
    ServiceStatus,
    TargetId,
    TargetProtocol,
    TargetType,
)
from heron_management.certificates import forget_certificate, request_certificate
from heron_management.db.columns import utcnow
from heron_management.db.tables import PeerRow, ResourceRow, ServiceRow, TargetRow
from heron_management.db.write_lock import lock_writes
from heron_management.domain.permissions import Action
from heron_management.domain.principal import Principal
from heron_management.domain.service_spec import (
    AuthSpec,
    ServiceSpec,
    TargetSpec,
    build_spec,
    build_target,
    check_unique_paths,
)
from heron_management.domain.status import needs_certificate
from heron_management.domain.stored_auth import StoredAuth, StoredHeaderAuth, StoredSecretMethod
from heron_management.errors import ConflictError, FieldProblem, InvalidRequestError, NotFoundError
from heron_management.events import add_event
from heron_management.placement import place_service
from heron_management.port_allocation import assign_port
from heron_management.secret_hashing import hash_secret
from heron_management.service_status import refresh_service

_RESOURCE_TYPES = {
    TargetType.HOST: ResourceType.HOST,
    TargetType.DOMAIN: ResourceType.DOMAIN,
    TargetType.SUBNET: ResourceType.SUBNET,
}


class ServiceCatalog:
    def __init__(self, on_commit: Callable[[], None]) -> None:
        self._on_commit = on_commit  # wakes the outbox relay

    # reads

    async def list_services(self, session: AsyncSession, principal: Principal) -> list[Service]:
        principal.require(Action.READ_SERVICES)
        rows = (
            await session.exec(
                select(ServiceRow)
                .where(ServiceRow.account_id == principal.account_id)
                .order_by(col(ServiceRow.created_at), col(ServiceRow.id))
            )
        ).all()
        targets = await _targets_of(session, [row.id for row in rows])
        return [to_service(row, targets.get(row.id, [])) for row in rows]

    async def get(self, session: AsyncSession, principal: Principal, service_id: str) -> Service:
        principal.require(Action.READ_SERVICES)
        row, targets = await _load(session, principal.account_id, service_id)
        return to_service(row, targets)

    # service changes

    async def create(
        self, session: AsyncSession, principal: Principal, request: ServiceRequest
    ) -> Service:
        principal.require(Action.MANAGE_SERVICES)
        await lock_writes(session)
        spec = build_spec(request)
        row = ServiceRow(
            id=new_id("svc"),
            account_id=principal.account_id,
            name=spec.name,
            domain=spec.domain,
            mode=spec.mode,
            status=ServiceStatus.PENDING,
            source=ServiceSource.PERMANENT,
        )
        targets = await self._apply(session, row, [], spec, previous_domain=None)
        return await self._commit(session, row, targets, ChangeKind.CREATED, previous_domain=None)

    async def update(
        self, session: AsyncSession, principal: Principal, service_id: str, request: ServiceRequest
    ) -> Service:
        principal.require(Action.MANAGE_SERVICES)
        await lock_writes(session)
        row, current = await _load(session, principal.account_id, service_id)
        previous_domain = row.domain
        spec = build_spec(request, StoredAuth.model_validate(row.auth))
        targets = await self._apply(session, row, current, spec, previous_domain=previous_domain)
        return await self._commit(session, row, targets, ChangeKind.UPDATED, previous_domain)

    async def delete(self, session: AsyncSession, principal: Principal, service_id: str) -> None:
        principal.require(Action.MANAGE_SERVICES)
        await lock_writes(session)
        row, _ = await _load(session, principal.account_id, service_id)
        add_event(session, _event(row, ChangeKind.DELETED, previous_domain=None))
        await session.delete(row)
        await session.commit()
        self._on_commit()

    async def set_enabled(
        self, session: AsyncSession, principal: Principal, service_id: str, *, enabled: bool
    ) -> Service:
        principal.require(Action.MANAGE_SERVICES)
        await lock_writes(session)
        row, targets = await _load(session, principal.account_id, service_id)
        row.enabled = enabled
        return await self._commit(session, row, targets, ChangeKind.UPDATED, row.domain)

    async def retry_certificate(
        self, session: AsyncSession, principal: Principal, service_id: str
    ) -> Service:
        """Ask the certificate manager for the service's certificate now; the failure shown so
        far gives way to what the edges report (``certificate_pending``) until it answers."""
        principal.require(Action.MANAGE_SERVICES)
        await lock_writes(session)
        row, targets = await _load(session, principal.account_id, service_id)
        if not needs_certificate(ServiceMode(row.mode)):
            raise ConflictError(
                f"service {row.name!r} is a {row.mode} service: it has no certificate to retry "
                "(only HTTP services get one: the edge passes TLS services' TLS through)"
            )
        await request_certificate(session, row)
        await refresh_service(session, row, targets)
        await session.commit()
        self._on_commit()
        return to_service(row, targets)

    # target changes

    async def list_targets(
        self, session: AsyncSession, principal: Principal, service_id: str
    ) -> list[Target]:
        return (await self.get(session, principal, service_id)).targets

    async def add_target(
        self, session: AsyncSession, principal: Principal, service_id: str, request: TargetRequest
    ) -> Target:
        principal.require(Action.MANAGE_SERVICES)
        await lock_writes(session)
        row, targets = await _load(session, principal.account_id, service_id)
        position = max((t.position for t in targets), default=-1) + 1
        spec = build_target(request, ServiceMode(row.mode))
        new = _target_row(row, spec, position)
        await self._check_targets(session, row, [*targets, new], focus=new)
        session.add(new)
        await self._commit(session, row, [*targets, new], ChangeKind.UPDATED, row.domain)
        return to_target(new)

    async def replace_target(
        self,
        session: AsyncSession,
        principal: Principal,
        service_id: str,
        target_id: str,
        request: TargetRequest,
    ) -> Target:
        principal.require(Action.MANAGE_SERVICES)
        await lock_writes(session)
        row, targets = await _load(session, principal.account_id, service_id)
        old = _find_target(targets, target_id)
        spec = build_target(request, ServiceMode(row.mode))
        _write_target(old, spec)
        await self._check_targets(session, row, targets, focus=old)
        await self._commit(session, row, targets, ChangeKind.UPDATED, row.domain)
        return to_target(old)

    async def set_target_enabled(
        self,
        session: AsyncSession,
        principal: Principal,
        service_id: str,
        target_id: str,
        *,
        enabled: bool,
    ) -> Target:
        principal.require(Action.MANAGE_SERVICES)
        await lock_writes(session)
        row, targets = await _load(session, principal.account_id, service_id)
        target = _find_target(targets, target_id)
        target.enabled = enabled
        session.add(target)
        await self._commit(session, row, targets, ChangeKind.UPDATED, row.domain)
        return to_target(target)

    async def remove_target(
        self, session: AsyncSession, principal: Principal, service_id: str, target_id: str
    ) -> None:
        principal.require(Action.MANAGE_SERVICES)
        await lock_writes(session)
        row, targets = await _load(session, principal.account_id, service_id)
        target = _find_target(targets, target_id)
        await session.delete(target)
        remaining = [t for t in targets if t.id != target.id]
        await self._commit(session, row, remaining, ChangeKind.UPDATED, row.domain)

    # shared steps

    async def _apply(
        self,
        session: AsyncSession,
        row: ServiceRow,
        current: list[TargetRow],
        spec: ServiceSpec,
        *,
        previous_domain: str | None,
    ) -> list[TargetRow]:
        """Write ``spec`` onto ``row``, replacing its targets, after the checks that need the DB;
        ``previous_domain``: the service's domain so far (None: a new service)."""
        await _check_domain_free(session, row.id, spec.domain)
        moved = spec.domain != previous_domain
        cluster = await place_service(
            session, row.account_id, spec.domain, row.proxy_cluster, new_domain=moved
        )
        await assign_port(session, row, spec, cluster)
        if moved and previous_domain is not None:  # the old domain's certificate is not its
            await forget_certificate(session, row.id)
            row.certificate_issued_at = None
        row.proxy_cluster = cluster.address if cluster else None
        row.name, row.domain, row.mode = spec.name, spec.domain, spec.mode
        row.enabled = spec.enabled
        row.pass_host_header, row.rewrite_redirects = spec.pass_host_header, spec.rewrite_redirects
        row.access_restrictions = spec.access_restrictions.model_dump(mode="json")
        current_auth = StoredAuth.model_validate(row.auth) if row.auth else StoredAuth()
        new_auth = await _stored_auth(spec.auth, current_auth)
        if row.auth and new_auth != current_auth:
            row.auth_revision = (row.auth_revision or 1) + 1
        row.auth = new_auth.model_dump(mode="json")
        targets = []
        for position, (target_spec, kept) in enumerate(_match_targets(current, spec.targets)):
            target = kept or _target_row(row, target_spec, position)
            _write_target(target, target_spec)
            target.position = position
            targets.append(target)
        for stale in current:
            if all(stale is not target for target in targets):
                await session.delete(stale)
        await self._check_targets(session, row, targets)
        session.add(row)
        try:
            await session.flush()  # the service row must exist before its targets reference it
        except IntegrityError as exc:
            await session.rollback()
            raise _conflict(exc, row) from exc
        for target in targets:
            session.add(target)
        return targets

    async def _check_targets(
        self,
        session: AsyncSession,
        row: ServiceRow,
        targets: Sequence[TargetRow],
        *,
        focus: TargetRow | None = None,
    ) -> None:
        """The rules across a service's targets; ``focus``: the one target a request's body is."""
        specs = tuple(_spec_of(t) for t in targets)
        problems = check_unique_paths(specs) + await _missing_referents(
            session, AccountId(row.account_id), specs
        )
        if focus is not None:
            problems = _about_the_body(problems, list(targets), focus)
        if problems:
            raise InvalidRequestError(problems)

    async def _commit(
        self,
        session: AsyncSession,
        row: ServiceRow,
        targets: list[TargetRow],
        change: ChangeKind,
        previous_domain: str | None,
    ) -> Service:
        row.updated_at = utcnow()
        session.add(row)
        await refresh_service(session, row, targets)  # e.g. disabled: pending at once
        moved_from = previous_domain if previous_domain not in (None, row.domain) else None
        add_event(session, _event(row, change, moved_from))
        try:
            await session.commit()
        except IntegrityError as exc:
            await session.rollback()
            raise _conflict(exc, row) from exc
        self._on_commit()
        return to_service(row, targets)


async def join_cluster(
    session: AsyncSession, account_id: str, address: str, *, under: str | None = None
) -> list[ServiceRow]:
    """An edge of cluster ``address`` registered (or a custom domain ``under`` that targets it
    was verified): the account's services that had no cluster and whose domain is ``under``
    (default: ``address``) or below it join it (each with a ``ServiceChanged``), in the caller's
    transaction, which holds ``lock_writes``; the services that joined. Their ports stay: a
    service without a cluster competed with every other, so its port is free in any cluster. A
    service joins the first cluster that claims it and changes clusters only when a change of it
    derives another.
    """
    parent = under or address
    homeless = await session.exec(
        select(ServiceRow).where(
            ServiceRow.account_id == account_id,
            col(ServiceRow.proxy_cluster).is_(None),
            domain_at_or_under(parent),
        )
    )
    joined = list(homeless)
    for row in joined:
        row.proxy_cluster, row.updated_at = address, utcnow()
        session.add(row)
        add_event(session, _event(row, ChangeKind.UPDATED, previous_domain=None))
    return joined


def domain_at_or_under(parent: str) -> ColumnElement[bool]:
    """A service's domain is ``parent`` or a name under it (a query condition)."""
    return or_(
        col(ServiceRow.domain) == parent,
        col(ServiceRow.domain).endswith(f".{parent}", autoescape=True),
    )


def _about_the_body(
    problems: list[FieldProblem], targets: list[TargetRow], focus: TargetRow
) -> list[FieldProblem]:
    """Problems located in the service's target list, relocated to a single-target body."""
    index = next(i for i, target in enumerate(targets) if target is focus)
    relocated = []
    for problem in problems:
        loc = problem.loc
        if loc[:2] == ("targets", index):
            relocated.append(FieldProblem(loc[2:], problem.message))
        elif loc[:1] == ("targets",) and loc[2:] == ("path",) and focus.path is not None:
            message = f"path {focus.path!r} is already used by another target of this service"
            relocated.append(FieldProblem(("path",), message))
        else:
            relocated.append(problem)
    return relocated


def _conflict(exc: IntegrityError, row: ServiceRow) -> ConflictError:
    """What a constraint that caught a concurrent change means to the caller."""
    text = str(exc.orig).lower()
    if "domain" in text and ("unique" in text or "duplicate" in text):
        return ConflictError(f"domain {row.domain!r} is already in use")
    if "foreign key" in text:
        return ConflictError(
            f"service {row.id!r} or what it references changed meanwhile; read it and try again"
        )
    return ConflictError("the change conflicts with another one made meanwhile; try again")


def _match_targets(
    current: Sequence[TargetRow], wanted: Sequence[TargetSpec]
) -> list[tuple[TargetSpec, TargetRow | None]]:
    """Which stored target each wanted one continues, so that it keeps its ID.

    A target that carries the ``id`` of one of the service's targets continues it; one without an
    ``id`` continues the stored target in the same position, unless that one is claimed by ID.
    """
    by_id = {t.id: t for t in current}
    claimed = {spec.request_id for spec in wanted if spec.request_id in by_id}
    ordered = sorted(current, key=lambda t: t.position)
    matches: list[tuple[TargetSpec, TargetRow | None]] = []
    for position, spec in enumerate(wanted):
        if spec.request_id in by_id:
            matches.append((spec, by_id[spec.request_id]))
        elif (
            spec.request_id is None
            and position < len(ordered)
            and ordered[position].id not in claimed
        ):
            claimed.add(ordered[position].id)
            matches.append((spec, ordered[position]))
        else:
            matches.append((spec, None))
    return matches


# conversions


def to_service(row: ServiceRow, targets: Sequence[TargetRow]) -> Service:
    return Service(
        id=ServiceId(row.id),
        name=row.name,
        domain=row.domain,
        mode=ServiceMode(row.mode),
        listen_port=row.listen_port,
        port_auto_assigned=row.port_auto_assigned,
        proxy_cluster=row.proxy_cluster,
        enabled=row.enabled,
        pass_host_header=row.pass_host_header,
        rewrite_redirects=row.rewrite_redirects,
        targets=[to_target(t) for t in sorted(targets, key=lambda t: t.position)],
        auth=StoredAuth.model_validate(row.auth).public(),
        access_restrictions=AccessRestrictions.model_validate(row.access_restrictions),
        meta=ServiceMeta(
            created_at=row.created_at,
            certificate_issued_at=row.certificate_issued_at,
            status=ServiceStatus(row.status),
            status_reason=row.status_reason,
        ),
        source=ServiceSource(row.source),
    )


def to_target(row: TargetRow) -> Target:
    return Target(
        id=TargetId(row.id),
        target_type=TargetType(row.target_type),
        target_id=row.target_id,
        host=row.host,
        port=row.port,
        protocol=TargetProtocol(row.protocol),
        path=row.path,
        enabled=row.enabled,
        options=TargetOptions.model_validate(row.options),
    )


def _spec_of(row: TargetRow) -> TargetSpec:
    target = to_target(row)
    return TargetSpec(
        target_type=target.target_type,
        target_id=target.target_id,
        host=target.host,
        port=target.port,
        protocol=target.protocol,
        path=target.path,
        enabled=target.enabled,
        options=target.options,
    )


def _target_row(service: ServiceRow, spec: TargetSpec, position: int) -> TargetRow:
    row = TargetRow(
        id=new_id("tgt"),
        account_id=service.account_id,
        service_id=service.id,
        position=position,
        target_type=spec.target_type,
        target_id=spec.target_id,
        port=spec.port,
        protocol=spec.protocol,
    )
    _write_target(row, spec)
    return row


def _write_target(row: TargetRow, spec: TargetSpec) -> None:
    row.target_type, row.target_id, row.host = spec.target_type, spec.target_id, spec.host
    row.port, row.protocol, row.path = spec.port, spec.protocol, spec.path
    row.enabled = spec.enabled
    row.options = spec.options.model_dump(mode="json")


def _event(row: ServiceRow, change: ChangeKind, previous_domain: str | None) -> ServiceChanged:
    return ServiceChanged(
        account_id=AccountId(row.account_id),
        service_id=ServiceId(row.id),
        change=change,
        domain=row.domain,
        previous_domain=previous_domain,
        mode=ServiceMode(row.mode),
        enabled=row.enabled,
        proxy_cluster=row.proxy_cluster,
    )


# database checks


async def _load(
    session: AsyncSession, account_id: str, service_id: str
) -> tuple[ServiceRow, list[TargetRow]]:
    row = await session.get(ServiceRow, service_id)
    if row is None or row.account_id != account_id:
        raise NotFoundError("service", service_id)
    return row, (await _targets_of(session, [row.id])).get(row.id, [])


async def _targets_of(session: AsyncSession, service_ids: list[str]) -> dict[str, list[TargetRow]]:
    if not service_ids:
        return {}
    rows = await session.exec(
        select(TargetRow)
        .where(col(TargetRow.service_id).in_(service_ids))
        .order_by(col(TargetRow.position))
    )
    grouped: dict[str, list[TargetRow]] = {}
    for row in rows:
        grouped.setdefault(row.service_id, []).append(row)
    return grouped


def _find_target(targets: list[TargetRow], target_id: str) -> TargetRow:
    for target in targets:
        if target.id == target_id:
            return target
    raise NotFoundError("target", target_id)


async def _check_domain_free(session: AsyncSession, service_id: str, domain: str) -> None:
    holder = (
        await session.exec(
            select(ServiceRow.id).where(ServiceRow.domain == domain, ServiceRow.id != service_id)
        )
    ).first()
    if holder is not None:
        raise ConflictError(f"domain {domain!r} is already in use")


async def _missing_referents(
    session: AsyncSession, account_id: AccountId, targets: tuple[TargetSpec, ...]
) -> list[FieldProblem]:
    peer_ids = {t.target_id for t in targets if t.target_type is TargetType.PEER}
    resource_ids = {t.target_id for t in targets if t.target_type is not TargetType.PEER}
    peers = set(
        (
            await session.exec(
                select(PeerRow.id).where(
                    PeerRow.account_id == account_id, col(PeerRow.id).in_(peer_ids)
                )
            )
        ).all()
    )
    rows = {
        row.id: row
        for row in await session.exec(
            select(ResourceRow).where(
                ResourceRow.account_id == account_id, col(ResourceRow.id).in_(resource_ids)
            )
        )
    }
    resources = {rid: ResourceType(row.type) for rid, row in rows.items()}
    problems = []
    for index, target in enumerate(targets):
        loc = ("targets", index, "target_id")
        if target.target_type is TargetType.PEER:
            if target.target_id not in peers:
                problems.append(FieldProblem(loc, f"no peer {target.target_id!r} in this account"))
            continue
        found = resources.get(target.target_id)
        wanted = _RESOURCE_TYPES[target.target_type]
        if found is None:
            problems.append(
                FieldProblem(loc, f"no network resource {target.target_id!r} in this account")
            )
        elif found is not wanted:
            problems.append(
                FieldProblem(loc, f"resource {target.target_id!r} is a {found}, not a {wanted}")
            )
        elif found is ResourceType.SUBNET and target.host is not None:
            problem = _outside_subnet(target.host, rows[target.target_id].address)
            if problem:
                problems.append(FieldProblem(("targets", index, "host"), problem))
    return problems


def _outside_subnet(host: str, subnet: str) -> str | None:
    """Why ``host`` is not an address of ``subnet``; None when it is one."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"host {host!r} must be an IP address inside the subnet {subnet}"
    network = ipaddress.ip_network(subnet, strict=False)
    if address not in network:
        return f"host {host} is not inside the subnet {subnet}"
    return None


async def _stored_auth(spec: AuthSpec, current: StoredAuth) -> StoredAuth:
    async def method(enabled: bool, secret: str | None, old: str | None) -> StoredSecretMethod:
        return StoredSecretMethod(
            enabled=enabled, hash=await hash_secret(secret) if secret else old
        )

    headers = []
    for header in spec.header_auths:
        stored_hash = (
            await hash_secret(header.new_value)
            if header.new_value
            else current.header_hash(header.header)
        )
        assert stored_hash is not None  # build_spec refused a header with neither
        headers.append(
            StoredHeaderAuth(enabled=header.enabled, header=header.header, hash=stored_hash)
        )
    return StoredAuth(
        password=await method(
            spec.password.enabled, spec.password.new_secret, current.password.hash
        ),
        pin=await method(spec.pin.enabled, spec.pin.new_secret, current.pin.hash),
        sso=spec.sso,
        header_auths=headers,
    )
