"""The L4 listeners of one process, reconciled with every routing table.

A table names TCP ports (TCP and TLS services) and UDP ports (UDP services). On each table the
listeners follow it: a new port is bound (TCP with ``SO_REUSEPORT``, so every worker process
accepts on it; UDP in one process only, so a client's session lives in one place and the
session bounds hold for the whole edge), a port still in use gets its new routes in place —
its connections go on — and a port no service names any more stops accepting. Connections of
services that left the table drain for ``drain_s`` and are then cut; those of services that
remain are never touched, whatever else changed.

A port that cannot be bound (held by another program, privileged, one of the edge's own) is
logged and retried every few seconds while the table still names it.
"""

import asyncio
import socket
import time
from collections.abc import Collection, Mapping

import structlog

from heron_edge.acceptor import bind_listener, bind_socket
from heron_edge.address import Address
from heron_edge.l4.context import L4Context
from heron_edge.l4.tcp import TcpPort
from heron_edge.l4.udp import UdpPort
from heron_edge.routes import MAIN_PORT_KEY, PortRoutes, Route, RoutingTable

log = structlog.get_logger("heron_edge.l4")

BIND_RETRY_S = 5.0


class L4Listeners:
    def __init__(
        self,
        ctx: L4Context,
        host: str,
        *,
        reuse_port: bool = True,
        serve_udp: bool = True,
    ) -> None:
        self.ctx = ctx
        self._host = host
        self._reuse_port = reuse_port
        self._serve_udp = serve_udp
        self.tcp: dict[int, TcpPort] = {}
        self.udp: dict[int, UdpPort] = {}
        self._table = RoutingTable()
        self._reserved: Mapping[int, str] = {}
        self._started = False
        #: (transport, port) → why it could not be bound, logged once until it changes
        self._failures: dict[tuple[str, int], str] = {}
        self._retry: asyncio.TimerHandle | None = None

    def start(self, reserved: Mapping[int, str]) -> None:
        """Begin serving; ``reserved`` are TCP ports this process listens on itself."""
        self._reserved = reserved
        self._started = True
        self._reconcile()

    def apply(self, table: RoutingTable) -> None:
        self._table = table
        if self._started:
            self._reconcile()

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, give live connections ``grace_s`` to finish, then cut them."""
        self._started = False
        if self._retry is not None:
            self._retry.cancel()
        for port in self.tcp.values():
            port.close()
        for udp in self.udp.values():
            udp.close("edge stopped")
        self.udp.clear()
        deadline = time.monotonic() + grace_s
        # a short poll: connections end in their own tasks, and shutdown is the only waiter
        while self.ctx.relays.count() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        self.ctx.relays.cut_all("edge stopped")
        for port in self.tcp.values():
            port.cancel()
        await asyncio.sleep(0)  # let the cut relays write their access records
        self.tcp.clear()

    def _reconcile(self) -> None:
        self._retry = None
        table = self._table
        tcp_wanted = {p: r for p, r in table.tcp_ports.items() if p != MAIN_PORT_KEY}
        for port in [p for p in self.tcp if p not in tcp_wanted]:
            self.tcp.pop(port).close()
            log.info("listener closed", transport="tcp", port=port)
        for port, routes in tcp_wanted.items():
            existing = self.tcp.get(port)
            if existing is not None:
                existing.routes = routes
            elif self._may_bind("tcp", port):
                self._bind_tcp(port, routes)
        udp_wanted = table.udp_ports if self._serve_udp else {}
        for port in [p for p in self.udp if p not in udp_wanted]:
            self.udp.pop(port).close("service removed")
            log.info("listener closed", transport="udp", port=port)
        for port, route in udp_wanted.items():
            current = self.udp.get(port)
            if current is not None:
                current.route = route
            elif self._may_bind("udp", port):
                self._bind_udp(port, route)
        self._forget_failures(tcp_wanted.keys(), udp_wanted.keys())
        self.ctx.relays.retain(table.routes.keys(), self.ctx.limits.drain_s)
        self.ctx.balancer.retain(table.routes.keys())
        if self._failures and self._started:
            self._retry = asyncio.get_running_loop().call_later(BIND_RETRY_S, self._reconcile)

    def _may_bind(self, transport: str, port: int) -> bool:
        if transport == "tcp" and port in self._reserved:
            self._failed(transport, port, f"the port is the edge's {self._reserved[port]}")
            return False
        return True

    def _bind_tcp(self, port: int, routes: PortRoutes) -> None:
        try:
            sock = bind_listener(Address(self._host, port), reuse_port=self._reuse_port)
        except OSError as exc:
            self._failed("tcp", port, exc.strerror or str(exc))
            return
        self.tcp[port] = TcpPort(self.ctx, routes, sock)
        self._failures.pop(("tcp", port), None)
        log.info(
            "listening", transport="tcp", port=port,
            tls_services=sorted(routes.sni), tcp_service=routes.fallback.id if routes.fallback else None,
        )  # fmt: skip

    def _bind_udp(self, port: int, route: Route) -> None:
        try:
            sock = bind_socket(Address(self._host, port), socket.SOCK_DGRAM, reuse_port=False)
        except OSError as exc:
            self._failed("udp", port, exc.strerror or str(exc))
            return
        self.udp[port] = UdpPort(self.ctx, route, sock)
        self._failures.pop(("udp", port), None)
        log.info("listening", transport="udp", port=port, udp_service=route.id)

    def _failed(self, transport: str, port: int, why: str) -> None:
        key = (transport, port)
        if self._failures.get(key) != why:
            log.error(
                "cannot listen for a service; retrying while the service needs the port",
                transport=transport, port=port, error=why, retry_s=BIND_RETRY_S,
            )  # fmt: skip
        self._failures[key] = why

    def _forget_failures(self, tcp: Collection[int], udp: Collection[int]) -> None:
        """Failures of ports no service names any more are nothing to retry."""
        for key in list(self._failures):
            if key[1] not in (tcp if key[0] == "tcp" else udp):
                del self._failures[key]
