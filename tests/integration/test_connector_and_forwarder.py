"""The edge's ``open_stream`` against the agent's forwarder, on 127.0.0.1.

Both sides of the forwarder protocol as the services really run them, minus WireGuard (the
end-to-end tunnel test puts the overlay between them): the answer statuses reach the edge as
``TunnelError``s, and an accepted stream carries bytes both ways through ``relay``.
"""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from heron_agent.allowed import AllowedTarget, AllowedTargets
from heron_agent.forwarder import Forwarder
from heron_core.tasks import spawn
from heron_edge.connector import StreamOpening, StreamTarget, TunnelError, open_stream
from heron_tunnel.header import (
    ForwardResponse,
    ForwardStatus,
    Protocol,
    encode_response,
    read_request_from_socket,
)
from heron_tunnel.relay import Relay, relay

CLIENT = ("198.51.100.7", 51234)


@pytest_asyncio.fixture
async def backend() -> AsyncIterator[int]:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name = await reader.readline()
        writer.write(b"hello " + name)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest_asyncio.fixture
async def forwarder(backend: int) -> AsyncIterator[Forwarder]:
    fwd = Forwarder(AllowedTargets([AllowedTarget.of("127.0.0.1", backend, Protocol.TCP)]))
    await fwd.start("127.0.0.1", 0)
    yield fwd
    await fwd.close(grace_s=1.0)


def target(fwd: Forwarder, port: int, host: str = "") -> StreamTarget:
    address, forwarder_port = fwd.address
    return StreamTarget(address, host, port, forwarder_port=forwarder_port, service_id="svc_1")


async def test_an_allowed_target_gets_a_connected_stream(
    forwarder: Forwarder, backend: int
) -> None:
    sock = await open_stream(target(forwarder, backend), CLIENT)
    loop = asyncio.get_running_loop()
    with sock:
        await loop.sock_sendall(sock, b"edge\n")
        reply = await asyncio.wait_for(loop.sock_recv(sock, 100), 10)
    assert reply == b"hello edge\n"


async def test_the_stream_is_left_whole_to_its_relay(forwarder: Forwarder, backend: int) -> None:
    """Nothing of the opening stays on the stream: the relay takes it over, poller included."""
    loop = asyncio.get_running_loop()
    sock = await open_stream(target(forwarder, backend), CLIENT)
    near, far = socket.socketpair()
    near.settimeout(0.0)
    with sock, near, far:
        async with asyncio.timeout(10):
            relaying = spawn(relay(far, sock), name="relay")
            await loop.sock_sendall(near, b"relay\n")
            near.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := await loop.sock_recv(near, 100):
                reply += chunk
            stats = await relaying
    assert reply == b"hello relay\n"
    assert (stats.a_to_b_bytes, stats.b_to_a_bytes) == (6, 12)


async def test_a_target_off_the_list_is_refused_with_its_status(
    forwarder: Forwarder, backend: int
) -> None:
    with pytest.raises(TunnelError) as refused:
        await open_stream(target(forwarder, backend + 1 if backend < 65535 else 1), CLIENT)
    assert refused.value.status is ForwardStatus.TARGET_NOT_ALLOWED
    with pytest.raises(TunnelError) as other_host:
        await open_stream(target(forwarder, backend, host="10.0.0.9"), CLIENT)
    assert other_host.value.status is ForwardStatus.TARGET_NOT_ALLOWED


async def test_no_agent_listening_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TunnelError) as failed:
        await open_stream(StreamTarget("127.0.0.1", "", 80, forwarder_port=port), CLIENT)
    assert failed.value.status is ForwardStatus.UNREACHABLE
    assert "cannot reach the agent" in failed.value.message


async def test_an_agent_that_never_answers_times_out() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    with contextlib.closing(silent), pytest.raises(TunnelError) as failed:
        await open_stream(
            StreamTarget("127.0.0.1", "", 80, forwarder_port=silent.getsockname()[1]),
            CLIENT,
            answer_timeout_s=0.5,
        )
    assert failed.value.status is ForwardStatus.BAD_HEADER
    assert "within 0.5 s" in failed.value.message


async def test_an_answer_that_comes_in_pieces_is_read_and_nothing_after_it() -> None:
    """The agent's answer split over several segments: the edge waits for each piece and leaves
    the first bytes of the target's reply in the stream for the relay."""
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.0)  # non-blocking

    async def agent() -> None:
        conn, _ = await loop.sock_accept(listener)
        with conn:
            await read_request_from_socket(loop, conn, 5.0)
            for byte in encode_response(ForwardResponse(ForwardStatus.OK)):
                await loop.sock_sendall(conn, bytes((byte,)))
                await asyncio.sleep(0.02)
            await loop.sock_sendall(conn, b"banner\n")
            await asyncio.sleep(0.2)

    with contextlib.closing(listener):
        async with asyncio.timeout(10), asyncio.TaskGroup() as group:
            group.create_task(agent())
            stream = await open_stream(
                StreamTarget("127.0.0.1", "", 80, forwarder_port=listener.getsockname()[1]),
                CLIENT,
                answer_timeout_s=5.0,
            )
            with stream:
                assert await loop.sock_recv(stream, 64) == b"banner\n"


async def test_an_opening_hands_its_registration_to_the_relay_with_what_came_after() -> None:
    """The answer and the target's first bytes in one segment, and more after the opening is
    over but before its socket is taken: none of it is read by the opening, all of it reaches
    the client through the relay that takes the registration over."""
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.0)  # non-blocking
    answered, sent = asyncio.Event(), asyncio.Event()

    async def agent() -> None:
        conn, _ = await loop.sock_accept(listener)
        with conn:
            await read_request_from_socket(loop, conn, 5.0)
            await loop.sock_sendall(
                conn, encode_response(ForwardResponse(ForwardStatus.OK)) + b"one "
            )
            await answered.wait()
            await loop.sock_sendall(conn, b"two ")
            await asyncio.sleep(0.05)  # its edge reaches the opening, which is over
            await loop.sock_sendall(conn, b"three")
            conn.shutdown(socket.SHUT_WR)
            sent.set()
            assert await loop.sock_recv(conn, 16) == b""

    near, far = socket.socketpair()
    near.settimeout(0.0)
    done: asyncio.Future[StreamOpening] = loop.create_future()
    with contextlib.closing(listener), near:
        async with asyncio.timeout(10), asyncio.TaskGroup() as group:
            group.create_task(agent())
            StreamOpening(
                StreamTarget("127.0.0.1", "", 80, forwarder_port=listener.getsockname()[1]),
                CLIENT, on_done=done.set_result,
            )  # fmt: skip
            opening = await done
            answered.set()
            await sent.wait()
            await asyncio.sleep(0.05)  # all in, the FIN too, and their edges spent
            stream, registered = opening.take_registered()
            ended = asyncio.Event()
            Relay(
                far, stream, on_done=lambda _: ended.set(), close_sockets=True,
                b_registered=registered,
            )  # fmt: skip
            near.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := await loop.sock_recv(near, 100):
                reply += chunk
            await ended.wait()
    assert reply == b"one two three"
