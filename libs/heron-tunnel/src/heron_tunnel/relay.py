"""Moving bytes between two connected stream sockets until both directions are done.

Once the edge or the agent holds both ends of a connection (client and tunnel stream, or tunnel
stream and target) nobody needs to look at the bytes: ``relay`` moves them, one task per
connection, and returns ``RelayStats`` for the access log.

Each direction is a loop that tries a non-blocking move and, on EAGAIN, waits for the one socket
that blocked (``loop.add_reader``/``add_writer`` on its fd: asyncio's loops and uvloop both have
them). On Linux a move is ``os.splice`` socket → pipe → socket, so the bytes never enter Python;
the pipe is drained before it is filled again, so an EAGAIN always names the socket to wait for
and no pipe is ever registered with the loop. Where there is no ``os.splice``, or the kernel
refuses it for a socket, ``recv_into``/``send`` through one reused buffer does the same (both
live in ``_movers``).

Back-pressure: a direction reads one pipe (or buffer) full and writes all of it before it reads
again, so at most ``buffer_size`` bytes per direction are in flight here; the rest waits in the
kernel's socket buffers and, through TCP's window, at the sender.

Ending: a side's EOF is passed on as ``shutdown(SHUT_WR)`` once its bytes are written, and the
other direction goes on (half-close). The relay returns when both directions are done, when no
byte moved for ``idle_timeout`` seconds, or when a peer went away (ECONNRESET, EPIPE…), which ends
both directions and is reported in the stats, not raised. The caller owns and closes the sockets.
"""

import asyncio
import contextlib
import errno
import socket
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType

from heron_tunnel import _movers

DEFAULT_BUFFER_BYTES = 256 * 1024
#: a direction that never has to wait still lets the loop serve other connections this often
YIELD_EVERY_BYTES = 1024 * 1024

#: errors that mean the peer on that socket is gone: they end the relay and go in its stats
_PEER_GONE = frozenset(
    {
        errno.ECONNRESET,
        errno.EPIPE,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENOTCONN,
    }
)


class Side(StrEnum):
    A = "a"
    B = "b"

    @property
    def other(self) -> "Side":
        return Side.B if self is Side.A else Side.A


@dataclass(frozen=True)
class RelayStats:
    a_to_b_bytes: int
    b_to_a_bytes: int
    first_closed: Side | None  # whose EOF or error ended a direction first; None: neither's
    idle_timed_out: bool
    error: str | None  # the peer error that ended the relay, e.g. "ECONNRESET on side 'b'"
    duration_s: float
    zero_copy: bool  # both directions spliced


async def relay(
    a: socket.socket,
    b: socket.socket,
    *,
    idle_timeout: float | None = None,
    buffer_size: int = DEFAULT_BUFFER_BYTES,
    force_copy: bool = False,
) -> RelayStats:
    """Relay bytes both ways between the connected stream sockets ``a`` and ``b``.

    Makes both sockets non-blocking; they must not belong to a transport (use the ``loop.sock_*``
    methods and ``header.read_request_from_socket`` before). Cancelling leaves no callback on the
    loop and no pipe open. ``force_copy`` skips splice (tests, comparisons).
    """
    if buffer_size < 1:
        raise ValueError(f"relay buffer size {buffer_size} is not positive")
    if idle_timeout is not None and idle_timeout <= 0:
        raise ValueError(f"relay idle timeout {idle_timeout} is not positive")
    loop = asyncio.get_running_loop()
    for sock in (a, b):
        sock.settimeout(0.0)  # non-blocking
    run = _Run(loop)
    with contextlib.ExitStack() as pipes:
        flows = [
            _Flow(src, dst, side, _movers.open_mover(src, dst, buffer_size, force_copy, pipes))
            for src, dst, side in ((a, b, Side.A), (b, a, Side.B))
        ]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(run.direction(flow), name=f"relay {flow.name}")
                    for flow in flows
                ]
                if idle_timeout is not None:
                    await run.watch_idle(tasks, idle_timeout)
        except* _RelayEndedError:
            pass
    return run.stats(*flows)


@dataclass
class _Flow:
    src: socket.socket
    dst: socket.socket
    source: Side
    mover: _movers.Mover
    moved: int = 0

    @property
    def name(self) -> str:
        return f"{self.source}→{self.source.other}"


class _RelayEndedError(Exception):
    """Ends every direction at once: a peer went away, or the relay was idle too long."""


class _PeerGoneError(_RelayEndedError):
    def __init__(self, side: Side, code: int) -> None:
        super().__init__(f"{errno.errorcode.get(code, code)} on side {side.value!r}")
        self.side = side


class _Blame:
    """Turns an OSError meaning that ``side``'s peer is gone into the end of the relay."""

    def __init__(self, side: Side) -> None:
        self._side = side

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, OSError) and exc.errno in _PEER_GONE:
            raise _PeerGoneError(self._side, exc.errno) from exc


class _Run:
    """What the directions of one relay share: the clock, and how and when it ended."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._started = self.last_activity = loop.time()
        self.first_closed: Side | None = None
        self.idle_timed_out = False
        self.error: str | None = None

    async def direction(self, flow: _Flow) -> None:
        try:
            await self._move(flow)
        except _PeerGoneError as exc:
            self._closed(exc.side)
            self.error = str(exc)
            raise
        self._closed(flow.source)
        with contextlib.suppress(OSError):  # the other peer may be gone already
            flow.dst.shutdown(socket.SHUT_WR)

    async def _move(self, flow: _Flow) -> None:
        """Move bytes from ``flow.src`` to ``flow.dst`` until the source's EOF."""
        mover, loop = flow.mover, self._loop
        reading, writing = _Blame(flow.source), _Blame(flow.source.other)
        readable = _ReadWaker(loop, flow.src.fileno())
        unyielded = 0
        try:
            while True:
                with reading:
                    got = mover.read()
                if got is None:
                    await readable.wait()
                    unyielded = 0
                    continue
                if got == 0:
                    return
                while mover.pending:
                    with writing:
                        sent = mover.write()
                    if sent is None:
                        readable.stop()  # unread bytes would wake the reader on every turn
                        await _writable(loop, flow.dst.fileno())
                        unyielded = 0
                        continue
                    flow.moved += sent
                    unyielded += sent
                    self.last_activity = loop.time()
                if unyielded >= YIELD_EVERY_BYTES:  # splice and recv never yield on their own
                    await asyncio.sleep(0)
                    unyielded = 0
        finally:
            readable.stop()

    async def watch_idle(self, tasks: list[asyncio.Task[None]], idle_timeout: float) -> None:
        pending = set(tasks)
        while pending:
            remaining = self.last_activity + idle_timeout - self._loop.time()
            if remaining <= 0:
                self.idle_timed_out = True
                raise _RelayEndedError
            _, pending = await asyncio.wait(pending, timeout=remaining)

    def stats(self, forward: _Flow, backward: _Flow) -> RelayStats:
        return RelayStats(
            a_to_b_bytes=forward.moved,
            b_to_a_bytes=backward.moved,
            first_closed=self.first_closed,
            idle_timed_out=self.idle_timed_out,
            error=self.error,
            duration_s=self._loop.time() - self._started,
            zero_copy=forward.mover.zero_copy and backward.mover.zero_copy,
        )

    def _closed(self, side: Side) -> None:
        if self.first_closed is None:
            self.first_closed = side


class _ReadWaker:
    """Waits for a socket to become readable, keeping it registered with the loop between waits.

    A relay of small messages (an HTTP request, its response) waits once per message; adding
    and removing the reader each time costs two ``epoll_ctl`` calls per message. The reader
    stays registered while the direction only reads; ``stop`` removes it while the direction
    waits to write (unread bytes would wake it on every loop turn) and at the end.
    """

    __slots__ = ("_fd", "_loop", "_registered", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self._loop = loop
        self._fd = fd
        self._waiter: asyncio.Future[None] | None = None
        self._registered = False

    async def wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        if not self._registered:
            self._loop.add_reader(self._fd, self._fire)
            self._registered = True
        try:
            await waiter
        finally:
            self._waiter = None

    def _fire(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def stop(self) -> None:
        if self._registered:
            self._loop.remove_reader(self._fd)
            self._registered = False


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    waiter = loop.create_future()
    loop.add_writer(fd, _wake, waiter)
    try:
        await waiter
    finally:
        loop.remove_writer(fd)


def _wake(waiter: "asyncio.Future[None]") -> None:
    if not waiter.done():  # the fd may fire again before the waiting task runs
        waiter.set_result(None)
