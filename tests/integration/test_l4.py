"""L4 services on their own ports: TCP, TLS by SNI with a TCP fallback, UDP sessions.

The edge's ``DataPlane`` and a real agent ``Forwarder`` run in the test's loop on 127.0.0.1
(the end-to-end tests add WireGuard and namespaces); backends are small asyncio servers here.
"""

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
import trustme
from edge_harness import Pki, running_edge, target
from l4_backends import UdpEcho, echo, greet_then_echo, read_proxy_header

from heron_agent.allowed import AllowedTarget, AllowedTargets
from heron_agent.forwarder import Forwarder
from heron_core.types import ServiceMode
from heron_edge.connector import StreamTarget
from heron_edge.dataplane import DataPlane
from heron_edge.l4.context import L4Limits
from heron_edge.routes import Route, RouteTarget, RoutingTable
from heron_tunnel import proxy_protocol
from heron_tunnel.header import Protocol

SECURE = "db.example.test"
WAIT_S = 10.0


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def l4_route(
    route_id: str, mode: ServiceMode, port: int, *targets: RouteTarget, domain: str = ""
) -> Route:
    return Route(route_id, "acc_1", domain or f"{route_id}.example.test", mode, port, targets)


@dataclass
class Backends:
    """TCP servers on 127.0.0.1: echo, a greeter that speaks first, a PROXY v2 reader, TLS."""

    echo: int = 0
    greeter: int = 0
    proxied: int = 0
    tls: int = 0
    udp_echo: int = 0
    dead: int = 0  # nothing listens here
    proxy_headers: list[proxy_protocol.ProxyHeader] = field(default_factory=list)
    ca: trustme.CA = field(default_factory=trustme.CA)

    @property
    def tcp_ports(self) -> list[int]:
        return [self.echo, self.greeter, self.proxied, self.tls, self.dead]


@pytest_asyncio.fixture
async def backends() -> AsyncIterator[Backends]:
    found = Backends(dead=free_port())

    async def greeter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hello from the greeter\n")
        await echo(reader, writer)

    async def proxied(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await read_proxy_header(reader)
        if header is None:
            writer.close()
            return
        found.proxy_headers.append(header)
        assert header.source is not None
        writer.write(f"{header.source[0]}:{header.source[1]}\n".encode())
        await echo(reader, writer)

    issued = found.ca.issue_cert(SECURE)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    issued.configure_cert(server_context)

    servers = [
        await asyncio.start_server(echo, "127.0.0.1", 0),
        await asyncio.start_server(greeter, "127.0.0.1", 0),
        await asyncio.start_server(proxied, "127.0.0.1", 0),
        await asyncio.start_server(greet_then_echo, "127.0.0.1", 0, ssl=server_context),
    ]
    found.echo, found.greeter, found.proxied, found.tls = (
        s.sockets[0].getsockname()[1] for s in servers
    )
    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
    found.udp_echo = udp.get_extra_info("sockname")[1]
    yield found
    udp.close()
    for server in servers:
        server.close()
    for server in servers:
        await server.wait_closed()


@pytest_asyncio.fixture
async def forwarder(backends: Backends) -> AsyncIterator[Forwarder]:
    allowed = [AllowedTarget.of("127.0.0.1", p, Protocol.TCP) for p in backends.tcp_ports]
    allowed.append(AllowedTarget.of("127.0.0.1", backends.udp_echo, Protocol.UDP))
    fwd = Forwarder(AllowedTargets(allowed))
    await fwd.start("127.0.0.1", 0)
    yield fwd
    await fwd.close(grace_s=1.0)


@contextlib.asynccontextmanager
async def edge_with(*routes: Route, **limits: float) -> AsyncIterator[DataPlane]:
    async with running_edge(Pki(), routes, l4=L4Limits(**limits)) as plane:  # type: ignore[arg-type]
        yield plane


async def exchange(port: int, data: bytes, expect: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.readexactly(expect), WAIT_S)
    finally:
        writer.close()


async def closed_by_edge(reader: asyncio.StreamReader) -> bool:
    """The edge closed the connection without relaying a byte (a reset counts: the client's
    bytes were still unread)."""
    try:
        return await asyncio.wait_for(reader.read(), WAIT_S) == b""
    except ConnectionResetError:
        return True


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_a_tcp_service_relays_on_its_own_port(
    forwarder: Forwarder, backends: Backends
) -> None:
    port = free_port()
    route = l4_route("svc_tcp", ServiceMode.TCP, port, target(forwarder, backends.echo, path=""))
    async with edge_with(route) as plane:
        assert port in plane.l4.tcp
        payload = bytes(range(256)) * 1024
        assert await exchange(port, payload, len(payload)) == payload


async def test_tls_and_tcp_share_a_custom_port(forwarder: Forwarder, backends: Backends) -> None:
    port = free_port()
    routes = [
        l4_route("svc_tls", ServiceMode.TLS, port, target(forwarder, backends.tls, path=""),
                 domain=SECURE),
        l4_route("svc_tcp", ServiceMode.TCP, port, target(forwarder, backends.echo, path="")),
    ]  # fmt: skip
    async with edge_with(*routes) as plane:
        assert list(plane.l4.tcp) == [port]
        # the TLS service's SNI: the client verifies the backend's own certificate
        context = ssl.create_default_context()
        backends.ca.configure_trust(context)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname=SECURE
        )
        assert await asyncio.wait_for(reader.readline(), WAIT_S) == b"tls backend\n"
        writer.close()
        # not TLS: the TCP service
        assert await exchange(port, b"plain bytes", 11) == b"plain bytes"
        # TLS for another name: the TCP service gets the ClientHello as it was sent
        hello = _client_hello("other.example.test")
        assert await exchange(port, hello, len(hello)) == hello


async def test_a_silent_client_goes_to_the_tcp_service_after_the_peek_timeout(
    forwarder: Forwarder, backends: Backends
) -> None:
    """Protocols where the server speaks first (SMTP, SSH's banner…) on a port with TLS too."""
    port = free_port()
    routes = [
        l4_route("svc_tls", ServiceMode.TLS, port, target(forwarder, backends.tls, path=""),
                 domain=SECURE),
        l4_route("svc_tcp", ServiceMode.TCP, port, target(forwarder, backends.greeter, path="")),
    ]  # fmt: skip
    async with edge_with(*routes, peek_timeout_s=0.3):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.readline(), WAIT_S) == b"220 hello from the greeter\n"
        writer.close()


async def test_a_port_with_only_tls_services_closes_what_matches_none(
    forwarder: Forwarder, backends: Backends
) -> None:
    port = free_port()
    route = l4_route("svc_tls", ServiceMode.TLS, port, target(forwarder, backends.tls, path=""),
                     domain=SECURE)  # fmt: skip
    async with edge_with(route):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        assert await closed_by_edge(reader)
        writer.close()


async def test_the_backend_reads_the_real_client_from_proxy_v2(
    forwarder: Forwarder, backends: Backends
) -> None:
    port = free_port()
    route = l4_route(
        "svc_pp", ServiceMode.TCP, port,
        target(forwarder, backends.proxied, path="", proxy_protocol=True),
    )  # fmt: skip
    async with edge_with(route):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client_port = writer.get_extra_info("sockname")[1]
        line = await asyncio.wait_for(reader.readline(), WAIT_S)
        assert line == f"127.0.0.1:{client_port}\n".encode()
        writer.write(b"after the header")
        assert await asyncio.wait_for(reader.readexactly(16), WAIT_S) == b"after the header"
        writer.close()
    header = backends.proxy_headers[-1]
    assert header.destination == ("127.0.0.1", port)


async def test_round_robin_ejects_a_failing_target(
    forwarder: Forwarder, backends: Backends
) -> None:
    port = free_port()
    dead = target(forwarder, backends.dead, path="", target_id="tgt_dead")
    alive = target(forwarder, backends.echo, path="", target_id="tgt_alive")
    route = l4_route("svc_rr", ServiceMode.TCP, port, dead, alive)
    async with edge_with(route) as plane:
        for index in range(6):
            data = f"message {index}".encode()
            assert await exchange(port, data, len(data)) == data
        assert plane.l4ctx.balancer.is_ejected(route, dead)
        assert not plane.l4ctx.balancer.is_ejected(route, alive)


async def test_a_removed_service_drains_then_is_cut_and_others_keep_going(
    forwarder: Forwarder, backends: Backends
) -> None:
    gone_port, kept_port = free_port(), free_port()
    gone = l4_route(
        "svc_gone", ServiceMode.TCP, gone_port, target(forwarder, backends.echo, path="")
    )
    kept = l4_route(
        "svc_kept", ServiceMode.TCP, kept_port, target(forwarder, backends.echo, path="")
    )
    async with edge_with(gone, kept, drain_s=0.5) as plane:
        gone_reader, gone_writer = await asyncio.open_connection("127.0.0.1", gone_port)
        kept_reader, kept_writer = await asyncio.open_connection("127.0.0.1", kept_port)
        for reader, writer in ((gone_reader, gone_writer), (kept_reader, kept_writer)):
            writer.write(b"before")
            assert await asyncio.wait_for(reader.readexactly(6), WAIT_S) == b"before"

        # the kept service's targets change and the other service goes away
        changed = l4_route(
            "svc_kept", ServiceMode.TCP, kept_port,
            target(forwarder, backends.greeter, path="", target_id="tgt_new"),
        )  # fmt: skip
        plane.apply_table(RoutingTable.build(2, [changed]))
        assert gone_port not in plane.l4.tcp
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", gone_port)
        # within the grace the removed service's connection still works
        gone_writer.write(b"during")
        assert await asyncio.wait_for(gone_reader.readexactly(6), WAIT_S) == b"during"
        # after it, it is cut; the other service's connection is untouched
        assert await asyncio.wait_for(gone_reader.read(), WAIT_S) == b""
        kept_writer.write(b"still")
        assert await asyncio.wait_for(kept_reader.readexactly(5), WAIT_S) == b"still"
        # and new connections to the changed service reach its new target
        reader, writer = await asyncio.open_connection("127.0.0.1", kept_port)
        assert await asyncio.wait_for(reader.readline(), WAIT_S) == b"220 hello from the greeter\n"
        for w in (gone_writer, kept_writer, writer):
            w.close()


async def test_when_no_target_answers_the_client_is_closed_at_once(
    forwarder: Forwarder, backends: Backends
) -> None:
    port = free_port()
    route = l4_route(
        "svc_dead", ServiceMode.TCP, port,
        target(forwarder, backends.dead, path="", target_id="tgt_a"),
        target(forwarder, backends.dead, path="", target_id="tgt_b"),
    )  # fmt: skip
    async with edge_with(route) as plane:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await closed_by_edge(reader)
        writer.close()
        assert plane.l4ctx.relays.count() == 0
        assert plane.l4.tcp[port].active == 0
        assert all(plane.l4ctx.balancer.is_ejected(route, t) for t in route.targets)


async def test_a_connection_cut_while_its_stream_opens_is_closed_and_forgotten() -> None:
    """An agent that accepts and never answers: removing the service cuts the connection in
    its opening phase, after the drain."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    port = free_port()
    stream = StreamTarget("127.0.0.1", "", 9, forwarder_port=silent.getsockname()[1])
    route = l4_route(
        "svc_silent", ServiceMode.TCP, port, RouteTarget("tgt_1", stream, "", enabled=True)
    )
    with contextlib.closing(silent):
        async with edge_with(route, drain_s=0.2) as plane:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await wait_until(lambda: plane.l4ctx.relays.count() == 1, "the connection")
            plane.apply_table(RoutingTable.build(2, []))
            assert await closed_by_edge(reader)
            writer.close()
            await wait_until(lambda: plane.l4ctx.relays.count() == 0, "the cut")


async def test_cutting_a_relayed_connection_ends_it_at_once(
    forwarder: Forwarder, backends: Backends
) -> None:
    """What a shutdown does: the connection is over (closed, counted out, recorded) when
    ``cut_all`` returns, not at some later turn of the loop."""
    port = free_port()
    route = l4_route("svc_cut", ServiceMode.TCP, port, target(forwarder, backends.echo, path=""))
    async with edge_with(route) as plane:
        assert await exchange(port, b"warm", 4) == b"warm"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), WAIT_S) == b"ping"
        await wait_until(lambda: plane.l4ctx.relays.count() == 1, "the other connection's end")
        plane.l4ctx.relays.cut_all("edge stopped")
        assert plane.l4ctx.relays.count() == 0
        assert plane.l4.tcp[port].active == 0
        assert await closed_by_edge(reader)
        writer.close()


async def test_the_connection_limit_refuses_the_excess(
    forwarder: Forwarder, backends: Backends
) -> None:
    port = free_port()
    route = l4_route("svc_tcp", ServiceMode.TCP, port, target(forwarder, backends.echo, path=""))
    async with edge_with(route, max_connections_per_port=2) as plane:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for reader, writer in held:
            writer.write(b"x")
            assert await asyncio.wait_for(reader.readexactly(1), WAIT_S) == b"x"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await closed_by_edge(reader)
        assert plane.l4.tcp[port].refused == 1
        for _, w in [*held, (reader, writer)]:
            w.close()


# --- UDP


class _UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)


@contextlib.asynccontextmanager
async def udp_client(port: int) -> AsyncIterator[tuple[asyncio.DatagramTransport, _UdpClient]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _UdpClient, remote_addr=("127.0.0.1", port)
    )
    try:
        yield transport, protocol
    finally:
        transport.close()


def udp_route(
    forwarder: Forwarder, backends: Backends, port: int, idle_timeout_s: float | None = None
) -> Route:
    echo = target(
        forwarder, backends.udp_echo, path="", transport=Protocol.UDP,
        session_idle_timeout_s=idle_timeout_s,
    )  # fmt: skip
    return l4_route("svc_udp", ServiceMode.UDP, port, echo)


async def test_udp_datagrams_round_trip_and_idle_sessions_are_reaped(
    forwarder: Forwarder, backends: Backends
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    route = udp_route(forwarder, backends, port, idle_timeout_s=0.4)
    async with edge_with(route) as plane, udp_client(port) as (transport, client):
        for index in range(5):
            transport.sendto(f"ping {index}".encode())
            assert (
                await asyncio.wait_for(client.received.get(), WAIT_S)
                == f"echo:ping {index}".encode()
            )
        udp = plane.l4.udp[port]
        assert len(udp.sessions) == 1
        # boundaries survive the stream, a large datagram's too
        big = bytes(range(256)) * 200
        transport.sendto(big)
        assert await asyncio.wait_for(client.received.get(), WAIT_S) == b"echo:" + big
        await wait_until(lambda: not udp.sessions, "the idle session to be reaped", 5.0)
        assert plane.l4ctx.udp_sessions == 0
        # the client's next datagram opens a new session
        transport.sendto(b"again")
        assert await asyncio.wait_for(client.received.get(), WAIT_S) == b"echo:again"


async def test_the_udp_session_table_never_exceeds_its_bound(
    forwarder: Forwarder, backends: Backends
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    bound = 8
    route = udp_route(forwarder, backends, port)
    async with edge_with(
        route, udp_max_sessions_per_service=bound, udp_new_sessions_per_s=10_000,
        udp_new_sessions_burst=10_000,
    ) as plane:  # fmt: skip
        udp = plane.l4.udp[port]
        sockets = [_udp_socket() for _ in range(64)]  # 64 source ports
        try:
            largest = 0
            for round_ in range(20):  # bounded flood: 64 sockets, 20 rounds
                for sock in sockets:
                    sock.sendto(f"flood {round_}".encode(), ("127.0.0.1", port))
                await asyncio.sleep(0.005)
                largest = max(largest, len(udp.sessions))
            assert largest == bound
            assert plane.l4ctx.udp_sessions == bound
            assert udp.refused_full > 0
        finally:
            for sock in sockets:
                sock.close()


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)  # noqa: FBT003
    sock.bind(("127.0.0.1", 0))
    return sock


def _client_hello(server_name: str) -> bytes:
    context = ssl.create_default_context()
    out = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), out, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return out.read()
