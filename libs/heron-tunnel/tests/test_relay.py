"""The relay between real sockets: client ⇄ a [relay] b ⇄ server, over 127.0.0.1.

Every test runs on both ways of moving bytes (splice and copy). Endpoints are driven with the
loop's own ``sock_*`` methods, so one event loop runs the relay and both peers.
"""

import asyncio
import contextlib
import fcntl
import gc
import random
import re
import socket
import struct
import termios
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from heron_core.tasks import spawn
from heron_tunnel import poller as _poller
from heron_tunnel.relay import Relay, RelayStats, Side, relay

MIB = 1024 * 1024
#: every test's wait for the relay; real runs take a fraction of it
RELAY_DEADLINE_S = 15.0


@dataclass
class Chain:
    """client ⇄ a [relay] b ⇄ server"""

    client: socket.socket
    a: socket.socket
    b: socket.socket
    server: socket.socket

    def sockets(self) -> tuple[socket.socket, ...]:
        return (self.client, self.a, self.b, self.server)


def tcp_pair(buffer_bytes: int | None = None) -> tuple[socket.socket, socket.socket]:
    """Two connected non-blocking TCP sockets; fixed kernel buffers when ``buffer_bytes`` is set."""

    def sized(sock: socket.socket) -> socket.socket:
        if buffer_bytes is not None:  # before listen/connect, so TCP's window agrees
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_bytes)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
        return sock

    with sized(socket.socket()) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        near = sized(socket.socket())
        near.connect(listener.getsockname())
        far, _ = listener.accept()
    for sock in (near, far):
        sock.settimeout(0.0)  # non-blocking
    return near, far


@pytest.fixture
def open_chain() -> Iterator[Callable[..., Chain]]:
    opened: list[Chain] = []

    def open_(
        pair: Callable[[], tuple[socket.socket, socket.socket]] = tcp_pair,
    ) -> Chain:
        client, a = pair()
        b, server = pair()
        for sock in (client, server):
            sock.settimeout(0.0)  # non-blocking (a socketpair is born blocking)
        opened.append(Chain(client, a, b, server))
        return opened[-1]

    yield open_
    for chain in opened:
        for sock in chain.sockets():
            sock.close()


@pytest.fixture(params=[False, True], ids=["splice", "copy"])
def force_copy(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


async def send_and_shut(sock: socket.socket, data: bytes) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, data)
    sock.shutdown(socket.SHUT_WR)


async def receive_to_eof(sock: socket.socket, limit: int = 64 * MIB) -> bytes:
    loop = asyncio.get_running_loop()
    received = bytearray()
    buffer = bytearray(MIB)
    while (n := await loop.sock_recv_into(sock, buffer)) and len(received) <= limit:
        received += buffer[:n]
    return bytes(received)


async def exchange(chain: Chain, up: bytes, down: bytes, *, force_copy: bool) -> RelayStats:
    """Send ``up`` client → server and ``down`` server → client at once; check both arrive."""
    async with asyncio.timeout(RELAY_DEADLINE_S), asyncio.TaskGroup() as group:
        relaying = group.create_task(relay(chain.a, chain.b, force_copy=force_copy))
        group.create_task(send_and_shut(chain.client, up))
        group.create_task(send_and_shut(chain.server, down))
        at_server = group.create_task(receive_to_eof(chain.server))
        at_client = group.create_task(receive_to_eof(chain.client))
    assert at_server.result() == up
    assert at_client.result() == down
    return relaying.result()


def open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def queued(sock: socket.socket, request: int) -> int:
    """Bytes in a socket's receive (FIONREAD) or send (TIOCOUTQ) queue."""
    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0" * 4))[0])


async def test_large_payloads_cross_intact_both_ways_at_once(
    open_chain: Callable[..., Chain], force_copy: bool
) -> None:
    rng = random.Random(7)
    up, down = rng.randbytes(32 * MIB), rng.randbytes(32 * MIB)

    stats = await exchange(open_chain(), up, down, force_copy=force_copy)

    assert (stats.a_to_b_bytes, stats.b_to_a_bytes) == (len(up), len(down))
    assert stats.zero_copy is not force_copy
    assert stats.error is None
    assert not stats.idle_timed_out
    assert stats.first_closed in (Side.A, Side.B)


async def test_unix_socket_pairs_are_relayed_too(
    open_chain: Callable[..., Chain], force_copy: bool
) -> None:
    rng = random.Random(8)
    up, down = rng.randbytes(4 * MIB), rng.randbytes(MIB)

    stats = await exchange(open_chain(socket.socketpair), up, down, force_copy=force_copy)

    assert (stats.a_to_b_bytes, stats.b_to_a_bytes) == (len(up), len(down))


async def test_a_half_closed_client_still_gets_the_reply(
    open_chain: Callable[..., Chain], force_copy: bool
) -> None:
    chain = open_chain()
    loop = asyncio.get_running_loop()

    async def server() -> None:
        assert await receive_to_eof(chain.server) == b"request"
        await send_and_shut(chain.server, b"the reply")

    async with asyncio.timeout(RELAY_DEADLINE_S), asyncio.TaskGroup() as group:
        relaying = group.create_task(relay(chain.a, chain.b, force_copy=force_copy))
        group.create_task(server())
        await loop.sock_sendall(chain.client, b"request")
        chain.client.shutdown(socket.SHUT_WR)  # the request is complete; the reply is still due
        reply = await receive_to_eof(chain.client)

    assert reply == b"the reply"
    stats = relaying.result()
    assert (stats.a_to_b_bytes, stats.b_to_a_bytes) == (7, 9)
    assert stats.first_closed is Side.A
    assert stats.error is None


async def test_an_idle_relay_ends_after_the_idle_timeout(
    open_chain: Callable[..., Chain], force_copy: bool
) -> None:
    chain = open_chain()

    async with asyncio.timeout(RELAY_DEADLINE_S):
        stats = await relay(chain.a, chain.b, idle_timeout=0.1, force_copy=force_copy)

    assert stats.idle_timed_out
    assert stats.duration_s >= 0.1
    assert stats.first_closed is None
    assert stats.error is None


async def test_traffic_in_either_direction_keeps_the_relay_alive(
    open_chain: Callable[..., Chain], force_copy: bool
) -> None:
    chain = open_chain()
    loop = asyncio.get_running_loop()

    async def chatter() -> None:
        ends = (chain.client, chain.server)
        for i in range(8):  # a byte every 50 ms, alternating directions; the last after 0.35 s
            sender, receiver = ends if i % 2 else ends[::-1]
            await loop.sock_sendall(sender, b"x")
            assert await loop.sock_recv(receiver, 1) == b"x"
            await asyncio.sleep(0.05)

    async with asyncio.timeout(RELAY_DEADLINE_S), asyncio.TaskGroup() as group:
        relaying = group.create_task(
            relay(chain.a, chain.b, idle_timeout=0.15, force_copy=force_copy)
        )
        group.create_task(chatter())

    stats = relaying.result()
    assert stats.idle_timed_out
    assert stats.duration_s >= 0.35 + 0.15 - 0.01  # not 0.15: each byte restarted the clock
    assert (stats.a_to_b_bytes, stats.b_to_a_bytes) == (4, 4)


@pytest.mark.parametrize("resetting", [Side.A, Side.B])
async def test_a_peer_reset_ends_the_relay_and_is_reported(
    open_chain: Callable[..., Chain], force_copy: bool, resetting: Side
) -> None:
    await check_peer_reset(open_chain(), force_copy, resetting)


async def check_peer_reset(chain: Chain, force_copy: bool, resetting: Side) -> None:
    loop = asyncio.get_running_loop()
    ends = (chain.client, chain.server)
    peer, other = ends if resetting is Side.A else ends[::-1]

    async with asyncio.timeout(RELAY_DEADLINE_S), asyncio.TaskGroup() as group:
        relaying = group.create_task(relay(chain.a, chain.b, force_copy=force_copy))
        await loop.sock_sendall(peer, b"hello")
        assert await loop.sock_recv(other, 5) == b"hello"
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()  # with a zero linger time: an RST, not a FIN
        with contextlib.suppress(OSError):  # the other side keeps talking into the void
            for _ in range(20):
                await loop.sock_sendall(other, b"still there?")
                await asyncio.sleep(0.01)

    stats = relaying.result()
    assert stats.error is not None
    assert re.fullmatch(rf"(ECONNRESET|EPIPE) on side '{resetting}'", stats.error)
    assert stats.first_closed is resetting


async def test_cancelling_the_relay_leaves_no_fd_and_no_callback(
    open_chain: Callable[..., Chain], force_copy: bool
) -> None:
    await check_cancellation_cleans_up(open_chain(), force_copy)


async def check_cancellation_cleans_up(chain: Chain, force_copy: bool) -> None:
    loop = asyncio.get_running_loop()
    poller = _poller.poller(loop)  # the loop's epoll set, made once, stays: it is not counted
    before = open_fds()
    task = spawn(relay(chain.a, chain.b, force_copy=force_copy), name="relay under test")
    for _ in range(50):  # the server reads nothing: the relay ends up waiting, bytes in hand
        with contextlib.suppress(BlockingIOError):
            chain.client.send(bytes(MIB))
        await asyncio.sleep(0.002)
    during = open_fds()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert during == before + (0 if force_copy else 2)  # a pipe for the direction with bulk
    assert open_fds() == before
    for sock in (chain.a, chain.b):
        assert not loop.remove_reader(sock.fileno())
        assert not loop.remove_writer(sock.fileno())
        assert sock.fileno() not in poller._handlers


async def test_a_slow_reader_holds_the_relay_to_one_buffer_of_bytes(
    open_chain: Callable[..., Chain], force_copy: bool
) -> None:
    buffer_bytes = 64 * 1024
    chain = open_chain(lambda: tcp_pair(buffer_bytes))
    task = spawn(
        relay(chain.a, chain.b, buffer_size=buffer_bytes, force_copy=force_copy), name="relay"
    )
    sent = bytearray()
    chunk = random.Random(9).randbytes(buffer_bytes)
    quiet_rounds = 0
    for _ in range(500):  # send until 10 rounds in a row take nothing (the server reads nothing)
        before = len(sent)
        with contextlib.suppress(BlockingIOError):
            while len(sent) < 16 * MIB:
                sent += chunk[: chain.client.send(chunk)]
        quiet_rounds = quiet_rounds + 1 if len(sent) == before else 0
        if quiet_rounds == 10:
            break
        await asyncio.sleep(0.01)

    in_sockets = (
        queued(chain.client, termios.TIOCOUTQ) + queued(chain.a, termios.FIONREAD)
        + queued(chain.b, termios.TIOCOUTQ) + queued(chain.server, termios.FIONREAD)
    )  # fmt: skip
    assert quiet_rounds == 10, "the sender never blocked: the relay reads without limit"
    assert 0 < len(sent) - in_sockets <= buffer_bytes  # what the relay itself holds

    chain.client.shutdown(socket.SHUT_WR)
    async with asyncio.timeout(RELAY_DEADLINE_S):
        assert await receive_to_eof(chain.server) == sent
        chain.server.shutdown(socket.SHUT_WR)
        stats = await task
    assert stats.a_to_b_bytes == len(sent)


async def test_nonsense_settings_are_refused(open_chain: Callable[..., Chain]) -> None:
    chain = open_chain()

    with pytest.raises(ValueError, match=r"^relay buffer size 0 is not positive$"):
        await relay(chain.a, chain.b, buffer_size=0)
    with pytest.raises(ValueError, match=r"^relay idle timeout 0 is not positive$"):
        await relay(chain.a, chain.b, idle_timeout=0)


def test_the_relay_runs_on_uvloop(open_chain: Callable[..., Chain]) -> None:
    uvloop = pytest.importorskip("uvloop")
    rng = random.Random(10)
    up, down = rng.randbytes(8 * MIB), rng.randbytes(8 * MIB)

    async def scenario() -> None:
        for force_copy in (False, True):
            stats = await exchange(open_chain(), up, down, force_copy=force_copy)
            assert (stats.a_to_b_bytes, stats.b_to_a_bytes) == (len(up), len(down))
        await check_cancellation_cleans_up(open_chain(), force_copy=False)
        await check_peer_reset(open_chain(), force_copy=False, resetting=Side.B)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


def segments_out(sock: socket.socket) -> int:
    """TCP segments ``sock`` has sent (``tcpi_segs_out`` of Linux's ``struct tcp_info``)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int(struct.unpack_from("I", info, 136)[0])


async def test_a_reply_and_its_close_leave_in_one_segment(
    open_chain: Callable[..., Chain],
) -> None:
    """A server that answers and closes at once (a banner, an HTTP/1.0 reply): the relay passes
    the bytes and the FIN on as one segment, not two (through the tunnel, a packet each)."""
    chain = open_chain()
    loop = asyncio.get_running_loop()
    await send_and_shut(chain.server, b"hello from the server\n")
    await asyncio.sleep(0.05)  # both are in b's receive queue before the relay reads
    before = segments_out(chain.a)
    async with asyncio.timeout(RELAY_DEADLINE_S):
        relaying = spawn(relay(chain.a, chain.b), name="relay")
        assert await receive_to_eof(chain.client) == b"hello from the server\n"
        assert segments_out(chain.a) - before == 1
        chain.client.shutdown(socket.SHUT_WR)
        stats = await relaying
    assert (stats.b_to_a_bytes, stats.first_closed) == (22, Side.B)
    assert await loop.sock_recv(chain.server, 16) == b""


async def test_bytes_that_trickle_in_are_relayed_as_they_come(
    open_chain: Callable[..., Chain], force_copy: bool
) -> None:
    """The look for an EOF after a short read finds none: the bytes go on at once, and the next
    ones are waited for."""
    chain = open_chain()
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(RELAY_DEADLINE_S):
        relaying = spawn(relay(chain.a, chain.b, force_copy=force_copy), name="relay")
        for n in range(5):
            message = f"message {n}\n".encode()
            await loop.sock_sendall(chain.server, message)
            assert await loop.sock_recv(chain.client, 64) == message
        await send_and_shut(chain.server, b"bye\n")
        assert await receive_to_eof(chain.client) == b"bye\n"
        chain.client.shutdown(socket.SHUT_WR)
        stats = await relaying
    assert stats.b_to_a_bytes == 5 * len(b"message 0\n") + 4


async def test_a_finished_relay_leaves_nothing_for_the_garbage_collector(
    open_chain: Callable[..., Chain], force_copy: bool
) -> None:
    """Reference counting frees a relay and what it made the moment it ends: with a connection
    each, cycles left for the collector would cost a collection every few thousand."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(3):
            chain = open_chain()
            await exchange(chain, b"ping" * 1000, b"pong" * 50_000, force_copy=force_copy)
            for sock in chain.sockets():
                sock.close()
        gc.collect()
        left = [o for o in gc.garbage if type(o).__module__.startswith("heron_tunnel")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not left, f"{len(left)} objects of the relay were left in cycles: {left[:5]}"


async def test_a_relay_without_a_task_reports_its_end_once(
    open_chain: Callable[..., Chain], force_copy: bool
) -> None:
    """``Relay`` runs from the loop's callbacks alone and calls ``on_done`` once, with the
    same stats ``relay`` returns."""
    chain = open_chain()
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[Relay] = loop.create_future()
    calls: list[Relay] = []

    def done(running: Relay) -> None:
        calls.append(running)
        ended.set_result(running)

    running = Relay(chain.a, chain.b, force_copy=force_copy, on_done=done)
    async with asyncio.timeout(RELAY_DEADLINE_S):
        await send_and_shut(chain.client, b"question")
        assert await receive_to_eof(chain.server) == b"question"
        await send_and_shut(chain.server, b"answer!")
        assert await receive_to_eof(chain.client) == b"answer!"
        assert await ended is running
    running.end()  # ended already: nothing more
    running.stop()
    assert calls == [running] and running.ended and running.exception is None
    stats = running.stats()
    assert (stats.a_to_b_bytes, stats.b_to_a_bytes, stats.first_closed) == (8, 7, Side.A)


async def test_a_relay_whose_peers_are_gone_ends_at_the_first_wake_up(
    open_chain: Callable[..., Chain],
) -> None:
    chain = open_chain()
    chain.client.shutdown(socket.SHUT_WR)
    chain.server.shutdown(socket.SHUT_WR)
    await asyncio.sleep(0.05)  # both EOFs are in before the relay starts
    calls: list[Relay] = []
    ended = asyncio.Event()

    def done(running: Relay) -> None:
        calls.append(running)
        ended.set()

    running = Relay(chain.a, chain.b, on_done=done)
    async with asyncio.timeout(RELAY_DEADLINE_S):
        await ended.wait()
    assert running.ended and calls == [running]
    assert running.stats().error is None


async def test_stopping_a_relay_calls_nothing_and_leaves_nothing_on_the_loop(
    open_chain: Callable[..., Chain], force_copy: bool
) -> None:
    chain = open_chain()
    calls: list[Relay] = []
    running = Relay(
        chain.a, chain.b, idle_timeout=0.05, force_copy=force_copy, on_done=calls.append
    )
    running.stop()
    assert running.ended
    await asyncio.get_running_loop().sock_sendall(chain.client, b"late")
    await asyncio.sleep(0.2)  # past the idle timeout, and the bytes' edge: no callback runs
    assert calls == []
    with pytest.raises(BlockingIOError):  # nothing moved after the stop
        chain.server.recv(16)


async def test_a_relay_that_closes_its_sockets_leaves_their_numbers_free(
    open_chain: Callable[..., Chain],
) -> None:
    """``close_sockets``: closed at the end, before ``on_done``, and out of the poller with no
    epoll call — a socket that gets the same number next registers as any other."""
    chain = open_chain()
    loop = asyncio.get_running_loop()
    numbers = (chain.a.fileno(), chain.b.fileno())
    ended = asyncio.Event()
    seen: list[int] = []

    def done(_: Relay) -> None:
        seen.extend((chain.a.fileno(), chain.b.fileno()))
        ended.set()

    Relay(chain.a, chain.b, on_done=done, close_sockets=True)
    async with asyncio.timeout(RELAY_DEADLINE_S):
        await send_and_shut(chain.server, b"bye")
        assert await receive_to_eof(chain.client) == b"bye"
        chain.client.shutdown(socket.SHUT_WR)
        await ended.wait()
        # the last direction's FIN left with the close, not a reset
        assert await receive_to_eof(chain.server) == b""
    assert seen == [-1, -1]
    opened: list[socket.socket] = []
    try:
        while not set(numbers) <= {s.fileno() for s in opened} and len(opened) < 256:
            opened.append(socket.socket())
        poller = _poller.poller(loop)
        for sock in opened:
            if sock.fileno() in numbers:  # no FileExistsError: the set forgot the old sockets

                def handler(_: int) -> None:
                    pass

                poller.register(sock.fileno(), handler)
                poller.unregister(sock.fileno(), handler)
        assert set(numbers) <= {s.fileno() for s in opened}
    finally:
        for sock in opened:
            sock.close()


async def test_what_on_done_raises_is_reported_and_the_relay_still_ends_cleanly(
    open_chain: Callable[..., Chain],
) -> None:
    chain = open_chain()
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:

        def done(_: Relay) -> None:
            raise RuntimeError("a bug in the owner")

        running = Relay(chain.a, chain.b, on_done=done)
        async with asyncio.timeout(RELAY_DEADLINE_S):
            await send_and_shut(chain.server, b"bye")
            assert await receive_to_eof(chain.client) == b"bye"
            chain.client.shutdown(socket.SHUT_WR)
            while not reported:  # noqa: ASYNC110 (the exception handler is the only signal)
                await asyncio.sleep(0.01)
    finally:
        loop.set_exception_handler(None)
    assert running.ended and running.exception is None
    assert isinstance(reported[0]["exception"], RuntimeError)
    assert running.stats().first_closed is not None


async def test_a_relay_takes_over_a_registration_whose_edge_was_spent(
    open_chain: Callable[..., Chain], force_copy: bool
) -> None:
    """``b_registered``: the bytes whose edge reached the earlier handler are relayed all the
    same, later edges reach the relay, and the earlier handler hears nothing more."""
    chain = open_chain()
    poller = _poller.poller(asyncio.get_running_loop())
    earlier: list[int] = []
    edge = asyncio.Event()

    def handler(events: int) -> None:
        earlier.append(events)
        if events & _poller.READABLE:
            edge.set()

    poller.register(chain.b.fileno(), handler)
    await asyncio.get_running_loop().sock_sendall(chain.server, b"first")
    async with asyncio.timeout(RELAY_DEADLINE_S):
        await edge.wait()  # spent on the earlier handler: none comes again for these bytes
    heard = len(earlier)
    ended = asyncio.Event()
    running = Relay(
        chain.a, chain.b, force_copy=force_copy, on_done=lambda _: ended.set(),
        b_registered=handler,
    )  # fmt: skip
    async with asyncio.timeout(RELAY_DEADLINE_S):
        assert await asyncio.get_running_loop().sock_recv(chain.client, 16) == b"first"
        await send_and_shut(chain.server, b" and more")
        assert await receive_to_eof(chain.client) == b" and more"
        await send_and_shut(chain.client, b"up")
        assert await receive_to_eof(chain.server) == b"up"
        await ended.wait()
    assert len(earlier) == heard
    assert (running.stats().a_to_b_bytes, running.stats().b_to_a_bytes) == (2, 14)


async def test_a_relay_refused_at_construction_still_unregisters_what_it_took_over(
    open_chain: Callable[..., Chain],
) -> None:
    chain = open_chain()
    poller = _poller.poller(asyncio.get_running_loop())
    calls: list[int] = []
    poller.register(chain.b.fileno(), calls.append)
    handler = poller._handlers[chain.b.fileno()]

    with pytest.raises(ValueError, match="not positive"):
        Relay(chain.a, chain.b, buffer_size=0, on_done=lambda _: None, b_registered=handler)

    assert chain.b.fileno() not in poller._handlers
    poller.register(chain.b.fileno(), handler)  # out of the epoll set too: no FileExistsError
    poller.unregister(chain.b.fileno(), handler)
    with pytest.raises(RuntimeError, match="not registered"):
        Relay(chain.a, chain.b, on_done=lambda _: None, b_registered=handler)
