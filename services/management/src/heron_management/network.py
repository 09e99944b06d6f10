"""Networks, their resources and their routing peers: the use cases behind ``/api/networks``.

A resource is what a service target names (host, domain or subnet); a router is a peer of the
account whose agent dials the network's resources for the edges. Deleting what a service still
needs (a targeted resource, a network holding one, its last enabled router) is refused with a
409 that names the services. Changes take the write lock services take (``db.write_lock``), so
a check that nothing targets an object holds until it is gone. Every change publishes
``NetworkChanged``.
"""

from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_core.events import NetworkChanged
from heron_core.ids import new_id
from heron_core.types import AccountId, ChangeKind, NetworkId, ResourceType, TargetType
from heron_management.db.tables import NetworkRow, PeerRow, ResourceRow, RouterRow, TargetRow
from heron_management.db.write_lock import lock_writes
from heron_management.domain.permissions import Action
from heron_management.domain.principal import Principal
from heron_management.domain.resources import subnet_holds
from heron_management.errors import ConflictError, FieldProblem, InvalidRequestError, NotFoundError
from heron_management.events import add_event
from heron_management.target_references import (
    refuse_if_targeted,
    resource_service_counts,
    services_needing_router,
    services_targeting,
)


@dataclass(frozen=True)
class NetworkView:
    row: NetworkRow
    resource_ids: list[str]
    router_ids: list[str]
    routing_peers_count: int  # enabled routers


@dataclass(frozen=True)
class ResourceView:
    row: ResourceRow
    service_count: int


@dataclass(frozen=True)
class ResourceSpec:
    name: str
    description: str
    type: ResourceType
    address: str  # already normalized for its type


# networks


async def list_networks(session: AsyncSession, principal: Principal) -> list[NetworkView]:
    principal.require(Action.READ_NETWORK)
    query = select(NetworkRow).where(NetworkRow.account_id == principal.account_id)
    rows = (await session.exec(query.order_by(col(NetworkRow.name), col(NetworkRow.id)))).all()
    return await _network_views(session, list(rows))


async def get_network(session: AsyncSession, principal: Principal, network_id: str) -> NetworkView:
    network = await _network(session, principal, network_id)
    return (await _network_views(session, [network]))[0]


async def create_network(
    session: AsyncSession, principal: Principal, *, name: str, description: str
) -> NetworkView:
    principal.require(Action.MANAGE_NETWORK)
    row = NetworkRow(
        id=new_id("net"), account_id=principal.account_id, name=name, description=description
    )
    session.add(row)
    add_event(session, _changed(row.account_id, row.id, ChangeKind.CREATED))
    await session.commit()
    return NetworkView(row=row, resource_ids=[], router_ids=[], routing_peers_count=0)


async def update_network(
    session: AsyncSession, principal: Principal, network_id: str, *, name: str, description: str
) -> NetworkView:
    principal.require(Action.MANAGE_NETWORK)
    row = await _network(session, principal, network_id)
    row.name, row.description = name, description
    session.add(row)
    add_event(session, _changed(row.account_id, row.id, ChangeKind.UPDATED))
    await session.commit()
    return (await _network_views(session, [row]))[0]


async def delete_network(session: AsyncSession, principal: Principal, network_id: str) -> None:
    """Delete a network whose resources no service targets, with its resources and routers."""
    principal.require(Action.MANAGE_NETWORK)
    await lock_writes(session)
    row = await _network(session, principal, network_id)
    resources = await session.exec(select(ResourceRow.id).where(ResourceRow.network_id == row.id))
    refs = await services_targeting(session, row.account_id, list(resources.all()), peers=False)
    refuse_if_targeted(
        f"network {row.name!r}", refs, "remove the targets that name its resources first"
    )
    add_event(session, _changed(row.account_id, row.id, ChangeKind.DELETED))
    await session.delete(row)
    await session.commit()


# resources


async def list_resources(
    session: AsyncSession, principal: Principal, network_id: str
) -> list[ResourceView]:
    network = await _network(session, principal, network_id)
    rows = list(
        (
            await session.exec(
                select(ResourceRow)
                .where(ResourceRow.network_id == network.id)
                .order_by(col(ResourceRow.name), col(ResourceRow.id))
            )
        ).all()
    )
    return await _resource_views(session, principal.account_id, rows)


async def get_resource(
    session: AsyncSession, principal: Principal, network_id: str, resource_id: str
) -> ResourceView:
    row = await _resource(session, principal, network_id, resource_id)
    return (await _resource_views(session, principal.account_id, [row]))[0]


async def create_resource(
    session: AsyncSession, principal: Principal, network_id: str, spec: ResourceSpec
) -> ResourceView:
    principal.require(Action.MANAGE_NETWORK)
    network = await _network(session, principal, network_id)
    row = ResourceRow(
        id=new_id("res"),
        account_id=network.account_id,
        network_id=network.id,
        name=spec.name,
        description=spec.description,
        type=spec.type,
        address=spec.address,
    )
    session.add(row)
    add_event(session, _changed(row.account_id, network.id, ChangeKind.UPDATED))
    await session.commit()
    return ResourceView(row=row, service_count=0)


async def update_resource(
    session: AsyncSession,
    principal: Principal,
    network_id: str,
    resource_id: str,
    spec: ResourceSpec,
) -> ResourceView:
    """Change a resource; its targets must still fit (same type, subnet hosts inside it)."""
    principal.require(Action.MANAGE_NETWORK)
    await lock_writes(session)
    row = await _resource(session, principal, network_id, resource_id)
    if spec.type != row.type or spec.address != row.address:
        await _check_targets_still_fit(session, row, spec)
    row.name, row.description = spec.name, spec.description
    row.type, row.address = spec.type, spec.address
    session.add(row)
    add_event(session, _changed(row.account_id, row.network_id, ChangeKind.UPDATED))
    await session.commit()
    return (await _resource_views(session, principal.account_id, [row]))[0]


async def delete_resource(
    session: AsyncSession, principal: Principal, network_id: str, resource_id: str
) -> None:
    principal.require(Action.MANAGE_NETWORK)
    await lock_writes(session)
    row = await _resource(session, principal, network_id, resource_id)
    refs = await services_targeting(session, row.account_id, [row.id], peers=False)
    refuse_if_targeted(f"resource {row.name!r}", refs, "remove the targets that name it first")
    add_event(session, _changed(row.account_id, row.network_id, ChangeKind.UPDATED))
    await session.delete(row)
    await session.commit()


async def _check_targets_still_fit(
    session: AsyncSession, row: ResourceRow, spec: ResourceSpec
) -> None:
    if spec.type != row.type:
        refs = await services_targeting(session, row.account_id, [row.id], peers=False)
        refuse_if_targeted(
            f"resource {row.name!r}",
            refs,
            f"their targets are of type {row.type!r}; remove them before changing the type",
        )
    if spec.type is ResourceType.SUBNET:
        targets = await session.exec(
            select(TargetRow).where(
                TargetRow.account_id == row.account_id,
                TargetRow.target_id == row.id,
                TargetRow.target_type == TargetType.SUBNET,
            )
        )
        outside = {t.service_id for t in targets if not subnet_holds(spec.address, t.host)}
        refs = await services_targeting(session, row.account_id, [row.id], peers=False)
        refuse_if_targeted(
            f"subnet {spec.address!r}",
            [ref for ref in refs if ref.id in outside],
            "their target hosts would fall outside it; change those targets first",
        )


# routers


async def list_routers(
    session: AsyncSession, principal: Principal, network_id: str
) -> list[RouterRow]:
    network = await _network(session, principal, network_id)
    query = select(RouterRow).where(RouterRow.network_id == network.id)
    return list(
        (await session.exec(query.order_by(col(RouterRow.created_at), col(RouterRow.id)))).all()
    )


async def get_router(
    session: AsyncSession, principal: Principal, network_id: str, router_id: str
) -> RouterRow:
    return await _router(session, principal, network_id, router_id)


async def create_router(
    session: AsyncSession, principal: Principal, network_id: str, *, peer_id: str, enabled: bool
) -> RouterRow:
    principal.require(Action.MANAGE_NETWORK)
    await lock_writes(session)
    network = await _network(session, principal, network_id)
    await _check_peer(session, network.account_id, peer_id)
    row = RouterRow(
        id=new_id("rtr"),
        account_id=network.account_id,
        network_id=network.id,
        peer_id=peer_id,
        enabled=enabled,
    )
    session.add(row)
    return await _commit_router(session, row, ChangeKind.UPDATED)


async def update_router(
    session: AsyncSession,
    principal: Principal,
    network_id: str,
    router_id: str,
    *,
    peer_id: str,
    enabled: bool,
) -> RouterRow:
    principal.require(Action.MANAGE_NETWORK)
    await lock_writes(session)
    row = await _router(session, principal, network_id, router_id)
    if peer_id != row.peer_id:
        await _check_peer(session, row.account_id, peer_id)
    if row.enabled and not enabled:
        await _refuse_if_last_router(session, row)
    row.peer_id, row.enabled = peer_id, enabled
    session.add(row)
    return await _commit_router(session, row, ChangeKind.UPDATED)


async def delete_router(
    session: AsyncSession, principal: Principal, network_id: str, router_id: str
) -> None:
    principal.require(Action.MANAGE_NETWORK)
    await lock_writes(session)
    row = await _router(session, principal, network_id, router_id)
    await _refuse_if_last_router(session, row)
    add_event(session, _changed(row.account_id, row.network_id, ChangeKind.UPDATED))
    await session.delete(row)
    await session.commit()


async def _refuse_if_last_router(session: AsyncSession, row: RouterRow) -> None:
    refs = await services_needing_router(
        session, row.account_id, row.peer_id, network_id=row.network_id
    )
    refuse_if_targeted(
        f"router {row.id!r}, the network's only enabled routing peer,",
        refs,
        "add another routing peer first, or remove those targets",
    )


async def _commit_router(session: AsyncSession, row: RouterRow, change: ChangeKind) -> RouterRow:
    add_event(session, _changed(row.account_id, row.network_id, change))
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise ConflictError(f"peer {row.peer_id!r} already routes this network") from exc
    return row


async def _check_peer(session: AsyncSession, account_id: str, peer_id: str) -> None:
    peer = await session.get(PeerRow, peer_id)
    if peer is None or peer.account_id != account_id:
        raise InvalidRequestError(
            [FieldProblem(("peer_id",), f"no peer {peer_id!r} in this account")]
        )


# lookups and views


async def _network(session: AsyncSession, principal: Principal, network_id: str) -> NetworkRow:
    principal.require(Action.READ_NETWORK)
    row = await session.get(NetworkRow, network_id)
    if row is None or row.account_id != principal.account_id:
        raise NotFoundError("network", network_id)
    return row


async def _resource(
    session: AsyncSession, principal: Principal, network_id: str, resource_id: str
) -> ResourceRow:
    network = await _network(session, principal, network_id)
    row = await session.get(ResourceRow, resource_id)
    if row is None or row.network_id != network.id:
        raise NotFoundError("resource", resource_id)
    return row


async def _router(
    session: AsyncSession, principal: Principal, network_id: str, router_id: str
) -> RouterRow:
    network = await _network(session, principal, network_id)
    row = await session.get(RouterRow, router_id)
    if row is None or row.network_id != network.id:
        raise NotFoundError("router", router_id)
    return row


async def _network_views(session: AsyncSession, rows: list[NetworkRow]) -> list[NetworkView]:
    ids = [row.id for row in rows]
    resources: dict[str, list[str]] = {}
    for network_id, resource_id in await session.exec(
        select(ResourceRow.network_id, ResourceRow.id)
        .where(col(ResourceRow.network_id).in_(ids))
        .order_by(col(ResourceRow.name), col(ResourceRow.id))
    ):
        resources.setdefault(network_id, []).append(resource_id)
    routers: dict[str, list[RouterRow]] = {}
    for router in await session.exec(
        select(RouterRow)
        .where(col(RouterRow.network_id).in_(ids))
        .order_by(col(RouterRow.created_at), col(RouterRow.id))
    ):
        routers.setdefault(router.network_id, []).append(router)
    return [
        NetworkView(
            row=row,
            resource_ids=resources.get(row.id, []),
            router_ids=[r.id for r in routers.get(row.id, [])],
            routing_peers_count=sum(1 for r in routers.get(row.id, []) if r.enabled),
        )
        for row in rows
    ]


async def _resource_views(
    session: AsyncSession, account_id: str, rows: list[ResourceRow]
) -> list[ResourceView]:
    counts = await resource_service_counts(session, account_id, [row.id for row in rows])
    return [ResourceView(row=row, service_count=counts.get(row.id, 0)) for row in rows]


def _changed(account_id: str, network_id: str, change: ChangeKind) -> NetworkChanged:
    return NetworkChanged(
        account_id=AccountId(account_id), network_id=NetworkId(network_id), change=change
    )
