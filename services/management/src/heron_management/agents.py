"""Agents: logging a peer in, its sync stream's bookkeeping, and what its config holds.

A login with a setup key registers a new peer for a WireGuard key management does not know (one
count of the key, a unique name from the host name, a free overlay address), or resumes the peer
of a key it knows in the setup key's account, without taking a count. A login without a setup
key presents the peer token of the last login. Every login issues a new peer token (stored as
its SHA-256), which replaces the previous one at once.

Races (two logins taking the same address or name, or registering the same key) end in a
constraint error on commit; the whole login then runs again and sees the winner's rows.
"""

import random
import secrets
from dataclasses import dataclass

import structlog
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_core.events import PeerChanged
from heron_core.ids import new_id
from heron_core.types import AccountId, ChangeKind, PeerId, ResourceType, ServiceMode, TargetType
from heron_management.db.columns import utcnow
from heron_management.db.tables import (
    EdgeRow,
    OverlayAddressRow,
    PeerRow,
    ResourceRow,
    RouterRow,
    ServiceRow,
    SetupKeyRow,
    TargetRow,
)
from heron_management.domain.api_tokens import PEER_TOKEN_PREFIX, generate_token, token_hash
from heron_management.domain.overlay import check_wireguard_key
from heron_management.domain.peer_names import base_name, unique_name
from heron_management.domain.setup_keys import REFUSAL_REASONS, admits_relogin
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
from heron_management.overlay import assign_peer_address
from heron_management.setup_keys import find_by_secret, state_of, take_one_use
from heron_management.tunnel_views import AllowedTarget, EdgePeer, ForwardProtocol, PeerConfig

log = structlog.get_logger(__name__)

LOGIN_ATTEMPTS = 8  # each lost race re-runs the login; more than a few means heavy contention
LOCALHOST = "127.0.0.1"
MAX_VERSION_CHARS = 64


@dataclass(frozen=True)
class LoginRequest:
    wireguard_public_key: str
    hostname: str
    version: str
    setup_key: str = ""
    peer_token: str | None = None  # from the call's metadata, for a login without setup key


@dataclass(frozen=True)
class LoginResult:
    peer_id: str
    overlay_address: str
    peer_token: str
    created: bool


@dataclass(frozen=True)
class AgentHello:
    version: str
    forwarder_port: int  # 0: the agent's default


async def login(
    sessions: async_sessionmaker[AsyncSession], request: LoginRequest, rng: random.Random
) -> LoginResult:
    try:
        check_wireguard_key(request.wireguard_public_key)
    except ValueError as exc:
        raise InvalidRequestError([FieldProblem(("wireguard_public_key",), str(exc))]) from None
    for attempt in range(LOGIN_ATTEMPTS):
        async with sessions() as session:
            try:
                return await _login_once(session, request, attempt, rng)
            except IntegrityError as exc:
                await session.rollback()  # lost a race: look again
                log.debug("login raced another change, again", attempt=attempt, error=str(exc.orig))
    raise UnavailableError("too many logins raced for the same names or addresses: try again")


async def _login_once(
    session: AsyncSession, request: LoginRequest, attempt: int, rng: random.Random
) -> LoginResult:
    key = request.wireguard_public_key
    if not request.setup_key:
        return await _resume(session, await _peer_by_token(session, request), request)
    setup = await find_by_secret(session, request.setup_key)
    if setup is None:
        raise AuthenticationError("the setup key is not valid (unknown, or deleted)")
    now = utcnow()
    state = state_of(setup, now)
    known = (await session.exec(select(PeerRow).where(PeerRow.wireguard_public_key == key))).first()
    if known is not None:
        if known.account_id != setup.account_id:
            raise ConflictError(
                f"WireGuard key {key[:8]!r}… belongs to a peer of another account: generate a new key"
            )
        if not admits_relogin(state, made_this_peer=known.setup_key_id == setup.id):
            raise AuthenticationError(f"{REFUSAL_REASONS[state]} ({setup.name!r})")
        return await _resume(session, known, request)
    if state in REFUSAL_REASONS:
        raise AuthenticationError(f"{REFUSAL_REASONS[state]} ({setup.name!r})")
    await _refuse_edge_key(session, key)
    if not await take_one_use(session, setup.id, now):
        # another login took its last use (or it was revoked) since we read it
        await session.refresh(setup)
        reason = REFUSAL_REASONS.get(state_of(setup), "the setup key is no longer valid")
        raise AuthenticationError(f"{reason} ({setup.name!r})")
    return await _register(session, setup, request, attempt, rng)


async def _peer_by_token(session: AsyncSession, request: LoginRequest) -> PeerRow:
    if not request.peer_token:
        raise AuthenticationError(
            "log in with a setup key, or send the peer token as 'authorization: Bearer <token>'"
        )
    peer = await authenticate_peer(session, request.peer_token)
    if peer.wireguard_public_key != request.wireguard_public_key:
        raise AuthenticationError(
            f"the peer token belongs to peer {peer.id!r}, registered with another WireGuard key"
        )
    return peer


async def _resume(session: AsyncSession, peer: PeerRow, request: LoginRequest) -> LoginResult:
    if peer.overlay_address is None:  # only logins make peers with keys, and they give addresses
        raise ConflictError(f"peer {peer.id!r} has no overlay address: delete it and log in anew")
    token = generate_token(PEER_TOKEN_PREFIX)
    peer.peer_token_hash = token_hash(token)
    peer.hostname = request.hostname[:255] or peer.hostname
    peer.version = request.version[:MAX_VERSION_CHARS] or peer.version
    session.add(peer)
    add_event(session, _changed(peer, ChangeKind.UPDATED))
    await session.commit()
    return LoginResult(
        peer_id=peer.id, overlay_address=peer.overlay_address, peer_token=token, created=False
    )


async def _register(
    session: AsyncSession,
    setup: SetupKeyRow,
    request: LoginRequest,
    attempt: int,
    rng: random.Random,
) -> LoginResult:
    base = base_name(request.hostname)
    taken = set(
        (
            await session.exec(
                select(PeerRow.name).where(
                    PeerRow.account_id == setup.account_id, col(PeerRow.name).startswith(base)
                )
            )
        ).all()
    )
    token = generate_token(PEER_TOKEN_PREFIX)
    peer = PeerRow(
        id=new_id("peer"),
        account_id=setup.account_id,
        name=unique_name(base, taken, attempt=attempt),
        hostname=request.hostname[:255],
        wireguard_public_key=request.wireguard_public_key,
        peer_token_hash=token_hash(token),
        setup_key_id=setup.id,
        version=request.version[:MAX_VERSION_CHARS] or None,
    )
    session.add(peer)
    await session.flush()
    address = await assign_peer_address(session, peer, rng)
    add_event(session, _changed(peer, ChangeKind.CREATED))
    await session.commit()
    return LoginResult(peer_id=peer.id, overlay_address=address, peer_token=token, created=True)


async def _refuse_edge_key(session: AsyncSession, key: str) -> None:
    held = await session.exec(
        select(OverlayAddressRow.address).where(OverlayAddressRow.edge_public_key == key)
    )
    if held.first() is not None:
        raise ConflictError(f"WireGuard key {key[:8]!r}… belongs to an edge: generate a new key")


# the sync stream


async def authenticate_peer(session: AsyncSession, token: str) -> PeerRow:
    peer = (
        await session.exec(select(PeerRow).where(PeerRow.peer_token_hash == token_hash(token)))
    ).first()
    if peer is None:
        raise AuthenticationError(
            "the peer token is not valid: the peer logged in again since, or was deleted"
        )
    return peer


async def open_stream(session: AsyncSession, peer: PeerRow, hello: AgentHello) -> str:
    """Mark ``peer`` connected through a new stream; returns the stream's session id."""
    stream_session = secrets.token_hex(8)
    peer.connected, peer.last_seen, peer.stream_session = True, utcnow(), stream_session
    peer.forwarder_port = hello.forwarder_port
    peer.version = hello.version[:MAX_VERSION_CHARS] or peer.version
    session.add(peer)
    # edges' tunnel peers carry the forwarder port; an older stream of this peer learns it lost
    add_event(session, _changed(peer, ChangeKind.UPDATED))
    await session.commit()
    return stream_session


async def stream_problem(
    session: AsyncSession, peer_id: str, token_digest: str, stream_session: str
) -> ManagementError | None:
    """Why a peer's stream must end (deleted, logged in again, replaced), or None."""
    peer = await session.get(PeerRow, peer_id, populate_existing=True)
    if peer is None:
        return AuthenticationError("the peer was deleted")
    if peer.peer_token_hash != token_digest:
        return AuthenticationError("the peer logged in again: this stream's token was replaced")
    if peer.stream_session != stream_session:
        return SupersededError("a newer sync stream of this peer replaced this one")
    return None


async def touch_stream(session: AsyncSession, peer_id: str, stream_session: str) -> None:
    await session.exec(
        update(PeerRow)
        .where(col(PeerRow.id) == peer_id, col(PeerRow.stream_session) == stream_session)
        .values(last_seen=utcnow(), connected=True)
    )
    await session.commit()


async def close_stream(session: AsyncSession, peer_id: str, stream_session: str) -> None:
    peer = await session.get(PeerRow, peer_id, populate_existing=True)
    if peer is None or peer.stream_session != stream_session:
        return  # deleted, or a newer stream owns the state now
    peer.connected, peer.last_seen = False, utcnow()
    session.add(peer)
    add_event(session, _changed(peer, ChangeKind.UPDATED))
    await session.commit()


# what the agent's config holds


async def peer_config(session: AsyncSession, peer: PeerRow) -> PeerConfig:
    return PeerConfig(
        edges=await account_edges(session, peer.account_id),
        allowed_targets=await allowed_targets(session, peer),
    )


async def account_edges(session: AsyncSession, account_id: str) -> tuple[EdgePeer, ...]:
    """The account's edges (one per WireGuard key, as last registered), connected or not: a
    moment without management must not tear down the tunnels."""
    rows = await session.exec(
        select(EdgeRow)
        .where(EdgeRow.account_id == account_id)
        .order_by(col(EdgeRow.last_seen), col(EdgeRow.created_at))
    )
    latest = {row.wireguard_public_key: row for row in rows}  # the last one seen wins
    return tuple(
        sorted(
            EdgePeer(key, row.wireguard_endpoint, row.overlay_address)
            for key, row in latest.items()
        )
    )


async def allowed_targets(session: AsyncSession, peer: PeerRow) -> tuple[AllowedTarget, ...]:
    """Every enabled target of the account's enabled services that this peer dials: the ones
    naming it, and the ones naming resources of networks it routes (enabled router)."""
    routed = {
        row.id: row
        for row in await session.exec(
            select(ResourceRow)
            .join(RouterRow, col(RouterRow.network_id) == col(ResourceRow.network_id))
            .where(RouterRow.peer_id == peer.id, col(RouterRow.enabled))
        )
    }
    rows = await session.exec(
        select(TargetRow, ServiceRow.mode)
        .join(ServiceRow, col(ServiceRow.id) == col(TargetRow.service_id))
        .where(
            TargetRow.account_id == peer.account_id,
            col(TargetRow.enabled),
            col(ServiceRow.enabled),
            col(TargetRow.target_id).in_([peer.id, *routed]),
        )
    )
    found = set()
    for target, mode in rows:
        host = _dialed_host(target, peer.id, routed)
        if host is not None:
            protocol = ForwardProtocol.UDP if mode == ServiceMode.UDP else ForwardProtocol.TCP
            found.add(AllowedTarget(host=host, port=target.port, protocol=protocol))
    return tuple(sorted(found))


def _dialed_host(target: TargetRow, peer_id: str, routed: dict[str, ResourceRow]) -> str | None:
    if target.target_type == TargetType.PEER:
        return (target.host or LOCALHOST) if target.target_id == peer_id else None
    resource = routed.get(target.target_id)
    if resource is None:
        return None
    if resource.type == ResourceType.SUBNET:
        return target.host  # the address inside the subnet
    return resource.address  # HOST: the IP; DOMAIN: the name


def _changed(peer: PeerRow, change: ChangeKind) -> PeerChanged:
    return PeerChanged(
        account_id=AccountId(peer.account_id), peer_id=PeerId(peer.id), change=change
    )
