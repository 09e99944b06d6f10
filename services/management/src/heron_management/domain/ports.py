"""Which L4 services may share a listen port: TCP and TLS share the TCP port space, UDP its own.

On one port, TLS services are told apart by SNI, and one TCP service may take what no TLS
service matches; two TCP services (or two UDP services) cannot share a port.
"""

import random
from collections.abc import Collection

from heron_core.types import ServiceMode

AUTO_PORT_RANGE = range(20000, 30000)  # ARCHITECTURE.md "Ports": the L4 auto-assigned range
#: the edge's main port: HTTP services and TLS services (by SNI)
MAIN_PORT = 443
#: ports an edge uses itself (ARCHITECTURE.md "Ports"), by transport
_EDGE_PORTS = {
    "tcp": {80: "the edge's HTTP port (ACME http-01, redirect to HTTPS)",
            443: "the edge's main port (a TLS service may use it: routed by SNI)",
            9100: "the edge's health and metrics port"},
    "udp": {51820: "the edge's WireGuard port"},
}  # fmt: skip


def transport_of(mode: ServiceMode) -> str:
    return "udp" if mode is ServiceMode.UDP else "tcp"


def reserved_port(mode: ServiceMode, port: int) -> str | None:
    """What the edge uses ``port`` for, when a service of ``mode`` may not listen on it."""
    return _EDGE_PORTS[transport_of(mode)].get(port)


def may_share_port(a: ServiceMode, b: ServiceMode) -> bool:
    if transport_of(a) != transport_of(b):
        return True
    return ServiceMode.TLS in (a, b)


def pick_free_port(taken: Collection[int], rng: random.Random | None = None) -> int | None:
    """A random free port of the auto range (random tries first, then a scan), or None if full."""
    chooser = rng or random.SystemRandom()
    for _ in range(100):
        port = chooser.choice(AUTO_PORT_RANGE)
        if port not in taken:
            return port
    return next((port for port in AUTO_PORT_RANGE if port not in taken), None)
