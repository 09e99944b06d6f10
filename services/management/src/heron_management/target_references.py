"""Which services target a peer, a network resource or a network: for 409s and ``service_count``.

A target names a peer directly, or a network resource that routing peers reach. Every target
counts, enabled or not: enabling it again must not find its peer or resource gone.
"""

from collections.abc import Collection
from dataclasses import dataclass

from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_core.types import TargetType
from heron_management.db.tables import ResourceRow, RouterRow, ServiceRow, TargetRow
from heron_management.errors import ConflictError

_RESOURCE_TARGETS = (TargetType.HOST, TargetType.DOMAIN, TargetType.SUBNET)


@dataclass(frozen=True, order=True)
class ServiceRef:
    name: str
    id: str


async def services_targeting(
    session: AsyncSession, account_id: str, target_ids: Collection[str], *, peers: bool
) -> list[ServiceRef]:
    """The services with a target naming one of ``target_ids`` (peers, or else resources)."""
    if not target_ids:
        return []
    types = (TargetType.PEER,) if peers else _RESOURCE_TARGETS
    rows = await session.exec(
        select(ServiceRow.name, ServiceRow.id)
        .join(TargetRow, col(TargetRow.service_id) == col(ServiceRow.id))
        .where(
            TargetRow.account_id == account_id,
            col(TargetRow.target_id).in_(target_ids),
            col(TargetRow.target_type).in_(types),
        )
        .distinct()
    )
    return sorted(ServiceRef(name=name, id=service_id) for name, service_id in rows)


async def resource_service_counts(
    session: AsyncSession, account_id: str, resource_ids: Collection[str]
) -> dict[str, int]:
    if not resource_ids:
        return {}
    usage = (
        select(TargetRow.target_id, func.count(func.distinct(TargetRow.service_id)))
        .where(
            TargetRow.account_id == account_id,
            col(TargetRow.target_id).in_(resource_ids),
            col(TargetRow.target_type).in_(_RESOURCE_TARGETS),
        )
        .group_by(col(TargetRow.target_id))
    )
    return dict((await session.exec(usage)).all())


async def services_needing_router(
    session: AsyncSession, account_id: str, peer_id: str, *, network_id: str | None = None
) -> list[ServiceRef]:
    """Services that lose their way to a resource without this peer's routing: for each network
    the peer routes (enabled) with no other enabled router, the services targeting its resources."""
    routes = select(RouterRow.network_id).where(
        RouterRow.account_id == account_id, RouterRow.peer_id == peer_id, col(RouterRow.enabled)
    )
    if network_id is not None:
        routes = routes.where(RouterRow.network_id == network_id)
    networks = set((await session.exec(routes)).all())
    if not networks:
        return []
    others = await session.exec(
        select(RouterRow.network_id).where(
            col(RouterRow.network_id).in_(networks),
            RouterRow.peer_id != peer_id,
            col(RouterRow.enabled),
        )
    )
    alone = networks - set(others.all())
    resources = await session.exec(
        select(ResourceRow.id).where(col(ResourceRow.network_id).in_(alone))
    )
    return await services_targeting(session, account_id, list(resources.all()), peers=False)


def refuse_if_targeted(what: str, refs: list[ServiceRef], remedy: str) -> None:
    """ConflictError naming every service (name and ID) when ``refs`` is not empty."""
    if refs:
        named = ", ".join(f"{ref.name!r} ({ref.id})" for ref in refs)
        noun = "service" if len(refs) == 1 else "services"
        raise ConflictError(f"{what} is used by {noun} {named}: {remedy}")
