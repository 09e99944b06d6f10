"""Connections to targets: HTTP/1.1 over tunnel streams, kept alive in a bounded pool per target.

Opening a stream costs a round trip to the agent and the agent's dial of the target (and a TLS
handshake for ``https`` targets), so a finished exchange hands its connection back to its
target's pool. A pool keeps at most ``max_idle`` idle connections and closes one that idled
``idle_timeout_s``; it never holds more than ``max_open`` connections at once — requests beyond
that wait (within their own timeout) for one to come back.

``UpstreamConnection`` parses the target's responses with httptools and hands them, callback by
callback, to the exchange bound to it (``heron_edge.http.proxy``): no task, no queue per request.

``DirectUpstreamPool`` is the same pool over plain TCP connections (no tunnel), for the auth
gateway.
"""

import asyncio
import contextlib
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Protocol, cast

import httptools
import structlog

from heron_core.types import TargetProtocol
from heron_edge.connector import open_stream
from heron_edge.routes import RouteTarget

log = structlog.get_logger(__name__)


class ResponseSink(Protocol):
    """What an upstream connection reports to (implemented by the proxy's exchange)."""

    def upstream_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], http11: bool
    ) -> None: ...
    def upstream_body(self, data: bytes) -> None: ...
    def upstream_complete(self) -> None: ...
    def upstream_upgraded(self, rest: bytes) -> None: ...
    def upstream_raw(self, data: bytes) -> None: ...
    def upstream_lost(self, exc: Exception | None) -> None: ...
    def upstream_pause_writing(self) -> None: ...
    def cork(self) -> None: ...
    def uncork(self) -> None: ...
    def upstream_resume_writing(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One kept-alive connection to a target; bound to one exchange at a time."""

    def __init__(self, pool: "UpstreamPool") -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.sink: ResponseSink | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reused = False  # served an exchange before: a stale keep-alive may be closed
        self.received = False  # bytes of the current response arrived
        self.raw = False  # upgraded: bytes are relayed as they are
        self.closed = False
        self.idle_since = 0.0
        self._feeding = False  # inside parser.feed_data
        self._release_after_feed = False
        self._stray = False  # bytes after the end of a response nobody asked for
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:
            # nothing asked: a target that talks out of turn is not one to keep
            self.close()
            return
        self.received = True
        if self.raw:
            sink.upstream_raw(data)
            return
        sink.cork()
        self._feeding = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0]
            self.raw = True
            sink.upstream_upgraded(data[offset:])
        except httptools.HttpParserError as exc:
            log.info("target sent a malformed response", error=str(exc), target=self.pool.name)
            self.sink = None
            self.close()
            sink.upstream_lost(exc)
        finally:
            self._feeding = False
            sink.uncork()
            if self._release_after_feed:
                self._release_after_feed = False
                self._hand_back()

    def eof_received(self) -> bool | None:
        # an upgraded stream the target ended: the client's side ends too (a TLS client
        # connection cannot be half-closed), so close rather than wait for an idle timeout
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.upstream_lost(exc)

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_pause_writing()

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_resume_writing()

    # --- httptools callbacks
    def on_message_begin(self) -> None:
        if self.sink is None:
            self._stray = True  # a response to nothing: this connection is not to be trusted
        self._reason = b""
        self._headers = []

    def on_status(self, status: bytes) -> None:
        self._reason += status  # may come in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self.sink is not None:
            parser = self.parser
            self.sink.upstream_head(
                parser.get_status_code(),
                self._reason,
                self._headers,
                parser.get_http_version() == "1.1",
            )

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.upstream_body(body)

    def on_message_complete(self) -> None:
        if self.sink is not None:
            self.sink.upstream_complete()

    # --- used by the exchange
    def bind(self, sink: ResponseSink) -> None:
        self.sink = sink
        self.received = False

    def finished(self, *, reusable: bool) -> None:
        """The exchange has its whole response. A reusable connection goes back to the pool —
        after the bytes of this read are parsed, so that anything the target sent beyond the
        response (a broken target) closes it instead of reaching the next exchange."""
        self.sink = None
        if not reusable:
            self.close()
        elif self._feeding:
            self._release_after_feed = True
        else:
            self._hand_back()

    def _hand_back(self) -> None:
        if self._stray or self.closed:
            self.close()
            return
        self.pool.release(self, asyncio.get_running_loop().time())

    def reset_parser(self) -> None:
        """A fresh parser: after a response whose body the parser could not know was absent
        (HEAD), the old one would wait for bytes that never come."""
        self.parser = httptools.HttpResponseParser(self)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        self.sink = None
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.sink = None
        if self.transport is not None:
            self.transport.abort()


@dataclass(frozen=True, slots=True)
class PoolLimits:
    max_idle: int = 64
    max_open: int = 512
    idle_timeout_s: float = 60.0


class PoolFullError(Exception):
    """Every connection of the pool is busy and none came back in time."""


class UpstreamPool:
    """The connections to one target (one agent, one address, one protocol)."""

    def __init__(
        self,
        target: RouteTarget,
        limits: PoolLimits,
        tls: ssl.SSLContext | None,
        connect_timeout_s: float,
    ) -> None:
        self.target = target
        self.name = self._describe(target)
        self._limits = limits
        self._tls = tls
        self._connect_timeout_s = connect_timeout_s
        self._idle: deque[UpstreamConnection] = deque()
        self._open = 0
        self._waiters: deque[asyncio.Future[UpstreamConnection]] = deque()
        self.closed = False

    @staticmethod
    def _describe(target: RouteTarget) -> str:
        """The pool's name in logs."""
        return f"{target.stream.peer_overlay_address}->{target.authority}"

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    def take_idle(self) -> UpstreamConnection | None:
        """A kept-alive connection, most recently used first (its target is most likely to
        still have it open); None when there is none."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return None

    async def connect(self, client: tuple[str, int]) -> UpstreamConnection:
        """A connection for one exchange: a new stream, or one released while waiting."""
        if self._open >= self._limits.max_open:
            waiter: asyncio.Future[UpstreamConnection] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                return await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self.release(waiter.result(), asyncio.get_running_loop().time())
                raise
            finally:
                if not waiter.done():
                    waiter.cancel()
        self._open += 1
        try:
            return await self._open_connection(client)
        except BaseException:
            self._open -= 1
            self._wake_waiter_to_connect()
            raise

    async def _open_connection(self, client: tuple[str, int]) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        sock = await open_stream(
            self.target.stream, client, answer_timeout_s=self._connect_timeout_s
        )
        server_hostname = None
        if self._tls is not None:
            server_hostname = self.target.stream.host or "localhost"
        try:
            _, conn = await loop.create_connection(
                lambda: UpstreamConnection(self),
                sock=sock,
                ssl=self._tls,
                server_hostname=server_hostname,
                ssl_handshake_timeout=self._connect_timeout_s if self._tls else None,
            )
        except BaseException:
            sock.close()
            raise
        return conn

    def release(self, conn: UpstreamConnection, now: float) -> None:
        """An exchange is done with ``conn`` and it may be reused."""
        conn.sink = None
        conn.reused = True
        if conn.closed:
            return
        if self.closed:
            conn.close()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if len(self._idle) >= self._limits.max_idle:
            conn.close()
            return
        conn.idle_since = now
        self._idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        """``conn`` is gone (closed by either side): it no longer counts."""
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)
        self._open -= 1
        self._wake_waiter_to_connect()

    def _wake_waiter_to_connect(self) -> None:
        """A slot freed up: the first waiter opens its own connection."""
        while self._waiters and self._open < self._limits.max_open:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(_SlotFree())
                return

    def reap(self, now: float) -> None:
        """Close connections idle longer than the limit (the oldest are at the left)."""
        deadline = now - self._limits.idle_timeout_s
        while self._idle and self._idle[0].idle_since < deadline:
            self._idle.popleft().close()

    def close(self) -> None:
        """The target is gone from the routing table: idle connections close now, busy ones
        when their exchange ends."""
        self.closed = True
        while self._idle:
            self._idle.popleft().close()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(PoolFullError(f"the pool for {self.name} was closed"))
        self._waiters.clear()


class DirectUpstreamPool(UpstreamPool):
    """A pool of plain TCP connections to ``target.stream.host:port``, without the tunnel: for
    Heron's own internal services the edge talks to (the auth gateway)."""

    @staticmethod
    def _describe(target: RouteTarget) -> str:
        return f"direct->{target.authority}"

    async def _open_connection(self, client: tuple[str, int]) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        stream = self.target.stream
        async with asyncio.timeout(self._connect_timeout_s):
            _, conn = await loop.create_connection(
                lambda: UpstreamConnection(self),
                stream.host or "127.0.0.1",
                stream.port,
                ssl=self._tls,
                server_hostname=(stream.host or "localhost") if self._tls is not None else None,
            )
        return conn


class _SlotFree(Exception):  # noqa: N818  (a signal, not an error)
    """Internal: a waiter may now open a connection itself."""


async def acquire(pool: UpstreamPool, client: tuple[str, int]) -> UpstreamConnection:
    """``pool.connect`` that turns a freed slot into a connection of the waiter's own."""
    while True:
        try:
            return await pool.connect(client)
        except _SlotFree:
            continue


def tls_context(
    target: RouteTarget,
    *,
    ca_file: str | None,
    cache: dict[tuple[bool, str | None], ssl.SSLContext],
) -> ssl.SSLContext | None:
    """The client TLS context for an ``https`` target: verified against ``ca_file`` (or the
    system's CAs) unless the target says ``skip_tls_verify``."""
    if target.protocol is not TargetProtocol.HTTPS:
        return None
    key = (target.options.skip_tls_verify, ca_file)
    context = cache.get(key)
    if context is None:
        context = ssl.create_default_context(cafile=ca_file)
        context.set_alpn_protocols(["http/1.1"])
        if target.options.skip_tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        cache[key] = context
    return context
