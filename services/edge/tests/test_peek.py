"""``peek_client_hello`` on real loopback sockets, on asyncio's own loop and on uvloop.

The client writes its hello in pieces with pauses between them; the tests check the answer, that
every byte is still there to read afterwards, that the loop did not spin while it waited (the
accepted socket counts its peeks: one per wake-up), and that SO_RCVLOWAT is back at 1.
"""

import asyncio
import contextlib
import itertools
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import trustme
import uvloop

from heron_edge.tls.clienthello import NOT_TLS, ClientHello, MalformedClientHelloError, NotTls
from heron_edge.tls.peek import EARLY_WAKE_PAUSE_S, PeekError, PeekFailure, peek_client_hello

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
PAUSE_S = 0.05

#: what the client does next: send these bytes, or act on its socket
Step = bytes | Callable[[socket.socket], None]


@pytest.fixture(params=sorted(LOOPS))
def runner(request: pytest.FixtureRequest) -> Iterator[asyncio.Runner]:
    with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
        yield runner


class CountingSocket(socket.socket):
    """An accepted socket that counts its peeks; ``peek_client_hello`` peeks once per wake-up."""

    peeks = 0

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        if flags & socket.MSG_PEEK:
            self.peeks += 1
        return super().recv(bufsize, flags)


@contextmanager
def connection(receive_buffer: int = 0) -> Iterator[tuple[CountingSocket, socket.socket]]:
    """An accepted non-blocking socket and the blocking client connected to it."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        if receive_buffer:  # set before the handshake, it fixes the window; accept inherits it
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    server = CountingSocket(fileno=accepted.detach())
    server.settimeout(0.0)  # non-blocking
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one segment per step
    with server, client:
        yield server, client


def openssl_hello(server_hostname: str, protocols: Sequence[str] = ()) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if protocols:
        context.set_alpn_protocols(list(protocols))
    outgoing = ssl.MemoryBIO()
    client = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def reframe(wire: bytes, *cuts: int) -> bytes:
    """A one-record hello split into records at these offsets of its handshake message."""
    message = wire[5:]
    return b"".join(
        wire[:3] + (b - a).to_bytes(2, "big") + message[a:b]
        for a, b in itertools.pairwise([0, *cuts, len(message)])
    )


def reset(client: socket.socket) -> None:
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def low_water(sock: socket.socket) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)


def read_all(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(2.0)
    data = b""
    while len(data) < size and (chunk := sock.recv(65536)):
        data += chunk
    return data


async def act(client: socket.socket, steps: Sequence[Step]) -> None:
    for step in steps:
        await asyncio.sleep(PAUSE_S)
        if isinstance(step, bytes):
            client.sendall(step)
        else:
            step(client)


async def peek_while(
    server: socket.socket, client: socket.socket, steps: Sequence[Step], **options: Any
) -> ClientHello | NotTls:
    """Peek while the client takes its steps."""
    loop = asyncio.get_running_loop()
    acting = loop.create_task(act(client, steps), name="client steps")
    try:
        return await peek_client_hello(loop, server, **options)
    finally:
        acting.cancel()
        await asyncio.gather(acting, return_exceptions=True)


def test_a_hello_in_pieces_is_peeked_without_consuming_or_spinning(
    runner: asyncio.Runner,
) -> None:
    wire = reframe(openssl_hello("App.Example.com", ["h2", "http/1.1"]), 2, 200)
    steps = [wire[:3], wire[3:5], wire[5:8], wire[8:150], wire[150:]]
    with connection() as (server, client):
        hello = runner.run(peek_while(server, client, steps, timeout_s=5.0))
        assert hello == ClientHello("app.example.com", ("h2", "http/1.1"), len(wire))
        assert server.peeks <= len(steps) + 1  # the first look, then one per step at most
        assert low_water(server) == 1
        assert read_all(server, len(wire)) == wire


def test_a_hello_over_two_records_is_peeked_whole(runner: asyncio.Runner) -> None:
    protocols = [f"{i:03d}" + "p" * 247 for i in range(80)]  # 20 KB of ALPN: two records
    wire = openssl_hello("big.example.com", protocols)
    steps = [wire[:9000], wire[9000:]]
    with connection() as (server, client):
        hello = runner.run(peek_while(server, client, steps, max_size=65536))
        assert hello == ClientHello("big.example.com", tuple(protocols), len(wire))
        assert server.peeks <= len(steps) + 2  # the kernel may queue the first step in two
        assert low_water(server) == 1
        assert read_all(server, len(wire)) == wire


def test_plain_http_is_not_tls_and_stays_queued(runner: asyncio.Runner) -> None:
    request = b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n"
    with connection() as (server, client):
        assert runner.run(peek_while(server, client, [request])) is NOT_TLS
        assert read_all(server, len(request)) == request


def test_a_silent_client_times_out_without_spinning(runner: asyncio.Runner) -> None:
    wire = openssl_hello("app.example.com")
    with connection() as (server, client):
        started = time.monotonic()
        with pytest.raises(PeekError) as caught:
            runner.run(peek_while(server, client, [wire[:3]], timeout_s=0.3))
        # uvloop runs a timer up to its millisecond clock tick early
        assert 0.3 - 0.002 <= time.monotonic() - started < 2.0
        assert caught.value.reason is PeekFailure.TIMEOUT
        assert caught.value.message == "no complete ClientHello within 0.3 s (3 bytes received)"
        assert server.peeks <= 2
        assert low_water(server) == 1


@pytest.mark.parametrize(
    "ending",
    [
        pytest.param(socket.socket.close, id="close"),
        pytest.param(lambda client: client.shutdown(socket.SHUT_WR), id="half-close"),
        pytest.param(reset, id="reset"),
    ],
)
@pytest.mark.parametrize("sent", [0, 3, 5, 100], ids=lambda sent: f"after {sent} bytes")
def test_a_client_leaving_mid_hello_is_seen_at_once(
    runner: asyncio.Runner, ending: Callable[[socket.socket], None], sent: int
) -> None:
    wire = openssl_hello("app.example.com")
    steps: list[Step] = [wire[:sent], ending] if sent else [ending]
    with connection() as (server, client):
        started = time.monotonic()
        with pytest.raises(PeekError) as caught:
            runner.run(peek_while(server, client, steps, timeout_s=5.0))
        assert time.monotonic() - started < 2.0
        assert caught.value.reason is PeekFailure.CLOSED
        assert server.peeks <= len(steps) + 2
        assert low_water(server) == 1


def test_a_receive_buffer_too_small_for_the_hello_is_polled_not_spun(
    runner: asyncio.Runner,
) -> None:
    # A locked 4 KiB buffer fills at half a record: Linux then reports the socket readable
    # below SO_RCVLOWAT (memory pressure), and the client cannot send the rest.
    message = b"\x01\x00\x3f\xfc" + bytes(0x3FFC)
    wire = b"\x16\x03\x01" + len(message).to_bytes(2, "big") + message

    def send_what_fits(client: socket.socket) -> None:
        client.settimeout(0.0)
        with contextlib.suppress(BlockingIOError):
            client.send(wire)

    with connection(receive_buffer=2048) as (server, client):
        with pytest.raises(PeekError) as caught:
            runner.run(peek_while(server, client, [send_what_fits], timeout_s=0.3))
        assert caught.value.reason is PeekFailure.TIMEOUT
        assert server.peeks <= 0.3 / EARLY_WAKE_PAUSE_S + 5
        assert low_water(server) == 1


def test_a_malformed_hello_is_refused(runner: asyncio.Runner) -> None:
    wire = bytearray(openssl_hello("app.example.com"))
    wire[5] = 2  # a ServerHello
    with connection() as (server, client):
        with pytest.raises(PeekError) as caught:
            runner.run(peek_while(server, client, [bytes(wire)]))
        assert caught.value.reason is PeekFailure.MALFORMED
        assert isinstance(caught.value.__cause__, MalformedClientHelloError)
        assert low_water(server) == 1


def test_a_hello_over_max_size_is_refused_before_it_all_arrives(runner: asyncio.Runner) -> None:
    wire = openssl_hello("app.example.com")
    with connection() as (server, client):
        with pytest.raises(PeekError, match="larger than 300 bytes") as caught:
            runner.run(peek_while(server, client, [wire[:9]], max_size=300))
        assert caught.value.reason is PeekFailure.MALFORMED


def test_a_blocking_socket_is_refused(runner: asyncio.Runner) -> None:
    async def peek(sock: socket.socket) -> ClientHello | NotTls:
        return await peek_client_hello(asyncio.get_running_loop(), sock)

    with connection() as (server, _):
        server.settimeout(None)  # blocking
        with pytest.raises(ValueError, match="non-blocking"):
            runner.run(peek(server))


def test_tls_terminates_after_the_peek_from_the_first_byte(runner: asyncio.Runner) -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("app.example.com").configure_cert(server_context)
    server_context.set_alpn_protocols(["h2"])
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    client_context.set_alpn_protocols(["h2", "http/1.1"])

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.settimeout(0.0)
            host, port = listener.getsockname()
            connecting = loop.create_task(
                asyncio.open_connection(
                    host, port, ssl=client_context, server_hostname="app.example.com"
                ),
                name="tls client",
            )
            accepted, _ = await loop.sock_accept(listener)
        hello = await peek_client_hello(loop, accepted, timeout_s=5.0)
        assert isinstance(hello, ClientHello)
        assert (hello.server_name, hello.alpn) == ("app.example.com", ("h2", "http/1.1"))
        received = asyncio.StreamReader()
        transport, _ = await loop.connect_accepted_socket(
            lambda: asyncio.StreamReaderProtocol(received), accepted, ssl=server_context
        )
        _, writer = await connecting
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        writer.write(b"ping")
        assert await received.readexactly(4) == b"ping"
        writer.close()
        await writer.wait_closed()
        transport.close()
        await asyncio.sleep(0)

    runner.run(scenario())
