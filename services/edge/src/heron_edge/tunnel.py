"""The edge's WireGuard interface: every agent of its accounts as a peer, endpoint learned.

Agents sit behind NAT and open nothing; they dial the edge's public WireGuard port and keep the
path open with keepalives. So an agent peer here has no endpoint (WireGuard learns it from the
agent's handshake) and one allowed IP, its overlay address.
"""

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from heron_tunnel.wireguard import WireGuardInterface, WireGuardPeer

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class AgentPeer:
    peer_id: str
    public_key: str
    overlay_address: str
    forwarder_port: int  # 0: the default


class EdgeTunnel:
    def __init__(self, name: str, private_key: str, listen_port: int) -> None:
        self._name = name
        self._private_key = private_key
        self._listen_port = listen_port
        self.interface: WireGuardInterface | None = None
        self._peers: tuple[AgentPeer, ...] = ()

    @property
    def peers(self) -> tuple[AgentPeer, ...]:
        return self._peers

    async def ensure_up(self, overlay_address: str, overlay_network: str) -> None:
        """Bring the interface up on ``overlay_address``; again if the address changed."""
        network = ipaddress.IPv4Network(overlay_network)
        address = ipaddress.IPv4Interface(f"{overlay_address}/{network.prefixlen}")
        if self.interface is not None and self.interface.address == address:
            return
        if self.interface is not None:
            log.warning("overlay address changed, recreating the interface", address=str(address))
            await self.interface.down()
        self.interface = WireGuardInterface(
            self._name, self._private_key, listen_port=self._listen_port, address=address
        )
        await self.interface.up()
        if self._peers:
            await self.set_peers(self._peers)

    async def set_peers(self, peers: Sequence[AgentPeer]) -> None:
        self._peers = tuple(peers)
        if self.interface is None:
            return  # applied once the interface is up
        await self.interface.set_peers(
            [
                WireGuardPeer(
                    public_key=peer.public_key,
                    allowed_ips=(ipaddress.ip_network(f"{peer.overlay_address}/32"),),
                )
                for peer in peers
            ]
        )

    async def down(self) -> None:
        if self.interface is not None:
            await self.interface.down()
            self.interface = None
