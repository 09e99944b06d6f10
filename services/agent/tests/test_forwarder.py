"""The forwarder on 127.0.0.1, as an edge sees it: header, answer, then bytes both ways.

Targets are real servers on loopback; the tunnel itself is not needed to test what the agent
does with a stream (the end-to-end test in tests/e2e runs the same code over WireGuard).
"""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
import pytest_asyncio

from heron_agent.allowed import AllowedTarget, AllowedTargets
from heron_agent.forwarder import Forwarder, ForwarderLimits
from heron_core.tasks import spawn
from heron_tunnel.datagrams import DatagramDecoder, encode_datagram
from heron_tunnel.header import (
    MAGIC,
    ForwardRequest,
    ForwardResponse,
    ForwardStatus,
    Protocol,
    encode_request,
    read_response,
)

TIMEOUT_S = 10.0


async def echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def udp_echo(sock: socket.socket) -> None:
    """Upper-cases each datagram back; a raw socket, since asyncio's transports drop empty ones."""
    loop = asyncio.get_running_loop()
    while True:
        data, peer = await loop.sock_recvfrom(sock, 65535)
        sock.sendto(data.upper(), peer)


@pytest_asyncio.fixture
async def targets() -> AsyncIterator[dict[str, int]]:
    server, tcp_port = await echo_server()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.0)  # non-blocking
    echoing = spawn(udp_echo(udp), name="udp echo")
    yield {"tcp": tcp_port, "udp": udp.getsockname()[1], "closed": free_port()}
    echoing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await echoing
    udp.close()
    server.close()
    await server.wait_closed()


Open = Callable[..., Coroutine[Any, Any, tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@pytest_asyncio.fixture
async def forwarder(targets: dict[str, int]) -> AsyncIterator[Forwarder]:
    allowed = AllowedTargets(
        [
            AllowedTarget.of("127.0.0.1", targets["tcp"], Protocol.TCP),
            AllowedTarget.of("localhost", targets["tcp"], Protocol.TCP),
            AllowedTarget.of("127.0.0.1", targets["udp"], Protocol.UDP),
            AllowedTarget.of("127.0.0.1", targets["closed"], Protocol.TCP),  # nothing listens
        ]
    )
    fwd = Forwarder(allowed, ForwarderLimits(header_timeout_s=0.5, idle_timeout_s=2.0))
    await fwd.start("127.0.0.1", 0)
    yield fwd
    await fwd.close(grace_s=1.0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def request(host: str, port: int, protocol: Protocol = Protocol.TCP) -> bytes:
    return encode_request(
        ForwardRequest(
            protocol=protocol, target_host=host, target_port=port,
            client_ip="203.0.113.9", client_port=40000, service_id="svc_test",
        )
    )  # fmt: skip


async def ask(
    fwd: Forwarder, header: bytes
) -> tuple[ForwardResponse, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*fwd.address)
    writer.write(header)
    await writer.drain()
    return await read_response(reader, TIMEOUT_S), reader, writer


async def test_tcp_target_is_relayed_both_ways(
    forwarder: Forwarder, targets: dict[str, int]
) -> None:
    response, reader, writer = await ask(forwarder, request("127.0.0.1", targets["tcp"]))
    assert response.ok, response
    payload = bytes(range(256)) * 4096  # 1 MiB
    writer.write(payload)
    writer.write_eof()  # half-close: the echo still comes back
    echoed = await asyncio.wait_for(reader.read(), TIMEOUT_S)
    assert echoed == payload
    writer.close()


async def test_streams_send_small_writes_at_once(forwarder: Forwarder) -> None:
    """No Nagle on the agent's side of a stream: a small write does not wait for the edge to
    acknowledge the one before (an edge that delays its ACKs would stall it 40 ms). Accepted
    sockets take TCP_NODELAY from the listener (the edge's acceptor test shows the kernel does)."""
    listener = forwarder._listener
    assert listener is not None
    assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_a_header_in_pieces_is_read_on_from_where_it_stopped(
    forwarder: Forwarder, targets: dict[str, int]
) -> None:
    """The accept finds part of the header: the rest is waited for, nothing read twice."""
    header = request("127.0.0.1", targets["tcp"])
    reader, writer = await asyncio.open_connection(*forwarder.address)
    writer.write(header[:5])
    await writer.drain()
    await asyncio.sleep(0.05)  # the forwarder has accepted and taken the first five bytes
    writer.write(header[5:] + b"ping")
    response = await read_response(reader, TIMEOUT_S)
    assert response.ok, response
    assert await asyncio.wait_for(reader.readexactly(4), TIMEOUT_S) == b"ping"
    writer.close()


async def test_a_target_that_does_not_connect_at_once_is_dialled_once() -> None:
    """A connect still under way when the stream is accepted goes on in a task: the target
    sees one connection, not a second dial."""
    loop = asyncio.get_running_loop()
    with socket.socket() as target, socket.socket() as filler:
        target.bind(("127.0.0.1", 0))
        target.listen(0)  # one queued connection fills it: the next SYN is dropped, retried
        target.settimeout(0.0)
        filler.connect(target.getsockname())
        port = target.getsockname()[1]
        fwd = Forwarder(AllowedTargets([AllowedTarget.of("127.0.0.1", port, Protocol.TCP)]))
        await fwd.start("127.0.0.1", 0)
        try:
            asking = spawn(ask(fwd, request("127.0.0.1", port)), name="ask")
            await asyncio.sleep(0.2)
            assert not asking.done()  # the agent waits for its connect
            first, _ = target.accept()  # the filler: room for the retried SYN
            first.close()
            async with asyncio.timeout(TIMEOUT_S):
                dialled, _ = await loop.sock_accept(target)
                response, reader, writer = await asking
            assert response.ok, response
            with dialled:
                await loop.sock_sendall(dialled, b"hi")
                assert await reader.readexactly(2) == b"hi"
                await asyncio.sleep(0.1)
                with pytest.raises(BlockingIOError):
                    target.accept()  # no second connection from the agent
            writer.close()
        finally:
            await fwd.close(grace_s=0.1)


async def test_domain_targets_are_resolved(forwarder: Forwarder, targets: dict[str, int]) -> None:
    response, reader, writer = await ask(forwarder, request("LOCALHOST", targets["tcp"]))
    assert response.ok, response
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), TIMEOUT_S) == b"ping"
    writer.close()


async def test_udp_datagrams_ride_the_stream_framed(
    forwarder: Forwarder, targets: dict[str, int]
) -> None:
    response, reader, writer = await ask(
        forwarder, request("127.0.0.1", targets["udp"], Protocol.UDP)
    )
    assert response.ok, response
    sent = [b"one", b"", b"three" * 1000]
    writer.write(b"".join(encode_datagram(d) for d in sent))
    decoder, received = DatagramDecoder(), list[bytes]()
    async with asyncio.timeout(TIMEOUT_S):
        while len(received) < len(sent):
            received += decoder.feed(await reader.read(65536))
    # UDP may reorder in general; on loopback one socket keeps order
    assert received == [d.upper() for d in sent]
    writer.close()


@pytest.mark.parametrize(
    ("target", "status"),
    [
        (("10.255.255.1", 22, Protocol.TCP), ForwardStatus.TARGET_NOT_ALLOWED),
        (("127.0.0.1", 22, Protocol.TCP), ForwardStatus.TARGET_NOT_ALLOWED),
    ],
)
async def test_targets_outside_the_allowed_list_are_refused(
    forwarder: Forwarder, target: tuple[str, int, Protocol], status: ForwardStatus
) -> None:
    response, reader, writer = await ask(forwarder, request(*target))
    assert response.status is status
    assert "not a target of this peer" in response.message
    assert await asyncio.wait_for(reader.read(), TIMEOUT_S) == b""  # and the stream is closed
    writer.close()


async def test_the_same_port_over_the_other_protocol_is_refused(
    forwarder: Forwarder, targets: dict[str, int]
) -> None:
    response, _, writer = await ask(forwarder, request("127.0.0.1", targets["tcp"], Protocol.UDP))
    assert response.status is ForwardStatus.TARGET_NOT_ALLOWED
    writer.close()


async def test_a_refused_connection_is_reported(
    forwarder: Forwarder, targets: dict[str, int]
) -> None:
    response, _, writer = await ask(forwarder, request("127.0.0.1", targets["closed"]))
    assert response.status is ForwardStatus.CONNECTION_REFUSED
    assert "refused" in response.message
    writer.close()


@pytest.mark.parametrize(
    ("header", "status", "words"),
    [
        (MAGIC + bytes([1, 0]), ForwardStatus.BAD_HEADER, "truncated"),
        (b"GET / HTTP/1.1\r\n\r\n", ForwardStatus.BAD_HEADER, "does not start with"),
        (MAGIC + bytes([9, 0, 1]), ForwardStatus.UNSUPPORTED_VERSION, "version"),
        (MAGIC + bytes([1, 0xFF, 0xFF]), ForwardStatus.BAD_HEADER, "512"),
    ],
)
async def test_bad_headers_get_a_typed_error_and_the_stream_is_closed(
    forwarder: Forwarder, header: bytes, status: ForwardStatus, words: str
) -> None:
    reader, writer = await asyncio.open_connection(*forwarder.address)
    writer.write(header)
    if status is ForwardStatus.BAD_HEADER and words == "truncated":
        writer.write_eof()
    await writer.drain()
    response = await read_response(reader, TIMEOUT_S)
    assert response.status is status, response
    assert words in response.message.lower()
    assert await asyncio.wait_for(reader.read(), TIMEOUT_S) == b""
    writer.close()


async def test_a_header_that_never_completes_times_out(forwarder: Forwarder) -> None:
    reader, writer = await asyncio.open_connection(*forwarder.address)
    writer.write(MAGIC)  # and then nothing, the connection left open
    response = await read_response(reader, TIMEOUT_S)
    assert response.status is ForwardStatus.BAD_HEADER
    assert "no complete forward request within" in response.message
    writer.close()


async def test_close_ends_running_streams(forwarder: Forwarder, targets: dict[str, int]) -> None:
    response, reader, writer = await ask(forwarder, request("127.0.0.1", targets["tcp"]))
    assert response.ok
    assert forwarder.active_streams == 1
    await forwarder.close(grace_s=0.1)
    assert forwarder.active_streams == 0
    assert await asyncio.wait_for(reader.read(), TIMEOUT_S) == b""
    writer.close()
