"""Edges: registering an edge instance on its config stream, and what that stream shows.

An edge authenticates with a proxy token and serves that token's account. Its ``Hello`` upserts
one row per (account, ``instance_id``); its overlay address belongs to its WireGuard key, so a
restarted edge that keeps its key keeps its address. Rows of edges gone for
``FORGET_EDGES_AFTER`` are dropped when another edge of the account registers.

What the stream shows: every peer of the account with a WireGuard key (``tunnel_peers``), and
the account's enabled services of the edge's cluster (``edge_services``): those whose
``proxy_cluster`` is the edge's proxy domain, and those without a cluster yet (a domain under no
cluster of the account, e.g. a custom domain), which every edge of the account serves. When an
edge registers, the services without a cluster whose domain falls under its proxy domain join
its cluster (``service_catalog.join_cluster``).
"""

import ipaddress
import random
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from sqlalchemy import delete, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_core.events import EdgeChanged
from heron_core.ids import new_id
from heron_core.service import normalize_domain
from heron_core.types import AccountId, ChangeKind, EdgeId, ResourceType, TargetType
from heron_management.db.columns import utcnow
from heron_management.db.tables import (
    EdgeRow,
    PeerRow,
    ProxyTokenRow,
    ResourceRow,
    RouterRow,
    ServiceRow,
    TargetRow,
)
from heron_management.db.write_lock import lock_writes
from heron_management.domain.overlay import check_wireguard_key
from heron_management.domain.presence import is_live
from heron_management.domain.stored_auth import StoredAuth
from heron_management.errors import (
    AuthenticationError,
    ConflictError,
    FieldProblem,
    InvalidRequestError,
    ManagementError,
    SupersededError,
    UnavailableError,
)
from heron_management.events import add_event
from heron_management.overlay import edge_address
from heron_management.service_catalog import join_cluster, to_service, to_target
from heron_management.service_status import forget_reports
from heron_management.tunnel_views import EdgeService, RoutedTarget, TunnelPeer

log = structlog.get_logger(__name__)

REGISTER_ATTEMPTS = 8
FORGET_EDGES_AFTER = timedelta(hours=1)  # as NetBird drops proxies not seen for an hour
MAX_INSTANCE_ID_CHARS = 128
MAX_ENDPOINT_CHARS = 300
_INSTANCE_ID = re.compile(r"^[A-Za-z0-9._:@-]+$")
_HOST_LABELS = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


@dataclass(frozen=True)
class EdgeHello:
    instance_id: str
    proxy_domain: str
    version: str
    wireguard_public_key: str
    wireguard_endpoint: str
    capabilities: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class EdgeRegistration:
    edge_id: str
    account_id: str
    proxy_token_id: str
    instance_id: str
    proxy_domain: str
    overlay_address: str
    stream_session: str


def check_hello(hello: EdgeHello) -> EdgeHello:
    """``hello`` with its domain normalised; InvalidRequestError lists every broken field."""
    problems: list[FieldProblem] = []
    instance = hello.instance_id
    if not instance or len(instance) > MAX_INSTANCE_ID_CHARS or not _INSTANCE_ID.match(instance):
        problems.append(
            FieldProblem(
                ("instance_id",),
                f"instance_id {instance!r} must be 1-{MAX_INSTANCE_ID_CHARS} characters of "
                "A-Z, a-z, 0-9 and . _ : @ -",
            )
        )
    domain = hello.proxy_domain
    try:
        domain = str(ipaddress.ip_address(domain))
    except ValueError:
        try:
            domain = normalize_domain(domain)
        except ValueError as exc:
            problems.append(FieldProblem(("proxy_domain",), str(exc)))
    try:
        check_wireguard_key(hello.wireguard_public_key)
    except ValueError as exc:
        problems.append(FieldProblem(("wireguard_public_key",), str(exc)))
    if (endpoint_problem := _endpoint_problem(hello.wireguard_endpoint)) is not None:
        problems.append(FieldProblem(("wireguard_endpoint",), endpoint_problem))
    if problems:
        raise InvalidRequestError(problems)
    return EdgeHello(
        instance_id=instance,
        proxy_domain=domain,
        version=hello.version[:64],
        wireguard_public_key=hello.wireguard_public_key,
        wireguard_endpoint=hello.wireguard_endpoint,
        capabilities=dict(hello.capabilities),
    )


def _endpoint_problem(endpoint: str) -> str | None:
    host, colon, port = endpoint.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    fits = bool(colon and host) and len(endpoint) <= MAX_ENDPOINT_CHARS
    if not fits or not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"wireguard_endpoint {endpoint!r} must be host:port (UDP), e.g. 203.0.113.7:51820"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST_LABELS.match(host):
            return f"wireguard_endpoint's host {host!r} is neither an IP address nor a host name"
    return None


async def register_edge(
    sessions: async_sessionmaker[AsyncSession],
    token: ProxyTokenRow,
    hello: EdgeHello,
    rng: random.Random,
) -> EdgeRegistration:
    for attempt in range(REGISTER_ATTEMPTS):
        async with sessions() as session:
            try:
                return await _register_once(session, token, hello, rng)
            except IntegrityError as exc:
                await session.rollback()  # an address or the instance taken meanwhile: again
                log.debug("edge registration raced, again", attempt=attempt, error=str(exc.orig))
    raise UnavailableError("too many edges raced for the same addresses: try again")


async def _register_once(
    session: AsyncSession, token: ProxyTokenRow, hello: EdgeHello, rng: random.Random
) -> EdgeRegistration:
    await lock_writes(session)  # services may join the edge's cluster: as a service change
    key = hello.wireguard_public_key
    if (await session.exec(select(PeerRow.id).where(PeerRow.wireguard_public_key == key))).first():
        raise ConflictError(f"WireGuard key {key[:8]!r}… belongs to a peer: give the edge its own")
    address = await edge_address(session, key, rng)
    row = (
        await session.exec(
            select(EdgeRow).where(
                EdgeRow.account_id == token.account_id, EdgeRow.instance_id == hello.instance_id
            )
        )
    ).first()
    change = ChangeKind.UPDATED
    if row is None:
        change = ChangeKind.CREATED
        row = EdgeRow(
            id=new_id("edg"),
            account_id=token.account_id,
            instance_id=hello.instance_id,
            proxy_domain=hello.proxy_domain,
            wireguard_public_key=key,
            wireguard_endpoint=hello.wireguard_endpoint,
            overlay_address=address,
        )
    now = utcnow()
    row.proxy_token_id, row.proxy_domain, row.version = token.id, hello.proxy_domain, hello.version
    row.wireguard_public_key, row.wireguard_endpoint = key, hello.wireguard_endpoint
    row.overlay_address, row.capabilities = address, dict(hello.capabilities)
    row.connected, row.last_seen, row.stream_session = True, now, secrets.token_hex(8)
    session.add(row)
    await forget_reports(session, row.id)  # a new stream reports afresh
    await join_cluster(session, token.account_id, hello.proxy_domain)
    await session.exec(
        delete(EdgeRow).where(
            col(EdgeRow.account_id) == token.account_id,
            col(EdgeRow.id) != row.id,
            col(EdgeRow.last_seen) < now - FORGET_EDGES_AFTER,
        )
    )
    add_event(session, _changed(row, change))
    await session.commit()
    return EdgeRegistration(
        edge_id=row.id,
        account_id=row.account_id,
        proxy_token_id=token.id,
        instance_id=row.instance_id,
        proxy_domain=row.proxy_domain,
        overlay_address=address,
        stream_session=row.stream_session,
    )


async def stream_problem(session: AsyncSession, edge: EdgeRegistration) -> ManagementError | None:
    """Why an edge's stream must end (token revoked, replaced by a newer stream), or None."""
    if await session.get(ProxyTokenRow, edge.proxy_token_id, populate_existing=True) is None:
        return AuthenticationError("the proxy token was revoked")
    row = await session.get(EdgeRow, edge.edge_id, populate_existing=True)
    if row is None or row.stream_session != edge.stream_session:
        return SupersededError(
            f"a newer stream of edge instance {edge.instance_id!r} replaced this one"
        )
    return None


async def touch_stream(session: AsyncSession, edge: EdgeRegistration) -> None:
    await session.exec(
        update(EdgeRow)
        .where(col(EdgeRow.id) == edge.edge_id, col(EdgeRow.stream_session) == edge.stream_session)
        .values(last_seen=utcnow(), connected=True)
    )
    await session.commit()


async def close_stream(session: AsyncSession, edge: EdgeRegistration) -> None:
    """The stream ended: its reports go, and its edge is disconnected unless a newer stream
    took over."""
    await forget_reports(session, edge.edge_id, stream_session=edge.stream_session)
    row = await session.get(EdgeRow, edge.edge_id, populate_existing=True)
    if row is None or row.stream_session != edge.stream_session:
        await session.commit()
        return
    row.connected, row.last_seen = False, utcnow()
    session.add(row)
    add_event(session, _changed(row, ChangeKind.UPDATED))
    await session.commit()


# what the stream shows


async def tunnel_peers(session: AsyncSession, account_id: str) -> tuple[TunnelPeer, ...]:
    rows = await session.exec(
        select(PeerRow).where(
            PeerRow.account_id == account_id,
            col(PeerRow.wireguard_public_key).is_not(None),
            col(PeerRow.overlay_address).is_not(None),
        )
    )
    return tuple(
        sorted(
            TunnelPeer(
                peer_id=row.id,
                wireguard_public_key=row.wireguard_public_key or "",
                overlay_address=row.overlay_address or "",
                forwarder_port=row.forwarder_port,
            )
            for row in rows
        )
    )


async def edge_services(session: AsyncSession, account_id: str, cluster: str) -> list[EdgeService]:
    """The account's enabled services that the edges of ``cluster`` serve (theirs and those of
    no cluster), their targets resolved to the agents that dial them."""
    services = (
        await session.exec(
            select(ServiceRow)
            .where(
                ServiceRow.account_id == account_id,
                col(ServiceRow.enabled),
                or_(
                    col(ServiceRow.proxy_cluster).is_(None),
                    col(ServiceRow.proxy_cluster) == cluster,
                ),
            )
            .order_by(col(ServiceRow.id))
        )
    ).all()
    targets: dict[str, list[TargetRow]] = {}
    for target in await session.exec(
        select(TargetRow)
        .where(col(TargetRow.service_id).in_([s.id for s in services]))
        .order_by(col(TargetRow.position))
    ):
        targets.setdefault(target.service_id, []).append(target)
    routes = await _Routes.load(session, account_id)
    views = []
    for row in services:
        service = to_service(row, targets.get(row.id, []))
        auth = StoredAuth.model_validate(row.auth)
        views.append(
            EdgeService(
                account_id=account_id,
                service=service,
                auth=auth,
                targets=tuple(routes.resolve(t) for t in targets.get(row.id, [])),
                session_version=auth.session_version(row.id, row.auth_revision),
            )
        )
    return views


class _Routes:
    """Which agent reaches each peer or resource of an account."""

    def __init__(
        self,
        peers: Mapping[str, PeerRow],
        resources: Mapping[str, ResourceRow],
        routers: Mapping[str, Sequence[PeerRow]],
    ) -> None:
        self._peers = peers
        self._resources = resources
        self._routers = routers

    @classmethod
    async def load(cls, session: AsyncSession, account_id: str) -> "_Routes":
        peers = {
            p.id: p
            for p in await session.exec(select(PeerRow).where(PeerRow.account_id == account_id))
        }
        resources = {
            r.id: r
            for r in await session.exec(
                select(ResourceRow).where(ResourceRow.account_id == account_id)
            )
        }
        now = utcnow()
        routers: dict[str, list[PeerRow]] = {}
        for router in await session.exec(
            select(RouterRow)
            .where(RouterRow.account_id == account_id, col(RouterRow.enabled))
            .order_by(col(RouterRow.created_at), col(RouterRow.id))
        ):
            peer = peers.get(router.peer_id)
            if peer is not None and peer.overlay_address:
                routers.setdefault(router.network_id, []).append(peer)
        for candidates in routers.values():
            # a connected router first; among equals, the oldest route (the sort is stable)
            candidates.sort(key=lambda p: not is_live(p.connected, p.last_seen, now))
        return cls(peers, resources, routers)

    def resolve(self, target: TargetRow) -> RoutedTarget:
        public = to_target(target)
        if target.target_type == TargetType.PEER:
            peer = self._peers.get(target.target_id)
            address = peer.overlay_address if peer is not None else None
            return RoutedTarget(public, address or "", target.host or "")
        resource = self._resources.get(target.target_id)
        if resource is None:
            return RoutedTarget(public, "", target.host or "")
        routers = self._routers.get(resource.network_id, [])
        address = routers[0].overlay_address if routers else None
        host = target.host if resource.type == ResourceType.SUBNET else resource.address
        return RoutedTarget(public, address or "", host or "")


def _changed(row: EdgeRow, change: ChangeKind) -> EdgeChanged:
    return EdgeChanged(
        account_id=AccountId(row.account_id),
        edge_id=EdgeId(row.id),
        instance_id=row.instance_id,
        proxy_domain=row.proxy_domain,
        change=change,
        connected=row.connected,
    )
