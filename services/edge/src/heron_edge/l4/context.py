"""What every L4 listener of one process shares: limits, the balancer, the live relays."""

import asyncio
import contextlib
import socket
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol

from heron_core.logging import LineLogger
from heron_edge.l4.balancer import Balancer
from heron_edge.routes import RouteTarget


@dataclass(frozen=True, slots=True)
class L4Limits:
    #: concurrent TCP/TLS connections on one port; more are refused
    max_connections_per_port: int = 4096
    #: a TCP connection that moves no byte either way this long is closed (the service's
    #: ``session_idle_timeout`` overrides it)
    tcp_idle_timeout_s: float = 300.0
    #: caps every service's ``session_idle_timeout``; None: no cap
    max_idle_timeout_s: float | None = None
    #: opening the tunnel stream and the agent dialling the target, when the target sets no
    #: ``request_timeout`` (which is capped by it)
    dial_timeout_s: float = 30.0
    #: a custom port with TLS services waits this long for a ClientHello before it gives the
    #: connection to the port's TCP service (protocols where the server speaks first)
    peek_timeout_s: float = 5.0
    #: connections and sessions of a removed service may finish within this, then are cut
    drain_s: float = 30.0
    #: a UDP session with no datagram either way this long is closed (``session_idle_timeout``)
    udp_session_idle_s: float = 30.0
    udp_max_sessions_per_service: int = 1024
    udp_max_sessions: int = 16384
    #: new UDP sessions per second and port (token bucket), and the burst allowed
    udp_new_sessions_per_s: float = 50.0
    udp_new_sessions_burst: int = 100
    #: datagrams held per session while its tunnel stream opens; later ones are dropped
    udp_pending_datagrams: int = 64

    def dial_timeout(self, target: RouteTarget) -> float:
        wanted = target.options.request_timeout_s
        return min(wanted, self.dial_timeout_s) if wanted else self.dial_timeout_s

    def tcp_idle_timeout(self, target: RouteTarget) -> float:
        return self._capped(target.options.session_idle_timeout_s or self.tcp_idle_timeout_s)

    def udp_idle_timeout(self, target: RouteTarget) -> float:
        return self._capped(target.options.session_idle_timeout_s or self.udp_session_idle_s)

    def _capped(self, idle_s: float) -> float:
        cap = self.max_idle_timeout_s
        return min(idle_s, cap) if cap else idle_s


class Relay(Protocol):
    """A live connection or session that can be cut (its access record says why)."""

    def cut(self, reason: str) -> None: ...


class Relays:
    """The live relays of one process by service: what removing a service drains, then cuts."""

    def __init__(self) -> None:
        self._by_service: dict[str, set[Relay]] = {}
        self._cuts: dict[str, asyncio.TimerHandle] = {}

    def add(self, service_id: str, relay: Relay) -> None:
        self._by_service.setdefault(service_id, set()).add(relay)

    def discard(self, service_id: str, relay: Relay) -> None:
        relays = self._by_service.get(service_id)
        if relays is not None:
            relays.discard(relay)
            if not relays:
                del self._by_service[service_id]

    def count(self, service_id: str | None = None) -> int:
        if service_id is not None:
            return len(self._by_service.get(service_id, ()))
        return sum(len(relays) for relays in self._by_service.values())

    def retain(self, live: Collection[str], grace_s: float) -> None:
        """Services not in ``live`` have ``grace_s`` to finish before their relays are cut;
        a service that comes back within it keeps them."""
        loop = asyncio.get_running_loop()
        for service_id in list(self._cuts):
            if service_id in live:
                self._cuts.pop(service_id).cancel()
        for service_id in self._by_service:
            if service_id not in live and service_id not in self._cuts:
                self._cuts[service_id] = loop.call_later(
                    grace_s, self._cut_service, service_id, "service removed"
                )

    def cut_all(self, reason: str) -> None:
        for handle in self._cuts.values():
            handle.cancel()
        self._cuts.clear()
        for relays in list(self._by_service.values()):
            for relay in list(relays):
                relay.cut(reason)

    def _cut_service(self, service_id: str, reason: str) -> None:
        self._cuts.pop(service_id, None)
        for relay in list(self._by_service.get(service_id, ())):
            relay.cut(reason)


@dataclass
class L4Context:
    limits: L4Limits = field(default_factory=L4Limits)
    balancer: Balancer = field(default_factory=Balancer)
    relays: Relays = field(default_factory=Relays)
    #: UDP sessions open in this process, every port together (``udp_max_sessions``)
    udp_sessions: int = 0
    #: one record per connection or session; made after logging is configured
    access: LineLogger = field(default_factory=lambda: LineLogger("heron_edge.access"))


def shut(sock: socket.socket | None) -> None:
    """End both directions of ``sock`` now: a relay waiting on it wakes and finishes."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
