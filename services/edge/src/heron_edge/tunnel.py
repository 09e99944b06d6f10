"""The edge's WireGuard interface: every agent of its accounts as a peer, endpoint learned.

Agents sit behind NAT and open nothing; they dial the edge's public WireGuard port and keep the
path open with keepalives. So an agent peer here has no endpoint (WireGuard learns it from the
agent's handshake) and one allowed IP, its overlay address.

An edge that restarts has lost its sessions, but the agents have not: they keep sending
keepalives on a session the new edge cannot decrypt, and a keepalive never makes WireGuard
start a new handshake — the tunnel would stay dark until the agent's session ages out (two
minutes). So the edge remembers the endpoints it learned (``endpoints.json`` next to its key)
and, after a restart, gives each agent its last endpoint once, with a persistent keepalive:
the edge's own first keepalive starts the handshake, and the tunnel is back in about a second.
Later changes leave endpoints to roaming.
"""

import contextlib
import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from heron_tunnel.wireguard import PeerStats, WireGuardInterface, WireGuardPeer, split_endpoint

log = structlog.get_logger(__name__)

#: seconds between the edge's own keepalives to each agent (an agent sends them too)
EDGE_KEEPALIVE_S = 25


@dataclass(frozen=True)
class AgentPeer:
    peer_id: str
    public_key: str
    overlay_address: str
    forwarder_port: int  # 0: the default


class EdgeTunnel:
    def __init__(
        self,
        name: str,
        private_key: str,
        listen_port: int,
        endpoints_file: Path | None = None,
    ) -> None:
        self._name = name
        self._private_key = private_key
        self._listen_port = listen_port
        self.interface: WireGuardInterface | None = None
        self._peers: tuple[AgentPeer, ...] = ()
        self._endpoints_file = endpoints_file
        self._endpoints = _load_endpoints(endpoints_file)
        self._seeded: set[str] = set()  # keys given their remembered endpoint on this interface

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
        self._seeded = set()
        await self.interface.up()
        if self._peers:
            await self.set_peers(self._peers)

    async def set_peers(self, peers: Sequence[AgentPeer]) -> None:
        self._peers = tuple(peers)
        if self.interface is None:
            return  # applied once the interface is up
        wanted = []
        for peer in peers:
            endpoint = None
            if peer.public_key not in self._seeded:
                endpoint = self._endpoints.get(peer.public_key)
                self._seeded.add(peer.public_key)
            wanted.append(
                WireGuardPeer(
                    public_key=peer.public_key,
                    allowed_ips=(ipaddress.ip_network(f"{peer.overlay_address}/32"),),
                    endpoint=endpoint,
                    persistent_keepalive=EDGE_KEEPALIVE_S,
                )
            )
        await self.interface.set_peers(wanted)

    def remember_endpoints(self, stats: Sequence[PeerStats]) -> None:
        """Keep the endpoints the interface learned, for the next start (written on change)."""
        learned = {s.public_key: s.endpoint for s in stats if s.endpoint is not None}
        merged = {**self._endpoints, **learned}
        known = {peer.public_key for peer in self._peers}
        merged = {key: endpoint for key, endpoint in merged.items() if key in known}
        if merged == self._endpoints or self._endpoints_file is None:
            return
        self._endpoints = merged
        temporary = self._endpoints_file.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(merged, sort_keys=True))
            temporary.replace(self._endpoints_file)
        except OSError as exc:
            log.warning("cannot remember the agents' endpoints", error=str(exc))

    async def down(self) -> None:
        if self.interface is not None:
            await self.interface.down()
            self.interface = None


def _load_endpoints(path: Path | None) -> dict[str, str]:
    """The endpoints remembered by the last run; nothing (and a log line) if unreadable."""
    if path is None or not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("ignoring the remembered endpoints", path=str(path), error=str(exc))
        return {}
    endpoints = {}
    if isinstance(raw, dict):
        for key, endpoint in raw.items():
            with contextlib.suppress(TypeError, ValueError):
                split_endpoint(endpoint)
                endpoints[str(key)] = endpoint
    return endpoints
