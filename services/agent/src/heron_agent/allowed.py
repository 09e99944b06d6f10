"""The targets management lets edges ask this peer to dial; the forwarder refuses anything else.

An edge is trusted with the tunnel, not with the peer's network: a compromised or buggy edge must
not turn the agent into an open proxy. So the forwarder checks every request against the exact
(host, port, protocol) triples management derived from the account's services.
"""

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from heron_tunnel.header import Protocol
from heron_tunnel.sockets import is_canonical_ipv4


@dataclass(frozen=True, slots=True)
class AllowedTarget:
    host: str  # canonical IP text or a lower-case domain name
    port: int
    protocol: Protocol

    @classmethod
    def of(cls, host: str, port: int, protocol: Protocol) -> "AllowedTarget":
        return cls(canonical_host(host), port, protocol)


def canonical_host(host: str) -> str:
    """One spelling per host: ``::FFFF:127.0.0.1`` and ``App.Example.`` compare as they should."""
    text = host.strip().rstrip(".").lower()
    if is_canonical_ipv4(text):
        return text
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class AllowedTargets:
    """The current set; replaced whole when management sends a new config."""

    def __init__(self, targets: Iterable[AllowedTarget] = ()) -> None:
        self.replace(targets)

    def replace(self, targets: Iterable[AllowedTarget]) -> None:
        self._targets = frozenset(targets)
        #: the same as plain tuples: a host already canonical (what an edge sends) is looked
        #: up without making an ``AllowedTarget`` per stream
        self._keys = frozenset((t.host, t.port, t.protocol) for t in self._targets)

    def permits(self, host: str, port: int, protocol: Protocol) -> bool:
        if (host, port, protocol) in self._keys:
            return True
        return AllowedTarget(canonical_host(host), port, protocol) in self._targets

    def __len__(self) -> int:
        return len(self._targets)
