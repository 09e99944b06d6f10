"""An edge data plane in the test's event loop, wired to a real agent forwarder on 127.0.0.1.

Everything is the real code: the agent's ``Forwarder`` (minus WireGuard, which the end-to-end
tests add), the edge's ``DataPlane`` with its SNI router, TLS termination and L7 proxy, and a
real backend process (``http_backend.py``). Certificates come from a trustme CA the clients trust.
"""

import asyncio
import contextlib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import trustme

from heron_agent.allowed import AllowedTarget, AllowedTargets
from heron_agent.forwarder import Forwarder
from heron_core.types import PathRewrite, ServiceMode, TargetProtocol
from heron_edge.address import Address
from heron_edge.certs import load_pair
from heron_edge.certs.snapshot import CertificateSnapshot
from heron_edge.connector import StreamTarget
from heron_edge.dataplane import DataPlane
from heron_edge.http.proxy import HttpLimits, ProxyContext
from heron_edge.l4.context import L4Context, L4Limits
from heron_edge.routes import Route, RouteTarget, RoutingTable, TargetOptions
from heron_tunnel.header import Protocol

BACKEND = Path(__file__).with_name("http_backend.py")
DOMAIN = "app.example.test"


@contextlib.contextmanager
def backend_process(*args: str) -> Iterator[int]:
    """``http_backend.py`` in its own process; yields its port once it accepts."""
    process = subprocess.Popen(
        [sys.executable, str(BACKEND), *args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("PORT "), f"the backend did not start: {line!r}"
        port = int(line.split()[1])
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


@dataclass
class Pki:
    ca: trustme.CA = field(default_factory=trustme.CA)

    def snapshot(self, *names: str) -> CertificateSnapshot:
        issued = self.ca.issue_cert(*(names or (DOMAIN, "*.example.test")))
        chain = b"".join(blob.bytes() for blob in issued.cert_chain_pems)
        pair = load_pair(chain, issued.private_key_pem.bytes(), source="trustme")
        return CertificateSnapshot.build(1, files=[pair])

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


def target(
    forwarder: Forwarder,
    port: int,
    *,
    target_id: str = "tgt_1",
    path: str = "/",
    enabled: bool = True,
    protocol: TargetProtocol = TargetProtocol.HTTP,
    host: str = "",
    transport: Protocol = Protocol.TCP,
    **options: Any,
) -> RouteTarget:
    address, forwarder_port = forwarder.address
    rewrite = options.pop("path_rewrite", PathRewrite.STRIP)
    return RouteTarget(
        id=target_id,
        stream=StreamTarget(
            address, host, port, transport, forwarder_port=forwarder_port, service_id="svc"
        ),
        path=path,
        enabled=enabled,
        protocol=protocol,
        options=TargetOptions(path_rewrite=rewrite, **options),
    )


def http_route(
    targets: Sequence[RouteTarget], *, domain: str = DOMAIN, route_id: str = "svc_1", **flags: Any
) -> Route:
    return Route(route_id, "acc_1", domain, ServiceMode.HTTP, 0, tuple(targets), **flags)


@contextlib.asynccontextmanager
async def running_forwarder(*ports: int) -> AsyncIterator[Forwarder]:
    allowed = AllowedTargets([AllowedTarget.of("127.0.0.1", p, Protocol.TCP) for p in ports])
    forwarder = Forwarder(allowed)
    await forwarder.start("127.0.0.1", 0)
    try:
        yield forwarder
    finally:
        await forwarder.close(grace_s=1.0)


@contextlib.asynccontextmanager
async def running_edge(
    pki: Pki,
    routes: Sequence[Route],
    limits: HttpLimits | None = None,
    l4: L4Limits | None = None,
) -> AsyncIterator[DataPlane]:
    plane = DataPlane(
        ProxyContext(limits=limits or HttpLimits()),
        main=Address("127.0.0.1", 0),
        http=Address("127.0.0.1", 0),
        reuse_port=False,
        l4=L4Context(limits=l4 or L4Limits()),
    )
    plane.apply_certificates(pki.snapshot())
    plane.apply_table(RoutingTable.build(1, routes))
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop(grace_s=0.5)


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class _ResponseReader:
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[Response] = []
        self._headers: list[tuple[str, str]] = []
        self._body = bytearray()

    def on_message_begin(self) -> None:
        self._headers, self._body = [], bytearray()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        self.done.append(Response(status, self._headers, bytes(self._body)))


class RawClient:
    """A TLS connection to the edge that sends bytes as they are and reads responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._responses = _ResponseReader()

    @classmethod
    async def open(
        cls, plane: DataPlane, pki: Pki, server_name: str | None = DOMAIN, *, verify: bool = True
    ) -> "RawClient":
        context = pki.client_context()
        if server_name is None or not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", plane.main_port, ssl=context, server_hostname=server_name
        )
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def responses(self, count: int, timeout_s: float = 10.0) -> list[Response]:
        async with asyncio.timeout(timeout_s):
            while len(self._responses.done) < count:
                data = await self.reader.read(65536)
                if not data:
                    break
                self._responses.parser.feed_data(data)
        got, self._responses.done = self._responses.done[:count], self._responses.done[count:]
        return got

    async def response(self, timeout_s: float = 10.0) -> Response:
        got = await self.responses(1, timeout_s)
        assert got, "the connection closed before a response"
        return got[0]

    async def closed(self, timeout_s: float = 5.0) -> bool:
        """Whether the edge closes the connection (reading until EOF)."""
        try:
            async with asyncio.timeout(timeout_s):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except (ConnectionError, ssl.SSLError):
            return True
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
