"""Peers, networks and network resources: what service targets point at.

This slice reads them; creating peers (agent login) and resources comes with the tunnel.
"""

from dataclasses import dataclass

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_core.types import TargetType
from heron_management.db.tables import NetworkRow, PeerRow, ResourceRow, TargetRow
from heron_management.domain.permissions import Action
from heron_management.domain.principal import Principal
from heron_management.errors import NotFoundError


@dataclass(frozen=True)
class ResourceView:
    row: ResourceRow
    service_count: int


async def list_peers(session: AsyncSession, principal: Principal) -> list[PeerRow]:
    principal.require(Action.READ_NETWORK)
    query = select(PeerRow).where(PeerRow.account_id == principal.account_id)
    return list((await session.exec(query.order_by(col(PeerRow.name), col(PeerRow.id)))).all())


async def get_peer(session: AsyncSession, principal: Principal, peer_id: str) -> PeerRow:
    principal.require(Action.READ_NETWORK)
    peer = await session.get(PeerRow, peer_id)
    if peer is None or peer.account_id != principal.account_id:
        raise NotFoundError("peer", peer_id)
    return peer


async def list_networks(session: AsyncSession, principal: Principal) -> list[NetworkRow]:
    principal.require(Action.READ_NETWORK)
    query = select(NetworkRow).where(NetworkRow.account_id == principal.account_id)
    return list(
        (await session.exec(query.order_by(col(NetworkRow.name), col(NetworkRow.id)))).all()
    )


async def get_network(session: AsyncSession, principal: Principal, network_id: str) -> NetworkRow:
    principal.require(Action.READ_NETWORK)
    network = await session.get(NetworkRow, network_id)
    if network is None or network.account_id != principal.account_id:
        raise NotFoundError("network", network_id)
    return network


async def list_resources(
    session: AsyncSession, principal: Principal, network_id: str
) -> list[ResourceView]:
    network = await get_network(session, principal, network_id)
    usage = (
        select(TargetRow.target_id, func.count(func.distinct(TargetRow.service_id)))
        .where(
            TargetRow.account_id == principal.account_id, TargetRow.target_type != TargetType.PEER
        )
        .group_by(col(TargetRow.target_id))
    )
    counts = dict((await session.exec(usage)).all())
    rows = await session.exec(
        select(ResourceRow)
        .where(ResourceRow.network_id == network.id)
        .order_by(col(ResourceRow.name), col(ResourceRow.id))
    )
    return [ResourceView(row=row, service_count=counts.get(row.id, 0)) for row in rows]


async def get_resource(
    session: AsyncSession, principal: Principal, network_id: str, resource_id: str
) -> ResourceView:
    for view in await list_resources(session, principal, network_id):
        if view.row.id == resource_id:
            return view
    raise NotFoundError("resource", resource_id)
