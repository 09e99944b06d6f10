"""The agent's WireGuard interface: the edges as peers, kept reachable from behind NAT.

Each edge is a WireGuard peer whose only allowed IP is its overlay address, with its public
endpoint and a persistent keepalive: the agent opens nothing, it keeps the NAT mapping to the
edge alive by sending first.
"""

import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime

from heron_agent.management import EdgePeer
from heron_agent.state import EdgeStatus
from heron_tunnel.wireguard import WireGuardInterface, WireGuardPeer

#: below the usual 30 s UDP NAT timeouts
KEEPALIVE_S = 25


class AgentTunnel:
    def __init__(
        self, interface: str, private_key: str, overlay_address: str, overlay_network: str,
        *, listen_port: int | None = None,
    ) -> None:  # fmt: skip
        network = ipaddress.IPv4Network(overlay_network)
        address = ipaddress.IPv4Interface(f"{overlay_address}/{network.prefixlen}")
        self.interface = WireGuardInterface(
            interface, private_key, listen_port=listen_port, address=address
        )
        self._edges: tuple[EdgePeer, ...] = ()

    @property
    def name(self) -> str:
        return self.interface.name

    async def up(self) -> None:
        await self.interface.up()

    async def down(self) -> None:
        await self.interface.down()

    async def set_edges(self, edges: Sequence[EdgePeer]) -> None:
        peers = [
            WireGuardPeer(
                public_key=edge.public_key,
                allowed_ips=(ipaddress.ip_network(f"{edge.overlay_address}/32"),),
                endpoint=edge.endpoint or None,
                persistent_keepalive=KEEPALIVE_S,
            )
            for edge in edges
        ]
        await self.interface.set_peers(peers)
        self._edges = tuple(edges)

    async def edge_status(self) -> tuple[EdgeStatus, ...]:
        seen = {stats.public_key: stats for stats in await self.interface.stats()}
        now = datetime.now(UTC)
        result = []
        for edge in self._edges:
            stats = seen.get(edge.public_key)
            handshake = stats.latest_handshake if stats else None
            age = (now - handshake).total_seconds() if handshake else None
            result.append(EdgeStatus(edge.public_key, edge.endpoint, edge.overlay_address, age))
        return tuple(result)
