"""The services this edge serves: the config stream's state and the immutable table built from it.

``RouteTable`` is the control side's working copy: the config stream upserts and removes
routes in it, one batch at a time. After each batch the control side builds a ``RoutingTable``
(frozen, picklable) and hands it to the data plane, which swaps one reference: a request sees
one consistent table from start to end, and nothing on the hot path takes a lock.

Path prefixes match at segment boundaries (``/api`` matches ``/api`` and ``/api/x``, never
``/apiv2``) and the longest prefix wins, as the service model says.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

from heron_core.types import PathRewrite, ServiceMode, TargetProtocol
from heron_edge.connector import StreamTarget


@dataclass(frozen=True, slots=True)
class TargetOptions:
    skip_tls_verify: bool = False
    #: connect through the tunnel *and* wait for the response headers; None: the edge default
    request_timeout_s: float | None = None
    path_rewrite: PathRewrite = PathRewrite.STRIP
    custom_headers: tuple[tuple[str, str], ...] = ()
    proxy_protocol: bool = False
    session_idle_timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class RouteTarget:
    id: str
    stream: StreamTarget
    path: str  # HTTP path prefix; "" for L4
    enabled: bool
    protocol: TargetProtocol = TargetProtocol.HTTP
    options: TargetOptions = TargetOptions()

    @property
    def authority(self) -> str:
        """``host[:port]`` as the backend knows itself (the port left out when it is the default)."""
        host = self.stream.host or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        default = 443 if self.protocol is TargetProtocol.HTTPS else 80
        return host if self.stream.port == default else f"{host}:{self.stream.port}"


@dataclass(frozen=True, slots=True)
class RouteAuth:
    """How an HTTP service authenticates its visitors (``AuthConfig`` on the config stream)."""

    password: bool = False
    pin: bool = False
    sso: bool = False
    #: (lower-case header name, argon2id PHC hash of the value), in the order management sent
    header_auths: tuple[tuple[str, str], ...] = ()
    #: sessions issued under another version are refused
    session_version: str = ""

    @property
    def browser_login(self) -> bool:
        """A person can log in on the login page (password, PIN or SSO)."""
        return self.password or self.pin or self.sso

    @property
    def enabled(self) -> bool:
        """Any method at all: the service's requests must be authenticated."""
        return self.browser_login or bool(self.header_auths)


@dataclass(frozen=True, slots=True)
class Route:
    id: str
    account_id: str
    domain: str
    mode: ServiceMode
    listen_port: int
    targets: tuple[RouteTarget, ...]
    pass_host_header: bool = False
    rewrite_redirects: bool = False
    #: None (or no method enabled): the service is open to anyone
    auth: RouteAuth | None = None


@dataclass(frozen=True, slots=True)
class PathRoute:
    """One enabled target of an HTTP service with its prefix, ready for matching."""

    prefix: str
    #: ``prefix`` ending in ``/``: what a longer path must start with to match at a boundary
    prefix_dir: str
    target: RouteTarget

    def matches(self, path: str) -> bool:
        return path.startswith(self.prefix_dir) or path == self.prefix


@dataclass(frozen=True, slots=True)
class HttpService:
    route: Route
    #: enabled targets, longest prefix first
    paths: tuple[PathRoute, ...]
    #: the route's auth when it enables any method; None: open to anyone
    auth: RouteAuth | None = None
    #: header auths by (lower-case, bytes) header name: the hashes a value may match
    auth_headers: dict[bytes, tuple[str, ...]] = field(default_factory=dict)
    #: request headers never sent to the target (the configured auth headers)
    auth_strip: frozenset[bytes] = frozenset()

    def match(self, path: str) -> PathRoute | None:
        for candidate in self.paths:
            if candidate.matches(path):
                return candidate
        return None


def http_service(route: Route) -> HttpService:
    paths = []
    for target in route.targets:
        if not target.enabled:
            continue
        prefix = target.path or "/"
        prefix_dir = prefix if prefix.endswith("/") else prefix + "/"
        paths.append(PathRoute(prefix, prefix_dir, target))
    paths.sort(key=lambda p: len(p.prefix), reverse=True)
    auth = route.auth if route.auth is not None and route.auth.enabled else None
    by_header: dict[bytes, tuple[str, ...]] = {}
    if auth is not None:
        for name, hashed in auth.header_auths:
            key = name.lower().encode("latin-1")
            by_header[key] = (*by_header.get(key, ()), hashed)
    return HttpService(route, tuple(paths), auth, by_header, frozenset(by_header))


@dataclass(frozen=True, slots=True)
class PortRoutes:
    """The TCP services of one port: TLS services by SNI, and the TCP service (at most one)
    that takes every connection no TLS service matches, plain TCP included."""

    sni: dict[str, Route] = field(default_factory=dict)
    fallback: Route | None = None

    def merged(self, other: "PortRoutes | None") -> "PortRoutes":
        if other is None:
            return self
        return PortRoutes({**self.sni, **other.sni}, self.fallback or other.fallback)


#: the key of the main port's L4 routes: TLS services with no port of their own
MAIN_PORT_KEY = 0


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """What the data plane serves; never changed once built."""

    version: int = 0
    #: HTTP services by their (lower-case) domain
    http: dict[str, HttpService] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)
    #: TCP and TLS services by listen port (``MAIN_PORT_KEY``: the main port, by SNI)
    tcp_ports: dict[int, PortRoutes] = field(default_factory=dict)
    #: UDP services by listen port
    udp_ports: dict[int, Route] = field(default_factory=dict)

    @property
    def tls(self) -> dict[str, Route]:
        """TLS services on the main port (passed through untouched, by SNI) by their domain."""
        main = self.tcp_ports.get(MAIN_PORT_KEY)
        return main.sni if main is not None else {}

    @classmethod
    def build(cls, version: int, routes: Iterable[Route]) -> "RoutingTable":
        by_id = {route.id: route for route in routes}
        http: dict[str, HttpService] = {}
        sni: dict[int, dict[str, Route]] = {}
        fallback: dict[int, Route] = {}
        udp: dict[int, Route] = {}
        # sorted by id: when management's checks were bypassed and two services claim one
        # port, every worker and every rebuild picks the same one
        for route in sorted(by_id.values(), key=lambda r: r.id):
            if route.mode is ServiceMode.HTTP:
                http[route.domain] = http_service(route)
            elif route.mode is ServiceMode.TLS:
                sni.setdefault(route.listen_port, {}).setdefault(route.domain, route)
            elif route.mode is ServiceMode.TCP and route.listen_port:
                fallback.setdefault(route.listen_port, route)
            elif route.mode is ServiceMode.UDP and route.listen_port:
                udp.setdefault(route.listen_port, route)
        tcp_ports = {
            port: PortRoutes(sni.get(port, {}), fallback.get(port))
            for port in sni.keys() | fallback.keys()
        }
        return cls(version, http, by_id, tcp_ports, udp)


@dataclass
class RouteTable:
    """The control side's working copy, kept consistent with the config stream."""

    routes: dict[str, Route] = field(default_factory=dict)
    #: the first snapshot has been applied: until then the edge serves nothing and is not ready
    ready: bool = False
    version: int = 0
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

    def freeze(self) -> RoutingTable:
        """A new immutable table of what is held now (disabled services are not held)."""
        self.version += 1
        return RoutingTable.build(self.version, self.routes.values())
