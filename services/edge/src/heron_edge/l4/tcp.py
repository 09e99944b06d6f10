"""TCP and TLS services: a listener per port, each connection relayed through the tunnel.

On a port with TLS services the ClientHello is peeked (never consumed) and its SNI picks the
TLS service; anything else — another name, no SNI, not TLS, or a client that sends nothing
within the peek timeout because its protocol lets the server speak first — goes to the port's
TCP service, if it has one, and is closed otherwise. A port with only a TCP service skips the
peek. Every byte the client sent is still in the socket when the relay starts, so the target
sees the connection exactly as the client made it (a PROXY v2 header first, when the target
asks for one). One access record per connection: bytes both ways, duration, close reason.
"""

import asyncio
import contextlib
import socket
import time
from typing import Any

import structlog

from heron_core.tasks import spawn
from heron_edge.acceptor import Acceptor, local_address, plain
from heron_edge.l4.context import L4Context, shut
from heron_edge.l4.dial import NoTargetError, dial
from heron_edge.routes import PortRoutes, Route, RouteTarget
from heron_edge.tls.clienthello import ClientHello
from heron_edge.tls.peek import PeekError, PeekFailure, peek_client_hello
from heron_tunnel import proxy_protocol
from heron_tunnel.relay import RelayStats, Side, relay

log = structlog.get_logger("heron_edge.l4")

#: refusals over the connection limit are logged at most this often per port
_REFUSAL_LOG_INTERVAL_S = 10.0


class _Connection:
    """One relayed connection, as ``Relays`` sees it."""

    __slots__ = ("client", "cut_reason", "task", "upstream")

    def __init__(self, client: socket.socket, task: "asyncio.Task[object] | None") -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.task = task
        self.cut_reason: str | None = None

    def cut(self, reason: str) -> None:
        if self.cut_reason is None:
            self.cut_reason = reason
        if self.upstream is None:
            if self.task is not None:
                self.task.cancel()  # still opening the tunnel stream
        else:
            shut(self.client)  # the relay sees both ends close and reports what it moved
            shut(self.upstream)


async def relay_connection(
    ctx: L4Context,
    route: Route,
    sock: socket.socket,
    client: tuple[str, int],
    port: int,
) -> None:
    """Relay ``sock``, accepted on ``port``, to a target of ``route``; closes ``sock`` in every
    case."""
    started = time.monotonic()
    conn = _Connection(sock, asyncio.current_task())
    ctx.relays.add(route.id, conn)
    target: RouteTarget | None = None
    stats: RelayStats | None = None
    reason = "closed"
    try:
        target, conn.upstream = await dial(ctx, route, client)
        if target.options.proxy_protocol:
            header = proxy_protocol.encode(client, local_address(sock))
            await asyncio.get_running_loop().sock_sendall(conn.upstream, header)
        stats = await relay(sock, conn.upstream, idle_timeout=ctx.limits.tcp_idle_timeout(target))
        reason = conn.cut_reason or _close_reason(stats)
    except NoTargetError as exc:
        reason = "no target answered"
        log.warning(
            "connection dropped: no target answered",
            service_id=route.id, domain=route.domain, client=client[0], failures=exc.failures,
        )  # fmt: skip
    except asyncio.CancelledError:
        reason = conn.cut_reason or "cancelled"
        raise
    except OSError as exc:
        reason = f"error: {exc}"
    finally:
        ctx.relays.discard(route.id, conn)
        for s in (sock, conn.upstream):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
        if ctx.access.enabled:  # the fields of a record nobody reads are not worth making
            ctx.access.info(
                "connection",
                protocol=route.mode.value, service_id=route.id, domain=route.domain,
                port=port, client=client[0], client_port=client[1],
                target=target.id if target is not None else None,
                bytes_in=stats.a_to_b_bytes if stats else 0,
                bytes_out=stats.b_to_a_bytes if stats else 0,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
                close_reason=reason,
            )  # fmt: skip


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
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused = 0
        self._refusal_logged_at = 0.0

    @property
    def active(self) -> int:
        return len(self._tasks)

    def close(self) -> None:
        """Stop accepting; connections already accepted go on (``Relays`` drains them)."""
        self._acceptor.close()

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def _on_connection(self, sock: socket.socket, peer: Any) -> None:
        if len(self._tasks) >= self.ctx.limits.max_connections_per_port:
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
        task = spawn(self._serve(sock, plain(peer)), name=self._task_name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, sock: socket.socket, client: tuple[str, int]) -> None:
        if not self.routes.sni:  # a TCP service's port: nothing to peek at
            route = self.routes.fallback
            if route is not None:
                await relay_connection(self.ctx, route, sock, client, self.port)
                return
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
        await relay_connection(self.ctx, route, sock, client, self.port)

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
