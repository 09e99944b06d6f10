"""The edge's side of ``ProxyService.Sync``; the only module of the edge that sees protobuf.

Connect with the proxy token, say ``Hello`` (who we are, our WireGuard key and endpoint, what
we support), then apply what management sends: ``EdgeSetup`` (our overlay address: the tunnel
comes up), ``TunnelPeers`` (the agents our interface accepts) and ``ConfigBatch``es (services,
each acked once applied). On any error: reconnect with backoff and start again from a snapshot.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import structlog
from grpc import aio

from heron_core.backoff import Backoff
from heron_core.errors import HeronError
from heron_core.types import PathRewrite, ServiceMode, TargetProtocol
from heron_edge import __version__
from heron_edge.connector import DEFAULT_FORWARDER_PORT, StreamTarget
from heron_edge.routes import (
    Route,
    RouteAuth,
    RouteTable,
    RouteTarget,
    RoutingTable,
    TargetOptions,
)
from heron_edge.tunnel import AgentPeer, EdgeTunnel
from heron_proto.channel import open_channel
from heron_proto.heron.v1 import proxy_pb2
from heron_proto.heron.v1.proxy_pb2_grpc import ProxyServiceStub
from heron_tunnel.header import Protocol
from heron_tunnel.wireguard import WireGuardError

log = structlog.get_logger(__name__)

STABLE_STREAM_S = 60.0
#: a snapshot batch of many services is one message
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_MODES = {
    proxy_pb2.SERVICE_MODE_HTTP: ServiceMode.HTTP,
    proxy_pb2.SERVICE_MODE_TCP: ServiceMode.TCP,
    proxy_pb2.SERVICE_MODE_UDP: ServiceMode.UDP,
    proxy_pb2.SERVICE_MODE_TLS: ServiceMode.TLS,
}
_PROTOCOLS = {
    proxy_pb2.TARGET_PROTOCOL_HTTP: TargetProtocol.HTTP,
    proxy_pb2.TARGET_PROTOCOL_HTTPS: TargetProtocol.HTTPS,
    proxy_pb2.TARGET_PROTOCOL_TCP: TargetProtocol.TCP,
    proxy_pb2.TARGET_PROTOCOL_UDP: TargetProtocol.UDP,
}


@dataclass(frozen=True, slots=True)
class ServiceFact:
    """What this edge reports about one service; management derives its status from it."""

    tunnel_up: bool
    certificate_available: bool
    error: str = ""


class EdgeRefusedError(HeronError):
    """Management refused this edge (bad token, bad hello): retrying will not help."""


@dataclass(frozen=True)
class Identity:
    instance_id: str
    proxy_domain: str
    public_key: str
    endpoint: str
    supports_custom_ports: bool = True
    require_subdomain: bool = False


class ManagementLink:
    """Keeps the config stream up and applies it to the tunnel and the route table."""

    def __init__(
        self,
        url: str,
        token: str,
        identity: Identity,
        tunnel: EdgeTunnel,
        routes: RouteTable,
        *,
        on_table: Callable[[RoutingTable], None] = lambda _: None,
        on_synced: Callable[[], None] = lambda: None,
    ) -> None:
        self.url = url
        self._token = token
        self._identity = identity
        self._tunnel = tunnel
        self._routes = routes
        self._on_table = on_table
        self._on_synced = on_synced
        self._forwarder_ports: dict[str, int] = {}
        self._outgoing: asyncio.Queue[proxy_pb2.EdgeMessage | None] | None = None
        self.connected = False

    def send_status(self, service_id: str, fact: ServiceFact) -> bool:
        """Queue a ``ServiceStatus`` on the current stream; False when there is none."""
        outgoing = self._outgoing
        if outgoing is None or not self.connected:
            return False
        outgoing.put_nowait(
            proxy_pb2.EdgeMessage(
                service_status=proxy_pb2.ServiceStatus(
                    service_id=service_id,
                    tunnel_up=fact.tunnel_up,
                    certificate_available=fact.certificate_available,
                    error_message=fact.error[:1024],
                )
            )
        )
        return True

    async def run(self) -> None:
        """Forever: connect, apply, reconnect. Raises ``EdgeRefusedError`` when refused."""
        backoff = Backoff(initial_s=0.5, max_s=10.0, reset_after_s=STABLE_STREAM_S)
        async with open_channel(self.url, max_receive_bytes=MAX_MESSAGE_BYTES) as channel:
            stub = ProxyServiceStub(channel)
            while True:
                started = time.monotonic()
                try:
                    await self._session(stub)
                    problem = "management ended the stream"
                except aio.AioRpcError as exc:
                    if exc.code() in {
                        grpc.StatusCode.UNAUTHENTICATED,
                        grpc.StatusCode.PERMISSION_DENIED,
                        grpc.StatusCode.FAILED_PRECONDITION,
                        grpc.StatusCode.INVALID_ARGUMENT,
                    }:
                        raise EdgeRefusedError(
                            f"management at {self.url} refused this edge: {exc.details()}"
                        ) from None
                    problem = f"{exc.code().name}: {exc.details()}"
                finally:
                    self.connected = False
                delay = backoff.delay_after(time.monotonic() - started)
                log.warning("config stream lost, reconnecting", error=problem, retry_in_s=delay)
                await asyncio.sleep(delay)

    async def _session(self, stub: ProxyServiceStub) -> None:
        outgoing: asyncio.Queue[proxy_pb2.EdgeMessage | None] = asyncio.Queue()
        outgoing.put_nowait(proxy_pb2.EdgeMessage(hello=self._hello()))

        async def requests() -> AsyncIterator[proxy_pb2.EdgeMessage]:
            while (message := await outgoing.get()) is not None:
                yield message

        call = stub.Sync(requests(), metadata=(("authorization", f"Bearer {self._token}"),))
        self._outgoing = outgoing
        try:
            async for message in call:
                await self._apply(message, outgoing)
        finally:
            self._outgoing = None
            outgoing.put_nowait(None)
            call.cancel()

    def _hello(self) -> proxy_pb2.Hello:
        identity = self._identity
        return proxy_pb2.Hello(
            instance_id=identity.instance_id,
            proxy_domain=identity.proxy_domain,
            version=__version__,
            wireguard_public_key=identity.public_key,
            wireguard_endpoint=identity.endpoint,
            capabilities=proxy_pb2.EdgeCapabilities(
                supports_custom_ports=identity.supports_custom_ports,
                require_subdomain=identity.require_subdomain,
            ),
        )

    async def _apply(
        self,
        message: proxy_pb2.ManagementMessage,
        outgoing: "asyncio.Queue[proxy_pb2.EdgeMessage | None]",
    ) -> None:
        kind = message.WhichOneof("message")
        if kind == "edge_setup":
            setup = message.edge_setup
            try:
                await self._tunnel.ensure_up(setup.overlay_address, setup.overlay_network)
            except WireGuardError as exc:
                # the edge still serves (and says why no target is reachable) rather than stop
                log.error("the WireGuard interface cannot come up", error=str(exc))
            self.connected = True
            log.info("registered with management", overlay_address=setup.overlay_address)
        elif kind == "tunnel_peers":
            peers = [
                AgentPeer(p.peer_id, p.wireguard_public_key, p.overlay_address, p.forwarder_port)
                for p in message.tunnel_peers.peers
            ]
            self._forwarder_ports = {
                p.overlay_address: p.forwarder_port or DEFAULT_FORWARDER_PORT for p in peers
            }
            try:
                await self._tunnel.set_peers(peers)
            except WireGuardError as exc:
                log.error("tunnel peers not applied", error=str(exc))
            log.info("tunnel peers applied", peers=len(peers))
        elif kind == "config_batch":
            batch = message.config_batch
            self._apply_batch(batch)
            outgoing.put_nowait(proxy_pb2.EdgeMessage(ack=proxy_pb2.Ack(sequence=batch.sequence)))
        else:
            log.warning("unknown message from management ignored", kind=kind)

    def _apply_batch(self, batch: proxy_pb2.ConfigBatch) -> None:
        if batch.sequence == 1:
            self._routes.begin_snapshot()
        for mapping in batch.mappings:
            removed = mapping.change_type == proxy_pb2.CHANGE_TYPE_REMOVED or not mapping.enabled
            if removed:
                self._routes.remove(mapping.id)
            elif mapping.change_type != proxy_pb2.CHANGE_TYPE_UNSPECIFIED:
                self._routes.upsert(self._route(mapping))
        if batch.snapshot_complete:
            gone = self._routes.finish_snapshot()
            log.info("snapshot applied", services=len(self._routes.routes), dropped=len(gone))
        if self._routes.ready:
            self._on_table(self._routes.freeze())
        if batch.snapshot_complete:
            self._on_synced()

    def _route(self, mapping: proxy_pb2.ServiceMapping) -> Route:
        mode = _MODES.get(mapping.mode, ServiceMode.HTTP)
        protocol = Protocol.UDP if mode is ServiceMode.UDP else Protocol.TCP
        targets = tuple(
            RouteTarget(
                id=t.id,
                stream=StreamTarget(
                    peer_overlay_address=t.peer_overlay_address,
                    host=t.host,
                    port=t.port,
                    protocol=protocol,
                    forwarder_port=self._forwarder_ports.get(
                        t.peer_overlay_address, DEFAULT_FORWARDER_PORT
                    ),
                    service_id=mapping.id,
                ),
                path=t.path,
                enabled=t.enabled,
                protocol=_PROTOCOLS.get(t.protocol, TargetProtocol.HTTP),
                options=_options(t.options),
            )
            for t in mapping.targets
        )
        return Route(
            mapping.id,
            mapping.account_id,
            mapping.domain.lower(),
            mode,
            mapping.listen_port,
            targets,
            pass_host_header=mapping.pass_host_header,
            rewrite_redirects=mapping.rewrite_redirects,
            auth=_auth(mapping) if mode is ServiceMode.HTTP else None,
        )


def _auth(mapping: proxy_pb2.ServiceMapping) -> RouteAuth | None:
    """The service's auth, or None when it enables no method."""
    if not mapping.HasField("auth"):
        return None
    config = mapping.auth
    auth = RouteAuth(
        password=config.password_enabled,
        pin=config.pin_enabled,
        sso=config.sso.enabled,
        header_auths=tuple(
            (header.header.strip().lower(), header.hashed_value)
            for header in config.header_auths
            if header.header.strip() and header.hashed_value
        ),
        session_version=config.session_version,
    )
    return auth if auth.enabled else None


def _options(options: proxy_pb2.TargetOptions) -> TargetOptions:
    return TargetOptions(
        skip_tls_verify=options.skip_tls_verify,
        request_timeout_s=options.request_timeout_ms / 1000 if options.request_timeout_ms else None,
        path_rewrite=(
            PathRewrite.PRESERVE
            if options.path_rewrite == proxy_pb2.PATH_REWRITE_PRESERVE
            else PathRewrite.STRIP
        ),
        custom_headers=tuple(sorted(options.custom_headers.items())),
        proxy_protocol=options.proxy_protocol,
        session_idle_timeout_s=(
            options.session_idle_timeout_ms / 1000 if options.session_idle_timeout_ms else None
        ),
    )
