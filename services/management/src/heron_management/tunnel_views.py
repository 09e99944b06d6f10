"""What agents' and edges' streams show, as plain values (``grpc/convert.py`` makes protobuf).

Each view is complete and comparable: a stream recomputes it after a change and sends it only
when it differs from what it sent last.
"""

from dataclasses import dataclass
from enum import StrEnum

from heron_core.service import Service, Target
from heron_management.domain.stored_auth import StoredAuth


class ForwardProtocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True, order=True)
class AllowedTarget:
    """An address a peer's forwarder may dial for an edge."""

    host: str  # an IP or a domain name; 127.0.0.1 for the peer itself
    port: int
    protocol: ForwardProtocol


@dataclass(frozen=True, order=True)
class EdgePeer:
    """An edge as an agent's WireGuard interface sees it."""

    wireguard_public_key: str
    endpoint: str
    overlay_address: str


@dataclass(frozen=True)
class PeerConfig:
    edges: tuple[EdgePeer, ...]
    allowed_targets: tuple[AllowedTarget, ...]


@dataclass(frozen=True, order=True)
class TunnelPeer:
    """An agent as an edge's WireGuard interface sees it."""

    peer_id: str
    wireguard_public_key: str
    overlay_address: str
    forwarder_port: int  # 0: the agent's default


@dataclass(frozen=True)
class RoutedTarget:
    """A service target and where an edge reaches it: the agent's overlay address, and the
    address that agent dials (empty for a peer's own localhost)."""

    target: Target
    peer_overlay_address: str
    host: str


@dataclass(frozen=True)
class EdgeService:
    """One service as an edge serves it: the public model, the stored auth (hashes), and its
    targets resolved to overlay addresses."""

    account_id: str
    service: Service
    auth: StoredAuth
    targets: tuple[RoutedTarget, ...]
    #: ``StoredAuth.session_version`` of the service
    session_version: str = ""
