"""TCP and TLS services: a listener per port, each connection relayed through the tunnel.

On a port with TLS services the ClientHello is peeked (never consumed) and its SNI picks the
TLS service; anything else — another name, no SNI, not TLS, or a client that sends nothing
within the peek timeout because its protocol lets the server speak first — goes to the port's
TCP service, if it has one, and is closed otherwise. A port with only a TCP service skips the
peek. Every byte the client sent is still in the socket when the relay starts, so the target
sees the connection exactly as the client made it (a PROXY v2 header first, when the target
asks for one). One access record per connection: bytes both ways, duration, close reason.

A connection runs in the loop's callbacks from its accept (or its peek) to its access record:
the tunnel stream opens in a ``StreamOpening``, the bytes move in a ``Relay``. Only the peek
has a task.
"""

import asyncio
import contextlib
import errno
import socket
import time
from typing import Any

import structlog

from heron_core.tasks import spawn
from heron_edge.acceptor import Acceptor, local_address, plain
from heron_edge.connector import StreamOpening, TunnelError
from heron_edge.l4.context import L4Context, shut
from heron_edge.l4.dial import NO_ENABLED_TARGET, target_failed
from heron_edge.routes import PortRoutes, Route, RouteTarget
from heron_edge.tls.clienthello import ClientHello
from heron_edge.tls.peek import PeekError, PeekFailure, peek_client_hello
from heron_tunnel import poller as _poller
from heron_tunnel import proxy_protocol
from heron_tunnel.relay import Relay, RelayStats, Side

log = structlog.get_logger("heron_edge.l4")

#: refusals over the connection limit are logged at most this often per port
_REFUSAL_LOG_INTERVAL_S = 10.0


class Connection:
    """One TCP connection relayed through the tunnel, from the loop's callbacks alone: a
    ``StreamOpening`` per target tried (the balancer's order, failures ejected), then a
    ``Relay``, then the access record. No task or coroutine for its life: most of what a short
    connection would otherwise cost the edge. ``Relays`` can cut it in either phase."""

    __slots__ = (
        "_failures", "_live", "_opening", "_order", "_port", "_relay", "client", "ctx",
        "cut_reason", "ended", "route", "sock", "started", "target", "upstream",
    )  # fmt: skip

    def __init__(
        self,
        ctx: L4Context,
        route: Route,
        sock: socket.socket,
        client: tuple[str, int],
        port: int,
        live: "set[Connection] | None" = None,
    ) -> None:
        self.ctx = ctx
        self.route = route
        self.sock = sock
        self.client = client
        self._port = port
        self._live = live
        self.started = time.monotonic()
        self.target: RouteTarget | None = None
        self.upstream: socket.socket | None = None
        self.cut_reason: str | None = None
        self.ended = False
        self._opening: StreamOpening | None = None
        self._relay: Relay | None = None
        self._failures: list[str] = []
        self._order = iter(ctx.balancer.order(route))

    def start(self) -> None:
        """Begin with the first target; every end closes the client's socket."""
        self.ctx.relays.add(self.route.id, self)
        if self._live is not None:
            self._live.add(self)
        try:
            self._next_target()
        except Exception as exc:  # noqa: BLE001 (_failed logs it with its traceback)
            self._failed(exc)

    def cut(self, reason: str) -> None:
        """End now, in either phase; the record says ``reason`` and what moved so far."""
        if self.cut_reason is None:
            self.cut_reason = reason
        if self._opening is not None:  # still opening the tunnel stream
            self._opening.cancel()
            self._opening = None
        elif self._relay is not None:
            shut(self.sock)  # both peers see the end at once
            shut(self.upstream)
            self._relay.end()  # reports what it moved: the record is written now
        self._end(self.cut_reason)  # nothing when the relay's end has written it

    def _failed(self, exc: Exception) -> None:
        """A bug, or a resource gone (descriptors): said loudly, and the connection ended."""
        log.error(
            "connection failed", service_id=self.route.id, client=self.client[0], exc_info=exc
        )
        if self._opening is not None:
            self._opening.cancel()
            self._opening = None
        self._end(f"error: {exc}")

    def _next_target(self) -> None:
        target = self.target = next(self._order, None)
        if target is None:
            failures = self._failures or [NO_ENABLED_TARGET]
            log.warning(
                "connection dropped: no target answered",
                service_id=self.route.id, domain=self.route.domain, client=self.client[0],
                failures=failures,
            )  # fmt: skip
            self._end("no target answered")
            return
        self._opening = StreamOpening(
            target.stream, self.client,
            answer_timeout_s=self.ctx.limits.dial_timeout(target), on_done=self._opened,
        )  # fmt: skip

    def _opened(self, opening: StreamOpening) -> None:
        self._opening = None
        try:
            self._relay_to(opening)
        except Exception as exc:  # noqa: BLE001 (_failed logs it with its traceback)
            self._failed(exc)

    def _relay_to(self, opening: StreamOpening) -> None:
        """The opening is over: relay through its stream, or try the next target."""
        target = self.target
        assert target is not None  # an opening is for the current target
        try:
            upstream, registered = opening.take_registered()
        except TunnelError as exc:
            target_failed(self.ctx, self.route, target, exc, self._failures)
            self._next_target()
            return
        self.upstream = upstream
        try:  # until the relay has it, the upstream's registration is this method's to drop
            self.ctx.balancer.succeeded(self.route, target)
            if target.options.proxy_protocol:  # before any byte of the client
                header = proxy_protocol.encode(self.client, local_address(self.sock))
                if upstream.send(header) < len(header):  # a new stream's buffer takes it whole
                    raise OSError(errno.EIO, "the PROXY header did not fit in the send buffer")
        except BaseException as exc:
            # closed right after, by ``_end`` (here, or ``_failed``'s for the rest)
            _poller.poller(asyncio.get_running_loop()).unregister(
                upstream.fileno(), registered, closing=True
            )
            if not isinstance(exc, OSError):
                raise
            self._end(f"error: {exc}")
            return
        try:  # the relay has the upstream's registration from here, whatever happens
            running = Relay(
                self.sock, upstream,
                idle_timeout=self.ctx.limits.tcp_idle_timeout(target), on_done=self._relayed,
                close_sockets=True, b_registered=registered,
            )  # fmt: skip
        except OSError as exc:
            self._end(f"error: {exc}")
            return
        self._relay = running

    def _relayed(self, running: Relay) -> None:
        self._relay = None
        stats = running.stats()
        if running.exception is not None:  # a bug: said loudly, and the connection recorded
            log.error(
                "relay failed", service_id=self.route.id, client=self.client[0],
                exc_info=running.exception,
            )  # fmt: skip
            self._end(f"error: {running.exception!r}", stats)
            return
        self._end(self.cut_reason or _close_reason(stats), stats)

    def _end(self, reason: str, stats: RelayStats | None = None) -> None:
        """Closes both sockets (a relay's end has closed them already) and writes the record."""
        if self.ended:
            return
        self.ended = True
        if self._relay is not None:  # no callback of it may outlive the connection
            self._relay.stop()
            self._relay = None
        self.ctx.relays.discard(self.route.id, self)
        if self._live is not None:
            self._live.discard(self)
        if stats is None:
            for sock in (self.sock, self.upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()
        ctx, route, target = self.ctx, self.route, self.target
        if ctx.access.enabled:  # the fields of a record nobody reads are not worth making
            ctx.access.info(
                "connection",
                protocol=route.mode.value, service_id=route.id, domain=route.domain,
                port=self._port, client=self.client[0], client_port=self.client[1],
                target=target.id if target is not None else None,
                bytes_in=stats.a_to_b_bytes if stats else 0,
                bytes_out=stats.b_to_a_bytes if stats else 0,
                duration_ms=round((time.monotonic() - self.started) * 1000, 1),
                close_reason=reason,
            )  # fmt: skip


def relay_connection(
    ctx: L4Context,
    route: Route,
    sock: socket.socket,
    client: tuple[str, int],
    port: int,
    live: set[Connection] | None = None,
) -> Connection:
    """Relay ``sock``, accepted on ``port``, to a target of ``route``, from callbacks (no task
    needed): returns at once. ``sock`` is closed in every case; ``live`` holds the connection
    until it ends."""
    connection = Connection(ctx, route, sock, client, port, live)
    connection.start()
    return connection


def _close_reason(stats: RelayStats) -> str:
    if stats.idle_timed_out:
        return "idle timeout"
    if stats.error:
        return f"error: {stats.error}"
    if stats.first_closed is Side.A:
        return "client closed"
    if stats.first_closed is Side.B:
        return "target closed"
    return "closed"


class TcpPort:
    """The listener of one TCP port and the connections it accepted."""

    def __init__(self, ctx: L4Context, routes: PortRoutes, sock: socket.socket) -> None:
        self.ctx = ctx
        #: swapped whole on every table; a connection routes with the one it finds
        self.routes = routes
        self._acceptor = Acceptor(sock, self._on_connection)
        self.port = self._acceptor.port
        self._task_name = f"tcp :{self.port}"
        #: connections whose ClientHello is being peeked at (ports with TLS services)
        self._peeking: set[asyncio.Task[None]] = set()
        #: connections relayed (or opening their tunnel stream)
        self._live: set[Connection] = set()
        self.refused = 0
        self._refusal_logged_at = 0.0

    @property
    def active(self) -> int:
        return len(self._peeking) + len(self._live)

    def close(self) -> None:
        """Stop accepting; connections already accepted go on (``Relays`` drains them)."""
        self._acceptor.close()

    def cancel(self) -> None:
        for task in list(self._peeking):
            task.cancel()
        for connection in list(self._live):
            connection.cut("cancelled")

    def _on_connection(self, sock: socket.socket, peer: Any) -> None:
        if self.active >= self.ctx.limits.max_connections_per_port:
            sock.close()
            self.refused += 1
            now = time.monotonic()
            if now - self._refusal_logged_at >= _REFUSAL_LOG_INTERVAL_S:
                self._refusal_logged_at = now
                log.warning(
                    "connection refused: the port is at its connection limit",
                    port=self.port, limit=self.ctx.limits.max_connections_per_port,
                    refused_so_far=self.refused,
                )  # fmt: skip
            return
        routes = self.routes
        if not routes.sni:  # a TCP service's port: nothing to peek at, no task
            if routes.fallback is None:
                sock.close()
            else:
                relay_connection(
                    self.ctx, routes.fallback, sock, plain(peer), self.port, self._live
                )
            return
        task = spawn(self._serve(sock, plain(peer)), name=self._task_name)
        self._peeking.add(task)
        task.add_done_callback(self._peeking.discard)

    async def _serve(self, sock: socket.socket, client: tuple[str, int]) -> None:
        try:
            route = await self._pick(sock)
        except OSError:
            sock.close()
            return
        except BaseException:
            sock.close()
            raise
        if route is None:
            sock.close()
            return
        # from peeking to live at once: the port's count must not hold it twice meanwhile
        self._peeking.discard(asyncio.current_task())
        relay_connection(self.ctx, route, sock, client, self.port, self._live)

    async def _pick(self, sock: socket.socket) -> Route | None:
        routes = self.routes
        if not routes.sni:
            return routes.fallback
        try:
            hello = await peek_client_hello(
                asyncio.get_running_loop(), sock, timeout_s=self.ctx.limits.peek_timeout_s
            )
        except PeekError as exc:
            if exc.reason is PeekFailure.CLOSED or routes.fallback is None:
                log.debug("connection dropped before routing", port=self.port, reason=str(exc))
                return None
            return routes.fallback
        if isinstance(hello, ClientHello) and hello.server_name is not None:
            route = routes.sni.get(hello.server_name)
            if route is not None:
                return route
        if routes.fallback is None:
            log.debug(
                "connection dropped: no TLS service for its name and no TCP service on the port",
                port=self.port, sni=hello.server_name if isinstance(hello, ClientHello) else None,
            )  # fmt: skip
        return routes.fallback
