"""``/api/proxy-clusters``: the account's edges grouped by proxy domain (read-only)."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from heron_management import proxy_clusters
from heron_management.api.deps import PrincipalDep, SessionDep
from heron_management.domain.clusters import Cluster

router = APIRouter(prefix="/api/proxy-clusters", tags=["proxy clusters"])

# A proxy domain is a host name or an IP address (v6 included); anything else names no cluster.
ClusterAddress = Annotated[
    str,
    Path(
        min_length=1,
        max_length=253,
        pattern=r"^[A-Za-z0-9.:-]+$",
        description="the cluster's address: its edges' proxy domain",
    ),
]


class ProxyClusterInstance(BaseModel):
    id: str = Field(description="the edge's ID in management")
    instance_id: str = Field(
        description="the name the edge gave itself (`HERON_PROXY_INSTANCE_ID`)"
    )
    connected: bool = Field(description="its config stream is open")
    last_seen: datetime | None
    version: str = Field(description="the edge's Heron version")
    supports_custom_ports: bool = Field(description="what this edge reported")


class ProxyCluster(BaseModel):
    address: str = Field(
        description="the proxy domain: services on it or its subdomains are served here"
    )
    supports_custom_ports: bool = Field(
        description="L4 services may choose their `listen_port`: some connected edge (or, while "
        "none is, some edge seen last) reports it; otherwise ports come from the auto-assign range"
    )
    connected_instances: int = Field(description="edges of the cluster connected now")
    instances: list[ProxyClusterInstance] = Field(
        description="every edge on record (dropped an hour after it was last seen)"
    )


def _cluster(cluster: Cluster) -> ProxyCluster:
    return ProxyCluster(
        address=cluster.address,
        supports_custom_ports=cluster.supports_custom_ports,
        connected_instances=cluster.connected_instances,
        instances=[
            ProxyClusterInstance(
                id=edge.edge_id,
                instance_id=edge.instance_id,
                connected=edge.connected,
                last_seen=edge.last_seen,
                version=edge.version,
                supports_custom_ports=edge.supports_custom_ports,
            )
            for edge in cluster.edges
        ],
    )


@router.get("", summary="List the edge clusters that serve this account")
async def list_proxy_clusters(session: SessionDep, principal: PrincipalDep) -> list[ProxyCluster]:
    return [_cluster(c) for c in await proxy_clusters.list_clusters(session, principal)]


@router.get("/{address}", summary="Get an edge cluster")
async def get_proxy_cluster(
    address: ClusterAddress, session: SessionDep, principal: PrincipalDep
) -> ProxyCluster:
    return _cluster(await proxy_clusters.get_cluster(session, principal, address))
