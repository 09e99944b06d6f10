"""The services this edge serves, as the config stream delivered them.

A route holds what the data plane needs to send a connection somewhere: the service's domain
and mode, and its targets as ``StreamTarget``s (the agent to ask, what it dials). The L7 and L4
proxies look services up here; this module only keeps the table consistent with the stream.
"""

from dataclasses import dataclass, field

from heron_core.types import ServiceMode
from heron_edge.connector import StreamTarget


@dataclass(frozen=True)
class RouteTarget:
    id: str
    stream: StreamTarget
    path: str  # HTTP path prefix; "" for L4
    enabled: bool


@dataclass(frozen=True)
class Route:
    id: str
    account_id: str
    domain: str
    mode: ServiceMode
    listen_port: int
    targets: tuple[RouteTarget, ...]


@dataclass
class RouteTable:
    routes: dict[str, Route] = field(default_factory=dict)
    #: the first snapshot has been applied: until then the edge serves nothing and is not ready
    ready: bool = False
    _pending_snapshot: set[str] | None = None

    def begin_snapshot(self) -> None:
        self._pending_snapshot = set()

    def upsert(self, route: Route) -> None:
        self.routes[route.id] = route
        if self._pending_snapshot is not None:
            self._pending_snapshot.add(route.id)

    def remove(self, route_id: str) -> None:
        self.routes.pop(route_id, None)

    def finish_snapshot(self) -> list[str]:
        """Drop every route the snapshot did not contain; returns their IDs."""
        kept = self._pending_snapshot or set()
        gone = [route_id for route_id in self.routes if route_id not in kept]
        for route_id in gone:
            del self.routes[route_id]
        self._pending_snapshot = None
        self.ready = True
        return gone

    def by_domain(self, domain: str) -> Route | None:
        domain = domain.lower().rstrip(".")
        return next((r for r in self.routes.values() if r.domain == domain), None)
