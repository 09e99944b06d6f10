"""Peers: the use cases behind ``/api/peers``. Agents create them by logging in (``agents``).

A peer that a service targets, or that is the only enabled router of a network whose resources
services target, cannot be deleted: the 409 names those services.
"""

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_core.events import PeerChanged
from heron_core.types import AccountId, ChangeKind, PeerId
from heron_management.db.tables import PeerRow
from heron_management.db.write_lock import lock_writes
from heron_management.domain.permissions import Action
from heron_management.domain.principal import Principal
from heron_management.errors import ConflictError, NotFoundError
from heron_management.events import add_event
from heron_management.target_references import (
    refuse_if_targeted,
    services_needing_router,
    services_targeting,
)


async def list_peers(session: AsyncSession, principal: Principal) -> list[PeerRow]:
    principal.require(Action.READ_NETWORK)
    query = select(PeerRow).where(PeerRow.account_id == principal.account_id)
    return list((await session.exec(query.order_by(col(PeerRow.name), col(PeerRow.id)))).all())


async def get_peer(session: AsyncSession, principal: Principal, peer_id: str) -> PeerRow:
    principal.require(Action.READ_NETWORK)
    return await peer_in_account(session, principal.account_id, peer_id)


async def rename_peer(
    session: AsyncSession, principal: Principal, peer_id: str, *, name: str
) -> PeerRow:
    principal.require(Action.MANAGE_NETWORK)
    peer = await peer_in_account(session, principal.account_id, peer_id)
    if peer.name == name:
        return peer
    peer.name = name
    session.add(peer)
    add_event(session, _changed(peer, ChangeKind.UPDATED))
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise ConflictError(f"another peer of this account is named {name!r}") from exc
    return peer


async def delete_peer(session: AsyncSession, principal: Principal, peer_id: str) -> None:
    """Delete a peer no service needs; its routes, address and token go with it."""
    principal.require(Action.MANAGE_NETWORK)
    await lock_writes(session)  # no service may start targeting it while we check
    peer = await peer_in_account(session, principal.account_id, peer_id)
    direct = await services_targeting(session, peer.account_id, [peer.id], peers=True)
    via_routes = await services_needing_router(session, peer.account_id, peer.id)
    refuse_if_targeted(
        f"peer {peer.name!r}",
        sorted(set(direct) | set(via_routes)),
        "remove those targets (or add another routing peer to their networks) first",
    )
    add_event(session, _changed(peer, ChangeKind.DELETED))
    await session.delete(peer)
    await session.commit()


async def peer_in_account(session: AsyncSession, account_id: str, peer_id: str) -> PeerRow:
    peer = await session.get(PeerRow, peer_id)
    if peer is None or peer.account_id != account_id:
        raise NotFoundError("peer", peer_id)
    return peer


def _changed(peer: PeerRow, change: ChangeKind) -> PeerChanged:
    return PeerChanged(
        account_id=AccountId(peer.account_id), peer_id=PeerId(peer.id), change=change
    )
