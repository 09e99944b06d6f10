"""Proxy clusters: the use cases behind ``/api/proxy-clusters``, and an account's clusters
(which ``placement`` places services in, and ``/api/domains`` lists as cluster domains).

An edge serves the account of the proxy token it presents, so a cluster is always one account's:
the edges of that account with the same proxy domain (rules in ``domain.clusters``). Nobody sees
another account's edges; an address only another account uses answers 404, as if unknown.
"""

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_management.db.columns import utcnow
from heron_management.db.tables import EdgeRow
from heron_management.domain.clusters import Cluster, ClusterEdge, group_clusters
from heron_management.domain.permissions import Action
from heron_management.domain.presence import is_live
from heron_management.domain.principal import Principal
from heron_management.errors import NotFoundError


async def list_clusters(session: AsyncSession, principal: Principal) -> list[Cluster]:
    principal.require(Action.READ_SERVICES)
    return await account_clusters(session, principal.account_id)


async def get_cluster(session: AsyncSession, principal: Principal, address: str) -> Cluster:
    principal.require(Action.READ_SERVICES)
    wanted = address.strip().lower().removesuffix(".")
    for cluster in await account_clusters(session, principal.account_id):
        if cluster.address == wanted:
            return cluster
    raise NotFoundError("proxy cluster", address)


async def account_clusters(session: AsyncSession, account_id: str) -> list[Cluster]:
    """The account's clusters, from every edge on record (edges unseen for an hour are dropped)."""
    now = utcnow()
    rows = await session.exec(select(EdgeRow).where(EdgeRow.account_id == account_id))
    return group_clusters(
        ClusterEdge(
            edge_id=row.id,
            instance_id=row.instance_id,
            address=row.proxy_domain,
            version=row.version,
            connected=is_live(row.connected, row.last_seen, now),
            last_seen=row.last_seen,
            supports_custom_ports=bool(row.capabilities.get("supports_custom_ports", False)),
        )
        for row in rows
    )
