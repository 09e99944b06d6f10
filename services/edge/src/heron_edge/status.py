"""Per-service facts this edge reports to management: is the tunnel up, is there a certificate.

A service's tunnel is up when the WireGuard peer of at least one of its enabled targets has
completed a handshake within the last 180 s (WireGuard's own reject-after time: an older
session can no longer carry data). Facts are recomputed every few seconds and whenever the
routing table changes, and only changes are sent; a new config stream gets them all again.
A fact is sent once every data-plane worker has applied the table and certificates it was
computed from (``applied``): "served" means served by whichever worker takes the connection.
"""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import structlog

from heron_core.tasks import stop_if_cancelled
from heron_core.types import ServiceMode
from heron_edge.management import ServiceFact
from heron_edge.routes import Route, RoutingTable
from heron_edge.tunnel import EdgeTunnel
from heron_tunnel.wireguard import WireGuardError

log = structlog.get_logger(__name__)

HANDSHAKE_FRESH = timedelta(seconds=180)


class StatusReporter:
    def __init__(
        self,
        tunnel: EdgeTunnel,
        has_certificate: Callable[[str], bool],
        send: Callable[[str, ServiceFact], bool],
        applied: Callable[[], Awaitable[bool]],
        *,
        interval_s: float = 2.0,
    ) -> None:
        self._tunnel = tunnel
        self._has_certificate = has_certificate
        self._send = send
        self._applied = applied
        self._interval_s = interval_s
        self._table = RoutingTable()
        self._sent: dict[str, ServiceFact] = {}
        self._wake = asyncio.Event()

    def update_table(self, table: RoutingTable) -> None:
        self._table = table
        self._wake.set()

    def resend(self) -> None:
        """A new config stream: management knows nothing from this edge yet."""
        self._sent.clear()
        self._wake.set()

    def poke(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()  # before: a table that comes during the report wakes the next
            try:
                await self.report()
            except Exception as exc:
                stop_if_cancelled(exc)
                log.exception("service status report failed")
            try:
                async with asyncio.timeout(self._interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def report(self) -> None:
        handshakes, problem = await self._handshakes()
        now = datetime.now(UTC)
        table = self._table
        facts = {r.id: self._fact(r, handshakes, problem, now) for r in table.routes.values()}
        await self._applied()  # every worker serves what these facts describe
        for route_id, fact in facts.items():
            if self._sent.get(route_id) != fact and self._send(route_id, fact):
                self._sent[route_id] = fact
        for gone in set(self._sent) - set(table.routes):
            del self._sent[gone]

    async def _handshakes(self) -> tuple[dict[str, datetime | None], str]:
        """Latest handshake per agent overlay address, or why there is no tunnel at all."""
        interface = self._tunnel.interface
        if interface is None:
            return {}, "the edge's WireGuard interface is not up (see the edge's log)"
        try:
            stats = await interface.stats()
        except WireGuardError as exc:
            return {}, f"the edge's WireGuard interface cannot be read: {exc}"
        self._tunnel.remember_endpoints(stats)
        by_key = {peer.public_key: peer.latest_handshake for peer in stats}
        return {
            peer.overlay_address: by_key.get(peer.public_key) for peer in self._tunnel.peers
        }, ""

    def _fact(
        self,
        route: Route,
        handshakes: dict[str, datetime | None],
        problem: str,
        now: datetime,
    ) -> ServiceFact:
        certificate = route.mode is not ServiceMode.HTTP or self._has_certificate(route.domain)
        targets = [t for t in route.targets if t.enabled]
        if not targets:
            return ServiceFact(
                tunnel_up=False,
                certificate_available=certificate,
                error="the service has no enabled target",
            )
        if problem:
            return ServiceFact(tunnel_up=False, certificate_available=certificate, error=problem)
        reasons = []
        for target in targets:
            address = target.stream.peer_overlay_address
            if address not in handshakes:
                reasons.append(f"the peer at {address} is not one of this edge's tunnel peers")
                continue
            latest = handshakes[address]
            if latest is not None and now - latest <= HANDSHAKE_FRESH:
                return ServiceFact(tunnel_up=True, certificate_available=certificate)
            reasons.append(
                f"no WireGuard handshake from the peer at {address} yet"
                if latest is None
                else f"the peer at {address} last completed a handshake at {latest:%H:%M:%S} UTC"
            )
        reason = "; ".join(sorted(set(reasons)))
        return ServiceFact(tunnel_up=False, certificate_available=certificate, error=reason)
