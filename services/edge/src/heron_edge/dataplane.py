"""The data plane of one process: the main port's SNI router, TLS termination, port 80, and
the L4 services' own ports.

The main port accepts raw connections and peeks at the TLS ClientHello without consuming it
(``heron_edge.tls.peek``): an SNI of a TLS service is passed through untouched
(``heron_edge.l4``); otherwise the SNI picks the certificate, and the socket is handed to the
event loop's TLS with the bytes still queued in the kernel. A connection that is not TLS gets a
plain-text 400 saying to use https://. A ClientHello that offers only ``acme-tls/1`` is an ACME
tls-alpn-01 validation (RFC 8737): it gets the challenge certificate for its name and the
connection ends with the handshake; with no answer for that name, it is closed at once.

Port 80 answers ACME http-01 challenges (``/.well-known/acme-challenge/<token>``) and
redirects every other request to HTTPS.

Listeners are bound with ``SO_REUSEPORT`` so several worker processes, each with its own
``DataPlane``, share the ports and the kernel spreads connections across them.
"""

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any, cast

import httptools
import structlog

from heron_core.auth import SigningKeyRecord
from heron_core.tasks import spawn
from heron_edge.acceptor import Acceptor, bind_listener, plain
from heron_edge.address import Address
from heron_edge.certs.contexts import ServerContexts
from heron_edge.certs.snapshot import CertificateSnapshot
from heron_edge.challenges import ACME_ONLY_ALPN, ChallengeAnswers, ChallengeResponder
from heron_edge.http.pages import page, redirect, text
from heron_edge.http.proxy import HttpConnection, ProxyContext
from heron_edge.l4.context import L4Context
from heron_edge.l4.listeners import L4Listeners
from heron_edge.l4.tcp import relay_connection
from heron_edge.routes import RoutingTable
from heron_edge.tls.clienthello import NotTls
from heron_edge.tls.peek import PeekError, peek_client_hello

log = structlog.get_logger(__name__)

TLS_HANDSHAKE_TIMEOUT_S = 10.0
#: RFC 8555 §8.3: where the CA fetches an http-01 key authorization, on port 80
ACME_CHALLENGE_PATH = b"/.well-known/acme-challenge/"


def check_free(address: Address) -> None:
    """Raise ``OSError`` if something else holds ``address``: binding without ``SO_REUSEPORT``
    fails then, where the workers' ``SO_REUSEPORT`` binds could silently share it with an old
    edge still running."""
    bind_listener(address, reuse_port=False).close()


class DataPlane:
    """The public listeners of one process and what they serve."""

    def __init__(
        self,
        ctx: ProxyContext,
        *,
        main: Address,
        http: Address | None,
        reuse_port: bool = True,
        peek_timeout_s: float = 10.0,
        l4: L4Context | None = None,
        serve_udp: bool = True,
        health_port: int | None = None,
    ) -> None:
        self.ctx = ctx
        self.l4ctx = l4 or L4Context()
        self.contexts = ServerContexts()
        self.challenges = ChallengeResponder()
        self._main_address = main
        self._http_address = http
        self._reuse_port = reuse_port
        self._peek_timeout_s = peek_timeout_s
        self._health_port = health_port
        self._main: Acceptor | None = None
        self._http_server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self.l4 = L4Listeners(self.l4ctx, main.host, reuse_port=reuse_port, serve_udp=serve_udp)

    @property
    def main_port(self) -> int:
        assert self._main is not None
        return self._main.port

    @property
    def http_port(self) -> int | None:
        if self._http_server is None:
            return None
        port: int = self._http_server.sockets[0].getsockname()[1]
        return port

    def apply(self, kind: str, payload: object) -> bool:
        """Apply one message of the control process (``WorkerPool.publish``'s kinds); False
        for a kind this plane does not know."""
        if kind == "table":
            self.apply_table(cast("RoutingTable", payload))
        elif kind == "certificates":
            self.apply_certificates(cast("CertificateSnapshot", payload))
        elif kind == "challenges":
            self.apply_challenges(cast("ChallengeAnswers", payload))
        elif kind == "auth_keys":
            self.apply_auth_keys(cast("Iterable[SigningKeyRecord]", payload))
        else:
            return False
        return True

    def apply_table(self, table: RoutingTable) -> None:
        self.ctx.set_table(table)
        self.l4.apply(table)

    def apply_certificates(self, snapshot: CertificateSnapshot) -> None:
        self.contexts.update(snapshot)

    def apply_challenges(self, answers: ChallengeAnswers) -> None:
        self.challenges.update(answers)

    def apply_auth_keys(self, records: Iterable[SigningKeyRecord]) -> None:
        """The gateway's current public session keys (the ``auth_keys`` bucket)."""
        self.ctx.auth.set_keys(records)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._main = Acceptor(
            bind_listener(self._main_address, reuse_port=self._reuse_port), self._on_connection
        )
        if self._http_address is not None:
            sock = bind_listener(self._http_address, reuse_port=self._reuse_port)
            self._http_server = await loop.create_server(
                lambda: RedirectConnection(self), sock=sock
            )
        self._sweeper = spawn(self.ctx.run_sweeper(), name="http sweeper")
        reserved = {self.main_port: "main port"}
        if self.http_port is not None:
            reserved[self.http_port] = "HTTP port"
        if self._health_port is not None:
            reserved[self._health_port] = "health port"
        self.l4.start(reserved)
        log.info(
            "listening",
            main=str(self._main_address.__class__(self._main_address.host, self.main_port)),
            http=self.http_port,
        )

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting, let exchanges in flight finish for ``grace_s``, then close."""
        loop = asyncio.get_running_loop()
        if self._main is not None:
            self._main.close()
        if self._http_server is not None:
            self._http_server.close()
        deadline = loop.time() + grace_s
        l4_stopped = spawn(self.l4.stop(grace_s), name="l4 stop")
        # a short poll: connections finish in callbacks, and an event per exchange would cost
        # every request something for the benefit of shutdown only
        while any(conn.busy for conn in self.ctx.connections) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._handshakes):
            task.cancel()
        await l4_stopped
        self.ctx.close()

    # --- the main port
    def _on_connection(self, sock: socket.socket, peer: Any) -> None:
        task = spawn(self._route(sock, plain(peer)), name="sni router")
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _route(self, sock: socket.socket, client: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        try:
            hello = await peek_client_hello(loop, sock, timeout_s=self._peek_timeout_s)
        except PeekError as exc:
            log.debug("connection dropped before its ClientHello", reason=str(exc))
            sock.close()
            return
        if isinstance(hello, NotTls):
            await self._refuse_plaintext(sock)
            return
        sni = hello.server_name
        passthrough = self.ctx.table.tls.get(sni) if sni is not None else None
        if passthrough is not None:
            relay_connection(self.l4ctx, passthrough, sock, client, self.main_port)
            return
        # after pass-through: a TLS service's own server may answer its own ACME validations
        if hello.alpn == ACME_ONLY_ALPN:
            await self._answer_tls_alpn01(sock, sni)
            return
        await _terminate_tls(
            sock,
            sni,
            self.contexts.context_for(sni),
            lambda: HttpConnection(self.ctx, sni=sni, tls=True),
        )

    async def _answer_tls_alpn01(self, sock: socket.socket, sni: str | None) -> None:
        """RFC 8737 §3: the challenge certificate with ``acme-tls/1`` selected, then the end."""
        context = self.challenges.tls_alpn01_context(sni)
        if context is None:
            log.info("tls-alpn-01 validation with no answer, closed", sni=sni)
            sock.close()
            return
        if await _terminate_tls(sock, sni, context, _CloseAfterHandshake):
            log.info("tls-alpn-01 challenge answered", sni=sni)

    async def _refuse_plaintext(self, sock: socket.socket) -> None:
        """Plain HTTP on the TLS port: say so in a way a person and a script understand."""
        loop = asyncio.get_running_loop()
        data = page(
            400,
            "This port speaks HTTPS",
            "The request was sent in plain HTTP to the edge's TLS port: use an https:// URL.",
            keep_alive=False,
        )
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(2.0):
                await loop.sock_sendall(sock, data)
                # closing with the request still unread would reset the connection and could
                # destroy the answer before the client reads it: finish sending, then drain
                sock.shutdown(socket.SHUT_WR)
                while await loop.sock_recv(sock, 65536):
                    pass
        sock.close()


async def _terminate_tls(
    sock: socket.socket,
    sni: str | None,
    context: ssl.SSLContext,
    protocol: Callable[[], asyncio.Protocol],
) -> bool:
    """Hand ``sock`` to the event loop's TLS; False (the socket closed) if the handshake fails."""
    try:
        await asyncio.get_running_loop().connect_accepted_socket(
            protocol, sock, ssl=context, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S
        )
    except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
        log.debug("TLS handshake failed", sni=sni, error=str(exc))
        sock.close()
        return False
    return True


class _CloseAfterHandshake(asyncio.Protocol):
    """A tls-alpn-01 validation is over once the handshake is: the CA sends nothing more."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class RedirectConnection(asyncio.Protocol):
    """Port 80: ACME http-01 challenges are answered, every other request is sent to the same URL
    over HTTPS."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._host = b""
        self._bytes = 0
        self._timeout: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's are not subclasses
        limit = self._plane.ctx.limits.header_timeout_s
        self._timeout = asyncio.get_running_loop().call_later(limit, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timeout is not None:
            self._timeout.cancel()

    def data_received(self, data: bytes) -> None:
        self._bytes += len(data)
        if self._bytes > self._plane.ctx.limits.max_header_bytes:
            self._answer(
                page(431, "Request too large", "The request is too large.", keep_alive=False)
            )
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # answered in on_headers_complete
        except httptools.HttpParserError as exc:
            self._answer(
                page(400, "Bad request", f"The request is malformed: {exc}.", keep_alive=False)
            )

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"host":
            self._host = value.strip()

    def on_headers_complete(self) -> None:
        if self._url.startswith(ACME_CHALLENGE_PATH):
            self._answer(self._challenge_response())
            return
        host = self._host.decode("latin-1").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if not name:
            self._answer(
                page(400, "Bad request", "A request needs a Host header.", keep_alive=False)
            )
            return
        port = self._plane.main_port
        authority = name if port == 443 else f"{name}:{port}"
        path = self._url.decode("latin-1") if self._url.startswith(b"/") else "/"
        self._answer(redirect(f"https://{authority}{path}", keep_alive=False))

    def _challenge_response(self) -> bytes:
        """The key authorization for the token in the path, whatever the Host (the CA asks by
        the domain being validated, which the routing table may not serve yet)."""
        token = self._url[len(ACME_CHALLENGE_PATH) :].partition(b"?")[0].decode("latin-1")
        method = self._parser.get_method()
        key_authorization = self._plane.challenges.key_authorization(token)
        if key_authorization is None or method not in {b"GET", b"HEAD"}:
            return page(
                404, "No such challenge", "No ACME challenge is pending for this token.",
                keep_alive=False, head_only=method == b"HEAD",
            )  # fmt: skip
        log.info("http-01 challenge answered", token=token)
        return text(200, key_authorization, keep_alive=False, head_only=method == b"HEAD")

    def _answer(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
            transport.close()
