"""TLS services on the edge's main port: passed through by SNI, next to HTTP services.

The client verifies the *backend's* certificate (a CA the edge knows nothing of): proof that the
edge terminated nothing. With ``proxy_protocol`` the backend reads the client's address from a
PROXY v2 header written before the client's first byte.
"""

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
import trustme
from edge_harness import DOMAIN, Pki, RawClient, backend_process, http_route, running_edge, target

from heron_agent.allowed import AllowedTarget, AllowedTargets
from heron_agent.forwarder import Forwarder
from heron_core.types import ServiceMode
from heron_edge.dataplane import DataPlane
from heron_edge.routes import Route, RouteTarget
from heron_tunnel import proxy_protocol
from heron_tunnel.header import Protocol

SECURE = "secure.example.test"


@pytest.fixture(scope="module")
def backend_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_backend(backend_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    directory = tmp_path_factory.mktemp("backend-tls")
    issued = backend_ca.issue_cert(SECURE)
    issued.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    issued.private_key_pem.write_to_path(str(directory / "key.pem"))
    with backend_process("--tls", str(directory / "cert.pem"), str(directory / "key.pem")) as port:
        yield port


@pytest.fixture(scope="module")
def http_backend() -> Iterator[int]:
    with backend_process() as port:
        yield port


@pytest_asyncio.fixture
async def proxied_backend() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TCP backend that expects a PROXY v2 header and answers with the source it names."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        header = proxy_protocol.parse(data)
        while isinstance(header, proxy_protocol.NeedMore):
            data += await reader.read(header.at_least - len(data))
            header = proxy_protocol.parse(data)
        seen.append(data[: header.size])
        writer.write(f"{header.source}\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], seen
    server.close()
    await server.wait_closed()


@pytest_asyncio.fixture
async def forwarder(
    tls_backend: int, http_backend: int, proxied_backend: tuple[int, list[bytes]]
) -> AsyncIterator[Forwarder]:
    ports = (tls_backend, http_backend, proxied_backend[0])
    fwd = Forwarder(AllowedTargets([AllowedTarget.of("127.0.0.1", p, Protocol.TCP) for p in ports]))
    await fwd.start("127.0.0.1", 0)
    yield fwd
    await fwd.close(grace_s=1.0)


def tls_route(domain: str, targets: list[RouteTarget], route_id: str) -> Route:
    return Route(route_id, "acc_1", domain, ServiceMode.TLS, 0, tuple(targets))


@pytest_asyncio.fixture
async def edge(
    forwarder: Forwarder, tls_backend: int, http_backend: int,
    proxied_backend: tuple[int, list[bytes]],
) -> AsyncIterator[tuple[DataPlane, Pki]]:  # fmt: skip
    pki = Pki()
    routes = [
        tls_route(SECURE, [target(forwarder, tls_backend, path="")], "svc_tls"),
        tls_route(
            "pp.example.test",
            [target(forwarder, proxied_backend[0], path="", proxy_protocol=True)],
            "svc_pp",
        ),
        http_route([target(forwarder, http_backend)]),
    ]
    async with running_edge(pki, routes) as plane:
        yield plane, pki


async def test_tls_is_passed_through_to_the_backends_own_certificate(
    edge: tuple[DataPlane, Pki], backend_ca: trustme.CA
) -> None:
    plane, pki = edge
    context = ssl.create_default_context()
    backend_ca.configure_trust(context)  # the backend's CA only: the edge's would not verify
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", plane.main_port, ssl=context, server_hostname=SECURE
    )
    writer.write(f"GET /through HTTP/1.1\r\nHost: {SECURE}\r\nConnection: close\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 10)
    assert answer.startswith(b"HTTP/1.1 200")
    assert b'"raw_path": "/through"' in answer
    writer.close()
    with contextlib.suppress(ssl.SSLError, ConnectionError):
        await writer.wait_closed()
    # an HTTP service on the same port is still terminated by the edge
    client = await RawClient.open(plane, pki)
    client.send(f"GET / HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n".encode())
    assert (await client.response()).status == 200
    await client.close()


async def test_the_backend_reads_the_client_from_a_proxy_v2_header(
    edge: tuple[DataPlane, Pki], proxied_backend: tuple[int, list[bytes]]
) -> None:
    plane, _ = edge
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", plane.main_port)
    # a ClientHello for pp.example.test: the backend answers in clear before any handshake
    hello = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), hello, server_hostname="pp.example.test")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    writer.write(hello.read())
    line = await asyncio.wait_for(reader.readline(), 10)
    local_port = writer.get_extra_info("sockname")[1]
    assert line.decode().strip() == str(("127.0.0.1", local_port))
    _, seen = proxied_backend
    parsed = proxy_protocol.parse(seen[-1])
    assert isinstance(parsed, proxy_protocol.ProxyHeader)
    assert parsed.destination == ("127.0.0.1", plane.main_port)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
