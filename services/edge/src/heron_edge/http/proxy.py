"""The L7 reverse proxy: one ``HttpConnection`` per client connection, one ``Exchange`` per request.

The client side is parsed by httptools (llhttp, strict: ``Transfer-Encoding`` with
``Content-Length``, duplicate lengths, obs-fold, bare LF and bad characters are refused with a
400, so no two readers can disagree on where a request ends — no smuggling). The edge never
forwards the client's framing: it re-frames the body it parsed (``content-length`` as it was,
``chunked`` re-chunked), so the target sees exactly the requests the edge saw.

Requests on one connection are answered in order (pipelining): a request that arrives while
another is in flight waits, its body buffered up to a bound (then the client is paused).
Bodies stream both ways with back-pressure: a slow reader pauses the other side's transport.

Timeouts are deadlines checked by one sweeper per data plane (``ProxyContext.sweep``), not a
timer per request: reading a request's headers, keep-alive idle, waiting for the target
(``request_timeout``: the tunnel, the agent's dial *and* the response headers), and a stream
that moves no byte for too long.
"""

import asyncio
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, cast

import httptools
import structlog

from heron_core.auth import AUTH_PATH_PREFIX, SERVICE_ID_HEADER
from heron_core.logging import LineLogger
from heron_core.tasks import spawn
from heron_core.types import PathRewrite
from heron_edge.connector import TunnelError
from heron_edge.http import headers as h
from heron_edge.http.auth import Admit, EdgeAuth, Outcome, Refusal
from heron_edge.http.pages import page
from heron_edge.http.upstream import (
    DirectUpstreamPool,
    PoolFullError,
    PoolLimits,
    UpstreamConnection,
    UpstreamPool,
    acquire,
    tls_context,
)
from heron_edge.routes import HttpService, PathRoute, RouteTarget, RoutingTable
from heron_tunnel.header import ForwardStatus

log = structlog.get_logger("heron_edge.access")

HIGH_WATER = 256 * 1024  # request bytes buffered before the client is paused
#: requests parsed ahead of the one being answered before the client is paused
MAX_PIPELINED = 16
#: methods a proxy may send again when a kept-alive connection turned out to be closed
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
_AUTH_PREFIX = AUTH_PATH_PREFIX.encode()
_SERVICE_ID = SERVICE_ID_HEADER.encode()


@dataclass(frozen=True, slots=True)
class HttpLimits:
    header_timeout_s: float = 10.0
    keepalive_timeout_s: float = 120.0
    stream_idle_timeout_s: float = 300.0
    request_timeout_s: float = 60.0
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    upstream_ca_file: str | None = None
    pool: PoolLimits = field(default_factory=PoolLimits)


class Deadline(IntEnum):
    NONE = 0
    KEEPALIVE = 1  # between requests
    HEADERS = 2  # a request began, its headers are not complete
    UPSTREAM = 3  # waiting for the target's response headers
    STREAM = 4  # bodies in flight (or upgraded): idle when no byte moves


class _HeadTooLargeError(Exception):
    pass


@dataclass
class ProxyContext:
    """What every connection of one data plane shares: the routing table, pools, limits."""

    limits: HttpLimits = field(default_factory=HttpLimits)
    table: RoutingTable = field(default_factory=RoutingTable)
    connections: set["HttpConnection"] = field(default_factory=set)
    pools: dict[tuple[Any, ...], UpstreamPool] = field(default_factory=dict)
    #: one line per request; made after logging is configured
    access: LineLogger = field(default_factory=lambda: LineLogger("heron_edge.access"))
    #: the auth gateway, the session keys and the auth caches
    auth: EdgeAuth = field(default_factory=EdgeAuth)
    _tls_contexts: dict[Any, Any] = field(default_factory=dict)
    _gateway_pool: UpstreamPool | None = None

    def set_table(self, table: RoutingTable) -> None:
        """Swap the routing table; pools of targets that are gone close once idle."""
        self.table = table
        live = {_pool_key(path.target) for service in table.http.values() for path in service.paths}
        for key in [key for key in self.pools if key not in live]:
            self.pools.pop(key).close()

    def pool_for(self, target: RouteTarget) -> UpstreamPool:
        key = _pool_key(target)
        pool = self.pools.get(key)
        if pool is None:
            tls = tls_context(
                target, ca_file=self.limits.upstream_ca_file, cache=self._tls_contexts
            )
            pool = UpstreamPool(target, self.limits.pool, tls, self.limits.request_timeout_s)
            self.pools[key] = pool
        return pool

    def gateway_pool(self, gateway: RouteTarget) -> UpstreamPool:
        """The pool of direct connections to the auth gateway."""
        pool = self._gateway_pool
        if pool is None or pool.target != gateway:
            if pool is not None:
                pool.close()
            tls = tls_context(
                gateway, ca_file=self.limits.upstream_ca_file, cache=self._tls_contexts
            )
            pool = DirectUpstreamPool(gateway, self.limits.pool, tls, self.limits.request_timeout_s)
            self._gateway_pool = pool
        return pool

    def sweep(self, now: float) -> None:
        # one connection's failure must not stop every other connection's timeouts
        for conn in list(self.connections):
            try:
                conn.check_deadline(now)
            except Exception:
                log.exception("deadline check failed, closing the connection")
                conn.abort()
        pools = list(self.pools.values())
        if self._gateway_pool is not None:
            pools.append(self._gateway_pool)
        for pool in pools:
            try:
                pool.reap(now)
            except Exception:
                log.exception("pool reaping failed", pool=pool.name)

    async def run_sweeper(self, interval_s: float = 0.5) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval_s)
            self.sweep(loop.time())

    def close(self) -> None:
        for conn in list(self.connections):
            conn.close()
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()
        if self._gateway_pool is not None:
            self._gateway_pool.close()
            self._gateway_pool = None
        self.auth.close()


def _pool_key(target: RouteTarget) -> tuple[Any, ...]:
    return (target.id, target.stream, target.protocol, target.options.skip_tls_verify)


def _split_host(value: bytes) -> tuple[str, int | None]:
    """``Host`` → (lower-case name, port or None); ``("", None)`` when it is not a host."""
    value = value.strip().lower()
    if value.startswith(b"["):
        end = value.find(b"]")
        if end == -1:
            return "", None
        name, rest = value[1:end], value[end + 1 :]
    else:
        name, sep, rest = value.rpartition(b":")
        if not sep:
            name, rest = value, b""
        else:
            rest = b":" + rest
    port = None
    if rest:
        if not rest.startswith(b":") or not rest[1:].isdigit() or len(rest) > 6:
            return "", None
        port = int(rest[1:])
    try:
        return name.decode("ascii").rstrip("."), port
    except UnicodeDecodeError:
        return "", None


#: a routed request: its service and target, path, query and the Host's port
_Found = tuple[HttpService, PathRoute, bytes, bytes, int | None]


class Exchange:
    """One request and its response."""

    __slots__ = (
        "auth",
        "body_buffer",
        "buffered",
        "bytes_in",
        "bytes_out",
        "chunked_in",
        "chunked_out",
        "close_after",
        "conn",
        "content_length",
        "done",
        "head",
        "head_sent",
        "headers",
        "host",
        "http11",
        "keep_alive",
        "method",
        "path_route",
        "pool",
        "public_authority",
        "request_done",
        "response_done",
        "retried",
        "started",
        "status",
        "switching",
        "target_path",
        "upgrade",
        "upstream",
        "upstream_close_delimited",
        "upstream_reusable",
        "url",
    )

    def __init__(self, conn: "HttpConnection", method: bytes, url: bytes) -> None:
        self.conn = conn
        self.method = method
        self.url = url
        self.headers: list[tuple[bytes, bytes]] = []
        self.http11 = True
        self.keep_alive = True
        self.upgrade: bytes | None = None
        self.chunked_in = False
        self.content_length: int | None = None
        self.body_buffer: list[bytes] = []
        self.buffered = 0
        self.request_done = False
        self.upstream: UpstreamConnection | None = None
        self.pool: UpstreamPool | None = None
        self.path_route: PathRoute | None = None
        self.head = b""
        self.host = ""
        self.public_authority = b""
        self.target_path = b""
        self.status = 0
        self.head_sent = False
        self.response_done = False
        self.chunked_out = False
        self.close_after = False
        self.upstream_close_delimited = False
        self.upstream_reusable = False
        self.switching = False
        self.retried = False
        self.done = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.started = time.monotonic()
        #: the access log's auth field: the method that admitted the request, or why not
        self.auth: str | None = None

    # --- the request side, fed by the client connection's parser
    def request_body(self, data: bytes) -> None:
        self.bytes_in += len(data)
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            if self.chunked_in:
                upstream.transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
            else:
                upstream.transport.write(data)
            return
        if self.done:
            return  # answered already (an error page): the rest is discarded
        self.body_buffer.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER:
            self.conn.pause_reading("buffer")

    def request_complete(self) -> None:
        self.request_done = True
        upstream = self.upstream
        if upstream is not None and self.chunked_in:
            upstream.write(b"0\r\n\r\n")
        route = self.path_route
        if route is not None and not self.head_sent and not self.done:
            # the whole request is on its way: the wait for the response starts now
            self.conn.set_deadline(Deadline.UPSTREAM, route.target.options.request_timeout_s)

    # --- routing
    def start(self) -> None:
        """Route the request and send it, or answer it here."""
        found = self._route()
        if found is None:
            return
        service = found[0]
        if service.auth is None:
            self._forward(found, None)
            return
        outcome = self.conn.ctx.auth.check(
            service, self.headers, self.method, self._request_target(found), self.conn.client[0]
        )
        if isinstance(outcome, Admit):
            self._forward(found, outcome)
        elif isinstance(outcome, Refusal):
            self.refuse(outcome)
        else:
            # a header value being verified: the body (if any) waits in the buffer meanwhile
            self.conn.set_deadline(Deadline.UPSTREAM, None)
            spawn(self._after_verification(outcome, found), name="header auth")

    @staticmethod
    def _request_target(found: "_Found") -> bytes:
        _, _, path, query, _ = found
        return path + (b"?" + query if query else b"")

    async def _after_verification(self, pending: Awaitable[Outcome], found: "_Found") -> None:
        try:
            outcome = await pending
        except Exception:
            log.exception("verifying a header auth failed")
            self.local(500, "Internal error", "The credential could not be checked.")
            return
        if self.done:
            return
        if isinstance(outcome, Admit):
            self._forward(found, outcome)
        else:
            self.refuse(outcome)

    def _forward(self, found: "_Found", admitted: Admit | None) -> None:
        """Send the request to the target ``found`` names (``admitted``: its identity)."""
        service, match, path, query, port = found
        target = match.target
        if target.options.path_rewrite is PathRewrite.STRIP and match.prefix != "/":
            rest = path[len(match.prefix.rstrip("/")) :]
            path = rest if rest.startswith(b"/") else b"/" + rest
        self.target_path = path + (b"?" + query if query else b"")
        upstream_host = (
            self.public_authority if service.route.pass_host_header else target.authority.encode()
        )
        self.head = h.request_head(
            self.method,
            self.target_path,
            self.headers,
            host=upstream_host,
            client_ip=self.conn.client[0],
            public_host=self.public_authority,
            public_port=port or 443,
            chunked=self.chunked_in,
            upgrade=self.upgrade,
            custom_headers=target.options.custom_headers,
            drop=service.auth_strip,
            # for every service: a browser may still hold one from when the service had auth
            strip_session=True,
            extra=admitted.extra if admitted is not None else (),
        )
        if admitted is not None:
            self.auth = admitted.label
        self._send(self.conn.ctx.pool_for(target), target)

    def _to_gateway(
        self, service_id: str | None, path: bytes, query: bytes, port: int | None
    ) -> None:
        """Forward the request as it is (path, query, public Host) to the auth gateway."""
        auth = self.conn.ctx.auth
        gateway = auth.gateway
        if gateway is None:
            self.local(503, "Login unavailable", "This edge has no auth gateway configured.")
            return
        self.path_route = PathRoute("/", "/", gateway)
        self.target_path = path + (b"?" + query if query else b"")
        self.head = h.request_head(
            self.method,
            self.target_path,
            self.headers,
            host=self.public_authority,
            client_ip=self.conn.client[0],
            public_host=self.public_authority,
            public_port=port or 443,
            chunked=self.chunked_in,
            upgrade=self.upgrade,
            custom_headers=(),
            extra=((_SERVICE_ID, service_id.encode()),) if service_id else (),
        )
        self._send(self.conn.ctx.gateway_pool(gateway), gateway)

    def _send(self, pool: UpstreamPool, target: RouteTarget) -> None:
        self.pool = pool
        if self.request_done:
            self.conn.set_deadline(Deadline.UPSTREAM, target.options.request_timeout_s)
        else:
            # an upload in progress: idle, not a total; request_timeout counts once it is sent
            self.conn.set_deadline(Deadline.STREAM, None)
        upstream = pool.take_idle()
        if upstream is not None:
            self.attach(upstream)
        else:
            spawn(self._connect(pool), name=f"upstream {pool.name}")

    def _target_parts(self) -> tuple[bytes, bytes, bytes | None] | None:
        """(path, query, authority from an absolute-form target or None); None: answered."""
        url = self.url
        if url.startswith(b"/"):
            path, _, query = url.partition(b"?")
            return path, query, None
        try:
            parsed = httptools.parse_url(url)
        except httptools.HttpParserInvalidURLError:
            parsed = None
        if parsed is None or parsed.host is None:
            self.local(400, "Bad request", "The request target must be a path or an absolute URL.")
            return None
        authority = parsed.host + (b":%d" % parsed.port if parsed.port else b"")
        return parsed.path or b"/", parsed.query or b"", authority

    def _route(self) -> "_Found | None":  # noqa: PLR0911  (one early answer per way a request can be wrong)
        """The service and target for this request; None when it was answered here."""
        parts = self._target_parts()
        if parts is None:
            return None
        path, query, authority = parts
        hosts = [value for name, value in self.headers if name == b"host"]
        if len(hosts) > 1 or (self.http11 and not hosts):
            self.local(400, "Bad request", "An HTTP/1.1 request needs exactly one Host header.")
            return None
        # RFC 9112 §3.2.2: an absolute-form target's authority wins over Host
        host_value = authority if authority is not None else (hosts[0] if hosts else b"")
        host, port = _split_host(host_value)
        if not host:
            self.local(400, "Bad request", "The Host header is not a valid host name.")
            return None
        self.host = host
        self.public_authority = host_value.strip()
        service = self.conn.ctx.table.http.get(host)
        sni = self.conn.sni
        if sni is not None and sni != host:
            detail = f"This connection was opened for {sni}; it cannot serve {host}."
            self.local(421, "Misdirected request", detail)
            return None
        if service is None and host == self.conn.ctx.auth.auth_domain:
            self._to_gateway(None, path, query, port)
            return None
        if service is None:
            self.local(404, "Service not found", f"No service is published at {host}.")
            return None
        if sni is None and self.conn.tls:
            detail = f"{host} is served over TLS with SNI: connect with the server name {host}."
            self.local(421, "Misdirected request", detail)
            return None
        if path.startswith(_AUTH_PREFIX):
            self._to_gateway(service.route.id, path, query, port)
            return None
        path_text = path.decode("latin-1")
        match = service.match(path_text)
        if match is None:
            self.local(404, "Not found", f"{host} has no target for the path {path_text}.")
            return None
        self.path_route = match
        return service, match, path, query, port

    async def _connect(self, pool: UpstreamPool) -> None:
        try:
            upstream = await acquire(pool, self.conn.client)
        except TunnelError as exc:
            self.tunnel_failed(exc)
            return
        except (OSError, TimeoutError) as exc:
            self.local(
                502,
                "Bad gateway",
                f"Could not connect to the target {pool.target.authority}: {exc}",
            )
            return
        except PoolFullError as exc:  # the target left the routing table, or shutdown
            self.local(503, "Service unavailable", str(exc))
            return
        except Exception as exc:
            log.exception("connecting to a target failed", target=pool.name)
            self.local(502, "Bad gateway", f"Could not connect to the target: {exc}")
            return
        if self.done:
            pool.release(upstream, asyncio.get_running_loop().time())
            return
        if upstream.closed:  # handed over by a waiter, but gone meanwhile: the same as lost
            self.upstream = upstream
            self.upstream_lost(None)
            return
        self.attach(upstream)

    def tunnel_failed(self, exc: TunnelError) -> None:
        if exc.status is ForwardStatus.CONNECT_TIMEOUT:
            self.local(504, "Gateway timeout", exc.message)
        elif exc.status is ForwardStatus.CONNECTION_REFUSED:
            self.local(502, "Service unavailable", exc.message)
        elif exc.status is ForwardStatus.UNREACHABLE:
            self.local(502, "Peer not connected", exc.message)
        else:
            self.local(502, "Bad gateway", exc.message)

    def attach(self, upstream: UpstreamConnection) -> None:
        if self.done:
            assert self.pool is not None
            self.pool.release(upstream, asyncio.get_running_loop().time())
            return
        self.upstream = upstream
        upstream.bind(self)
        chunks = [self.head]
        for data in self.body_buffer:
            chunks += (b"%x\r\n" % len(data), data, b"\r\n") if self.chunked_in else (data,)
        if self.request_done and self.chunked_in:
            chunks.append(b"0\r\n\r\n")
        self.body_buffer = []
        if self.buffered:
            self.buffered = 0
            self.conn.resume_reading("buffer")
        assert upstream.transport is not None
        upstream.transport.writelines(chunks)

    # --- answers made here
    def local(self, status: int, title: str, detail: str) -> None:
        """Answer with the edge's own page (if nothing was sent yet) and finish."""
        if self.done:
            return
        if self.head_sent:
            self.conn.abort()
            self.finish(keep_alive=False)
            return
        keep_alive = self.keep_alive and self.request_done and self.upgrade is None
        self.status = status
        self.head_sent = True
        data = page(status, title, detail, keep_alive=keep_alive, head_only=self.method == b"HEAD")
        self.bytes_out += len(data)
        self.conn.write(data)
        self.drop_upstream()
        self.finish(keep_alive=keep_alive)

    def refuse(self, refusal: Refusal) -> None:
        """Answer an unauthenticated request with the edge's own 302, 401 (…) and finish."""
        if self.done:
            return
        keep_alive = self.keep_alive and self.request_done and self.upgrade is None
        self.status = refusal.status
        self.auth = refusal.reason
        self.head_sent = True
        data = refusal.render(keep_alive=keep_alive, head_only=self.method == b"HEAD")
        self.bytes_out += len(data)
        self.conn.write(data)
        self.finish(keep_alive=keep_alive)

    def timed_out(self) -> None:
        assert self.path_route is not None
        timeout = self.path_route.target.options.request_timeout_s
        seconds = timeout or self.conn.ctx.limits.request_timeout_s
        self.local(
            504,
            "Gateway timeout",
            f"The target {self.path_route.target.authority} did not answer within {seconds:g} s.",
        )

    def drop_upstream(self) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.abort()

    # --- the response side (ResponseSink)
    def upstream_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], http11: bool
    ) -> None:
        conn = self.conn
        if status == 101 and self.upgrade is not None:
            self.switching = True
            self.status = 101
            self.head_sent = True
            data = h.switching_head(reason, headers, self.upgrade)
            self.bytes_out += len(data)
            conn.write(data)
            return
        if status < 200:
            if self.http11 and status != 101:
                conn.write(h.informational_head(status, reason, headers))
            return
        self.status = status
        if self.upgrade is not None or not self.request_done:
            # past an upgrade the client's parser reads no next request; an answer before the
            # whole request arrived ends the connection (where the next request starts is lost)
            self.close_after = True
        framing = self._response_framing(status, headers, http11=http11)
        connection = None
        if not self.keep_alive or self.close_after:
            connection = b"close"
            self.close_after = True
        elif not self.http11:
            connection = b"keep-alive"
        data = h.response_head(
            status, reason, headers, framing=framing, connection=connection,
            location_rewrite=self._location_rewrite(),
        )  # fmt: skip
        self.head_sent = True
        self.bytes_out += len(data)
        conn.set_deadline(Deadline.STREAM, None)
        conn.write(data)
        if self.method == b"HEAD":
            # the parser cannot know a HEAD answer has no body (it waits for content-length
            # bytes): the exchange ends here and the connection is not reused
            self.upstream_reusable = False
            self.upstream_complete()

    def _response_framing(
        self, status: int, headers: list[tuple[bytes, bytes]], *, http11: bool
    ) -> bytes | None:
        """How the body reaches the client: as framed by the target (``content-length``),
        re-chunked (``chunked``, returned), or delimited by closing the connection (HTTP/1.0
        clients); and whether the target's connection can be reused afterwards."""
        has_body = self.method != b"HEAD" and status not in (204, 304)
        chunked = content_length = closing = False
        for name, value in headers:
            if name == b"transfer-encoding":
                # chunked only if it is the last coding; otherwise the body ends with the close
                chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
            elif name == b"content-length":
                content_length = True
            elif name == b"connection" and b"close" in value.lower():
                closing = True
        self.upstream_close_delimited = has_body and not chunked and not content_length
        self.upstream_reusable = http11 and not closing and not self.upstream_close_delimited
        if not has_body or content_length:
            return None
        if self.http11:
            self.chunked_out = True
            return b"chunked"
        self.close_after = True
        return None

    def _location_rewrite(self) -> h.LocationRewrite | None:
        route = self.path_route
        service = self.conn.ctx.table.http.get(self.host)
        if route is None or service is None or not service.route.rewrite_redirects:
            return None
        stripped = b""
        if route.target.options.path_rewrite is PathRewrite.STRIP:
            stripped = route.prefix.rstrip("/").encode("latin-1")
        return h.LocationRewrite([route.target.authority], self.public_authority, stripped)

    def upstream_body(self, data: bytes) -> None:
        if self.done:
            return
        self.bytes_out += len(data)
        # one buffer per write: a TLS transport makes a record of each piece it is given
        self.conn.write(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked_out else data)

    def cork(self) -> None:
        self.conn.cork()

    def uncork(self) -> None:
        self.conn.uncork()

    def upstream_complete(self) -> None:
        if self.done or self.switching or not self.head_sent or self.status < 200:
            return
        if self.chunked_out:
            self.conn.write(b"0\r\n\r\n")
        self.response_done = True
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.finished(reusable=self.upstream_reusable and self.request_done)
        keep_alive = self.keep_alive and not self.close_after and self.request_done
        self.finish(keep_alive=keep_alive)

    def upstream_upgraded(self, rest: bytes) -> None:
        if not self.switching:
            self.local(502, "Bad gateway", "The target switched protocols without being asked to.")
            return
        self.conn.upgraded(self, rest)

    def upstream_raw(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.conn.write(data)

    def upstream_lost(self, exc: Exception | None) -> None:
        if self.done:
            return
        upstream, self.upstream = self.upstream, None
        if self.switching:
            self.conn.close()
            self.finish(keep_alive=False)
            return
        if self.head_sent:
            if self.upstream_close_delimited and exc is None:
                self.upstream_complete()  # the end of the connection is the end of the body
            else:
                self.conn.abort()  # a cut response must not look complete
                self.finish(keep_alive=False)
            return
        if (
            upstream is not None
            and upstream.reused
            and not upstream.received
            and not self.retried
            and not self.chunked_in
            and not self.content_length
            and self.method in IDEMPOTENT  # RFC 9110 §9.2.2: never replay a POST
        ):
            # a kept-alive connection the target had closed as we reused it: try a fresh one
            self.retried = True
            assert self.pool is not None
            spawn(self._connect(self.pool), name=f"upstream retry {self.pool.name}")
            return
        assert self.path_route is not None
        self.local(
            502,
            "Bad gateway",
            f"The target {self.path_route.target.authority} closed the connection "
            "without answering.",
        )

    def upstream_pause_writing(self) -> None:
        self.conn.pause_reading("upstream")

    def upstream_resume_writing(self) -> None:
        self.conn.resume_reading("upstream")

    def finish(self, *, keep_alive: bool) -> None:
        if self.done:
            return
        self.done = True
        if self.buffered:  # answered before it had a target: what waited is discarded
            self.buffered = 0
            self.body_buffer = []
            self.conn.resume_reading("buffer")
        self.conn.resume_reading("upstream")
        self.conn.exchange_finished(self, keep_alive=keep_alive)


class HttpConnection(asyncio.Protocol):
    """A client connection (TLS already terminated, or plain): parse, route, answer in order."""

    def __init__(self, ctx: ProxyContext, *, sni: str | None, tls: bool) -> None:
        self.ctx = ctx
        self.sni = sni
        self.tls = tls
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] = ("0.0.0.0", 0)  # noqa: S104  (a placeholder address, not a bind)
        self.parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._parsing: Exchange | None = None
        self._active: Exchange | None = None
        self._queue: deque[Exchange] = deque()
        self._paused: set[str] = set()
        self._raw: Exchange | None = None  # upgraded: bytes go straight to its upstream
        self._upgrade_rest = b""
        self._closing = False
        self._starting = False  # exchange_finished is starting queued exchanges
        self._refusal: bytes | None = None  # the 400/431 to send once the queue is answered
        self._corked: list[bytes] | None = None
        self._timeouts = (
            0.0,
            ctx.limits.keepalive_timeout_s,
            ctx.limits.header_timeout_s,
            ctx.limits.request_timeout_s,
            ctx.limits.stream_idle_timeout_s,
        )
        self._reading_head = False
        self._client_eof = False
        self.deadline = 0.0
        self.deadline_kind = Deadline.NONE
        self._stream_bytes = -1

    @property
    def busy(self) -> bool:
        """An exchange (or an upgraded stream) is in flight."""
        return self._active is not None or self._raw is not None

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.client = (str(peer[0]), int(peer[1]))
        self.ctx.connections.add(self)
        self.set_deadline(Deadline.HEADERS, None)

    def data_received(self, data: bytes) -> None:
        raw = self._raw
        if raw is not None:
            raw.bytes_in += len(data)
            if raw.upstream is not None:
                raw.upstream.write(data)
            return
        if self._closing or self._refusal is not None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if not self._closing:  # kept for the target only if it agrees to switch
                self._upgrade_rest += data[exc.args[0] :]
        except _HeadTooLargeError:
            self._refuse(431, "Request header fields too large", self._too_large_detail())
        except httptools.HttpParserError as exc:
            if isinstance(exc.__cause__, _HeadTooLargeError) or isinstance(
                exc.__context__, _HeadTooLargeError
            ):
                self._refuse(431, "Request header fields too large", self._too_large_detail())
            else:
                self._refuse(400, "Bad request", f"The request is malformed: {exc}.")

    def eof_received(self) -> bool | None:
        if self._raw is not None and self._raw.upstream is not None:
            transport = self._raw.upstream.transport
            if transport is not None and transport.can_write_eof():
                transport.write_eof()
            return True
        if self._active is not None and not self._active.request_done:
            return None  # the client gave up mid-request: close
        if self._active is None:
            return None
        self._client_eof = True  # answer what was asked, then close
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.ctx.connections.discard(self)
        self._closing = True
        for exchange in (self._active, self._raw, *self._queue):
            if exchange is not None and (not exchange.done or exchange is self._raw):
                exchange.drop_upstream()
                exchange.done = True
        self._queue.clear()
        self._active = self._raw = None
        self.transport = None

    def pause_writing(self) -> None:
        active = self._active or self._raw
        if active is not None and active.upstream is not None:
            transport = active.upstream.transport
            if transport is not None:
                transport.pause_reading()

    def resume_writing(self) -> None:
        active = self._active or self._raw
        if active is not None and active.upstream is not None:
            transport = active.upstream.transport
            if transport is not None and not transport.is_closing():
                transport.resume_reading()

    # --- httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._reading_head = True
        if self._active is None:
            self.set_deadline(Deadline.HEADERS, None)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > self.ctx.limits.max_header_bytes:
            raise _HeadTooLargeError

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._parsing is not None:
            # a trailer of a chunked body: counted, not forwarded
            if self._head_bytes > self.ctx.limits.max_header_bytes:
                raise _HeadTooLargeError
            return
        self._headers.append((name.lower(), value))
        limits = self.ctx.limits
        if self._head_bytes > limits.max_header_bytes or len(self._headers) > limits.max_headers:
            raise _HeadTooLargeError

    def on_headers_complete(self) -> None:
        self._reading_head = False
        if self._closing:
            return
        parser = self.parser
        exchange = Exchange(self, parser.get_method(), self._url)
        exchange.headers = self._headers
        exchange.http11 = parser.get_http_version() == "1.1"
        exchange.keep_alive = parser.should_keep_alive()
        for name, value in self._headers:
            if name == b"transfer-encoding":
                exchange.chunked_in = True
            elif name == b"content-length":
                exchange.content_length = int(value)
            elif name == b"upgrade" and parser.should_upgrade():
                exchange.upgrade = value
        if parser.should_upgrade() and exchange.upgrade is None:
            exchange.keep_alive = False  # CONNECT: not relayed; nothing after it is parsed
        self._parsing = exchange
        if self._active is None and not self._starting:
            self._active = exchange
            exchange.start()
        else:
            self._queue.append(exchange)
            if len(self._queue) >= MAX_PIPELINED:
                self.pause_reading("pipeline")

    def on_body(self, body: bytes) -> None:
        if self._parsing is not None:
            self._parsing.request_body(body)

    def on_message_complete(self) -> None:
        exchange, self._parsing = self._parsing, None
        if exchange is not None:
            exchange.request_complete()

    # --- used by exchanges
    def write(self, data: bytes) -> None:
        corked = self._corked
        if corked is not None:
            corked.append(data)
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def cork(self) -> None:
        """Collect writes until ``uncork``: a response's head, body and end that arrive in one
        read from the target leave in one write (one TLS record, one send) instead of three."""
        if self._corked is None:
            self._corked = []

    def uncork(self) -> None:
        corked, self._corked = self._corked, None
        if corked:
            self.write(corked[0] if len(corked) == 1 else b"".join(corked))

    def pause_reading(self, reason: str) -> None:
        if not self._paused and self.transport is not None:
            self.transport.pause_reading()
        self._paused.add(reason)

    def resume_reading(self, reason: str) -> None:
        self._paused.discard(reason)
        if not self._paused and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def set_deadline(self, kind: Deadline, timeout_s: float | None) -> None:
        self.deadline_kind = kind
        self.deadline = time.monotonic() + (timeout_s or self._timeouts[kind])
        self._stream_bytes = -1

    def check_deadline(self, now: float) -> None:
        """Called by the sweeper (``now`` from the loop's clock, which is monotonic)."""
        kind = self.deadline_kind
        if kind is Deadline.NONE:
            return
        now = time.monotonic()
        if kind is Deadline.STREAM:
            exchange = self._raw or self._active
            moved = exchange.bytes_in + exchange.bytes_out if exchange is not None else 0
            if moved != self._stream_bytes:
                self._stream_bytes = moved
                self.deadline = now + self.ctx.limits.stream_idle_timeout_s
                return
        if now < self.deadline:
            return
        if kind is Deadline.KEEPALIVE:
            self.close()
        elif kind is Deadline.HEADERS:
            limit = self.ctx.limits.header_timeout_s
            self._refuse(408, "Request timeout", f"The request was not sent within {limit:g} s.")
        elif kind is Deadline.UPSTREAM and self._active is not None:
            self._active.timed_out()
        else:
            log.info("stream idle, closing", client=self.client[0])
            self.abort()

    def exchange_finished(self, exchange: Exchange, *, keep_alive: bool) -> None:
        self._log(exchange)
        if exchange is self._active:
            self._active = None
        if not exchange.switching:
            self._upgrade_rest = b""
        if not keep_alive:
            self.close()
            return
        if self._starting:
            return  # answered while the loop below started it: the loop goes on
        # a loop, not a recursion: pipelined requests the edge answers itself finish inside
        # ``start``, and a few hundred of them must not exhaust the stack
        self._starting = True
        try:
            while self._active is None and self._queue and not self._closing:
                nxt = self._queue.popleft()
                if len(self._queue) < MAX_PIPELINED:
                    self.resume_reading("pipeline")
                self._active = nxt
                nxt.start()
        finally:
            self._starting = False
        if self._active is not None or self._closing:
            return
        if self._refusal is not None:
            refusal, self._refusal = self._refusal, None
            self.write(refusal)
            self.close()
        elif self._client_eof:
            self.close()
        elif self._parsing is None and not self._reading_head:
            self.set_deadline(Deadline.KEEPALIVE, None)
        else:
            self.set_deadline(Deadline.HEADERS, None)

    def upgraded(self, exchange: Exchange, rest: bytes) -> None:
        """The target agreed to switch protocols: from now on bytes go through as they are."""
        self._raw = exchange
        self._active = None
        self.set_deadline(Deadline.STREAM, None)
        if rest:
            self.write(rest)
            exchange.bytes_out += len(rest)
        if self._upgrade_rest and exchange.upstream is not None:
            exchange.upstream.write(self._upgrade_rest)
            exchange.bytes_in += len(self._upgrade_rest)
        self._upgrade_rest = b""
        self._log(exchange)

    def close(self) -> None:
        self.uncork()  # what was written goes out before the close
        self._closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    def _refuse(self, status: int, title: str, detail: str) -> None:
        """A request that cannot be parsed: answer it and close — after the requests before it
        (pipelined) have their answers, so that no answer lands in another's place."""
        log.info("request refused", client=self.client[0], status=status, reason=detail)
        refusal = page(status, title, detail, keep_alive=False)
        if self._active is not None or self._queue:
            self._refusal = refusal  # written when the last of them finishes
            self.pause_reading("refused")
            return
        self.write(refusal)
        self.close()

    def _too_large_detail(self) -> str:
        limits = self.ctx.limits
        return (
            f"The request's headers exceed {limits.max_header_bytes} bytes "
            f"or {limits.max_headers} fields."
        )

    def _log(self, exchange: Exchange) -> None:
        access = self.ctx.access
        if not access.enabled:
            return
        target = exchange.path_route.target.id if exchange.path_route is not None else None
        extra = {} if exchange.auth is None else {"auth": exchange.auth}
        access.info(
            "request",
            client=self.client[0],
            method=exchange.method.decode("latin-1"),
            host=exchange.host,
            path=exchange.url[:512].decode("latin-1").partition("?")[0],
            status=exchange.status,
            target=target,
            bytes_in=exchange.bytes_in,
            bytes_out=exchange.bytes_out,
            duration_ms=round((time.monotonic() - exchange.started) * 1000, 1),
            **extra,
        )
