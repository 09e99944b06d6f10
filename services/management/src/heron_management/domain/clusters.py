"""Edge clusters: the edges of an account grouped by proxy domain, and what a cluster can do.

An edge's ``Hello`` names its cluster address (``proxy_domain``). A service belongs to the cluster
whose address is its domain or a parent of it — the longest such address when clusters nest
(``a.example.com`` under ``example.com``) — and only that cluster's edges serve it.

A cluster has a capability when any edge that counts reports it (the contract in
``proto/heron/v1/proxy.proto``, ``EdgeCapabilities``; NetBird decides the same way). The edges
that count are the connected ones; while none is connected, the ones seen last, so a cluster's
answer does not flip while its edges restart. An edge that reported no capabilities (an older
edge) supports none of them: as in NetBird, its cluster does not support custom ports.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class ClusterEdge:
    """One edge instance as its cluster shows it."""

    edge_id: str
    instance_id: str
    address: str  # the cluster's: the edge's proxy domain
    version: str
    connected: bool
    last_seen: datetime | None
    supports_custom_ports: bool


@dataclass(frozen=True)
class Cluster:
    """The edges of one account that share a proxy domain. ``edges`` may be empty: a service
    remembers its cluster after the cluster's edges were forgotten."""

    address: str
    edges: tuple[ClusterEdge, ...] = ()

    @property
    def connected_instances(self) -> int:
        return sum(1 for edge in self.edges if edge.connected)

    @property
    def known(self) -> bool:
        """Whether any edge of it is on record (connected lately or within the last hour)."""
        return bool(self.edges)

    @property
    def supports_custom_ports(self) -> bool:
        counted = [edge for edge in self.edges if edge.connected] or self.edges
        return any(edge.supports_custom_ports for edge in counted)


def group_clusters(edges: Iterable[ClusterEdge]) -> list[Cluster]:
    """Clusters by address, each with its edges by instance ID."""
    grouped: dict[str, list[ClusterEdge]] = {}
    for edge in edges:
        grouped.setdefault(edge.address, []).append(edge)
    return [
        Cluster(address, tuple(sorted(members, key=lambda e: (e.instance_id, e.edge_id))))
        for address, members in sorted(grouped.items())
    ]


def cluster_of(domain: str, addresses: Iterable[str]) -> str | None:
    """The address of the cluster that serves ``domain``, or None when none of ``addresses`` is
    the domain or a parent of it."""
    matches = [a for a in addresses if domain == a or domain.endswith(f".{a}")]
    return max(matches, key=len, default=None)
