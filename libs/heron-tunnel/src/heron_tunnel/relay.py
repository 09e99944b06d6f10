"""Moving bytes between two connected stream sockets until both directions are done.

Once the edge or the agent holds both ends of a connection (client and tunnel stream, or tunnel
stream and target) nobody needs to look at the bytes: ``relay`` moves them, one task per
connection, and returns ``RelayStats`` for the access log.

Each direction is a loop that tries a non-blocking move and, on EAGAIN, waits for the next edge
of the one socket that blocked. Both sockets join the loop's ``_poller`` (one epoll set,
edge-triggered) for the relay's life: one registration each instead of one per wait. The loop
runs in the poller's callbacks, not in tasks: ``relay`` is one future for the caller to await,
plus the callbacks — no task, coroutine or timer per direction, which is most of what a short
connection would otherwise cost; a ``Relay`` is the callbacks alone, for a caller with no task
of its own (it says when it is done through ``on_done``). On Linux a move is ``os.splice`` socket → pipe → socket, so
the bytes never enter Python; the pipe is drained before it is filled again, so an EAGAIN
always names the socket to wait for and no pipe is ever polled. Where there is no
``os.splice``, or the kernel refuses it for a socket, ``recv_into``/``send`` through one reused
buffer does the same (both live in ``_movers``).

Back-pressure: a direction reads one pipe (or buffer) full and writes all of it before it reads
again, so at most ``buffer_size`` bytes per direction are in flight here; the rest waits in the
kernel's socket buffers and, through TCP's window, at the sender.

Ending: a side's EOF is passed on as ``shutdown(SHUT_WR)`` once its bytes are written, and the
other direction goes on (half-close); the last one's leaves with the close when the relay
closes its sockets. The relay returns when both directions are done, when no
byte moved for ``idle_timeout`` seconds, or when a peer went away (ECONNRESET, EPIPE…), which ends
both directions and is reported in the stats, not raised. The caller owns and closes the sockets.
"""

import asyncio
import errno
import os
import socket
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from heron_tunnel import _movers
from heron_tunnel import deadlines as _deadlines
from heron_tunnel import poller as _poller

if TYPE_CHECKING:
    from collections.abc import Callable

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


@dataclass(slots=True)
class RelayStats:
    """How a relay went (read-only by convention: not frozen, which costs every relay)."""

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
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def ended(_: Relay) -> None:
        if not done.done():
            done.set_result(None)

    running = Relay(
        a, b, idle_timeout=idle_timeout, buffer_size=buffer_size, force_copy=force_copy,
        on_done=ended,
    )  # fmt: skip
    try:
        await done
    finally:
        running.stop()
    if running.exception is not None:
        raise running.exception
    return running.stats()


class Relay:
    """A relay that runs in the loop's callbacks from the start, and calls ``on_done(self)``
    once when it ends (``stats`` then says how; ``exception`` holds a bug, if one ended it).
    For callers that have no task of their own to await ``relay`` in: no task at all.

    ``on_done`` never runs before the constructor returns: a direction reads only once the
    poller has reported its socket (joining it reports one that holds bytes or an EOF, at the
    next wake-up), or for ``b_registered`` at the loop's next turn. ``stop`` ends it at once
    without ``on_done``, ``end`` at once with it; either way no callback stays on the loop and no pipe stays open.
    The caller owns and closes the sockets, or with ``close_sockets`` the relay closes them as
    it ends (before ``on_done``: two syscalls fewer, the kernel forgets a closed socket's
    registration by itself). Sockets it closes must not have been duplicated (``dup``).

    ``b_registered``: ``b`` is in the loop's poller already, under that handler (a stream
    opening's, say); the relay takes the registration over, from the constructor on whatever
    happens (two ``epoll_ctl`` fewer), and reads ``b`` once to learn what it holds.
    """

    __slots__ = ("_backward", "_forward", "_run")

    def __init__(
        self,
        a: socket.socket,
        b: socket.socket,
        *,
        on_done: "Callable[[Relay], None]",
        idle_timeout: float | None = None,
        buffer_size: int = DEFAULT_BUFFER_BYTES,
        force_copy: bool = False,
        close_sockets: bool = False,
        b_registered: "Callable[[int], None] | None" = None,
    ) -> None:
        run = self._run = _Run(asyncio.get_running_loop(), on_done, self)
        if b_registered is not None:  # the relay's from here on: ``stop`` unregisters it
            run.adopt(b.fileno(), b_registered)
        try:
            if buffer_size < 1:
                raise ValueError(f"relay buffer size {buffer_size} is not positive")
            if idle_timeout is not None and idle_timeout <= 0:
                raise ValueError(f"relay idle timeout {idle_timeout} is not positive")
            for sock in (a, b):
                if sock.gettimeout() != 0.0:  # a syscall each: skipped when already non-blocking
                    sock.settimeout(0.0)
            if close_sockets:
                run.sockets = (a, b)
            pipes = run.pipes
            forward = self._forward = _Flow(
                run, a, b, Side.A, _movers.open_mover(a, b, buffer_size, force_copy, pipes)
            )
            backward = self._backward = _Flow(
                run, b, a, Side.B, _movers.open_mover(b, a, buffer_size, force_copy, pipes)
            )
            run.flows = (forward, backward)
            run.watch(a.fileno(), b.fileno())
            forward.pump()
            if b_registered is None:
                backward.pump()
            else:  # its edges so far went to the other handler: a read, after this returns
                backward.readable_unknown()
            if idle_timeout is not None:
                run.watch_idle(idle_timeout)
        except BaseException:
            run.stop()
            raise

    @property
    def exception(self) -> BaseException | None:
        return self._run.exception

    @property
    def ended(self) -> bool:
        return self._run.ended

    def stop(self) -> None:
        """End now without calling ``on_done`` (nothing when it has ended)."""
        self._run.stop()

    def end(self) -> None:
        """End now and call ``on_done`` (nothing when it has ended)."""
        self._run.end()

    def stats(self) -> RelayStats:
        return self._run.stats(self._forward, self._backward)


class _Run:
    """What the directions of one relay share: the clock, the end, and how it came."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_done: "Callable[[Relay], None]", owner: Relay
    ) -> None:
        self.loop = loop
        self._started = self.last_activity = loop.time()
        self.ended = False
        self._on_done: Callable[[Relay], None] | None = on_done
        self._owner: Relay | None = owner
        self.exception: BaseException | None = None
        self.pipes: list[int] = []  # the descriptors of splice's pipes, closed at the end
        #: sockets to close at the end (``close_sockets``)
        self.sockets: tuple[socket.socket, ...] = ()
        self.flows: tuple[_Flow, ...] = ()
        self.first_closed: Side | None = None
        self.idle_timed_out = False
        self.error: str | None = None
        self._ended_at: float | None = None
        self._idle_key: float | None = None  # of the idle deadline, while one is set
        self._deadlines: _deadlines.Deadlines | None = None
        self._idle_timeout = 0.0
        self._poller: _poller.Poller | None = None
        self._watching: tuple[tuple[int, Callable[[int], None]], ...] = ()

    def adopt(self, b: int, handler: "Callable[[int], None]") -> None:
        """``b`` is in the poller under ``handler``: unregistered by ``stop`` from now on."""
        self._poller = _poller.poller(self.loop)
        self._watching = ((b, handler),)

    def watch(self, a: int, b: int) -> None:
        """Have the edges of both sockets reach the directions (``on_a``, ``on_b``)."""
        poller = self._poller
        on_a, on_b = self.on_a, self.on_b  # the objects ``unregister`` must be given back
        if poller is None:
            poller = self._poller = _poller.poller(self.loop)
            poller.register(a, on_a)
            self._watching = ((a, on_a),)
            poller.register(b, on_b)
        else:  # ``b`` adopted
            ((_, adopted),) = self._watching
            poller.register(a, on_a)
            self._watching = ((b, adopted), (a, on_a))
            poller.hand_over(b, adopted, on_b)
        self._watching = ((a, on_a), (b, on_b))

    def on_a(self, events: int) -> None:
        forward, backward = self.flows
        if events & _poller.READABLE:
            forward.readable()
        if events & _poller.WRITABLE:
            backward.writable()

    def on_b(self, events: int) -> None:
        forward, backward = self.flows
        if events & _poller.READABLE:
            backward.readable()
        if events & _poller.WRITABLE:
            forward.writable()

    def closed(self, side: Side) -> None:
        if self.first_closed is None:
            self.first_closed = side

    def peer_gone(self, side: Side, code: int) -> None:
        self.closed(side)
        self.error = f"{errno.errorcode.get(code, code)} on side {side.value!r}"
        self.end()

    def failed(self, exc: BaseException) -> None:
        if not self.ended:
            self.exception = exc
        self.end()

    def end(self) -> None:
        """Stop, and tell the owner (once). What ``on_done`` raises goes to the loop's exception
        handler: a direction that ends the relay must not take it for its own failure."""
        on_done, owner = self._on_done, self._owner
        self.stop()
        if on_done is not None and owner is not None:
            try:
                on_done(owner)
            except Exception as exc:  # noqa: BLE001 (reported, as the loop does a callback's)
                self.loop.call_exception_handler(
                    {"message": f"relay on_done {on_done!r} failed", "exception": exc}
                )

    def stop(self) -> None:
        """No callback of this relay stays on the loop, and its pipes are closed."""
        if self.ended:
            return
        self.ended = True
        self._on_done = self._owner = None  # no cycle through the owner either
        self._ended_at = self.loop.time()
        closing = bool(self.sockets)
        if self._poller is not None:
            for fd, handler in self._watching:
                self._poller.unregister(fd, handler, closing=closing)
            self._poller = None
            self._watching = ()  # its bound methods would hold this relay in a cycle
        for sock in self.sockets:
            sock.close()
        self.sockets = ()
        for flow in self.flows:
            flow.stop()
        self.flows = ()  # no cycle left: all of it goes by reference counting, not the GC
        if self._idle_key is not None and self._deadlines is not None:
            self._deadlines.remove(self._idle_key, self)
            self._idle_key = None
        for fd in self.pipes:
            os.close(fd)
        self.pipes.clear()

    def watch_idle(self, idle_timeout: float) -> None:
        self._idle_timeout = idle_timeout
        if not self.ended:
            self._deadlines = _deadlines.deadlines(self.loop)
            self._idle_key = self._deadlines.add(
                self.last_activity + idle_timeout, self, self.last_activity
            )

    def expired(self, now: float) -> None:
        """The idle deadline (``Expiring``): ended when nothing moved since, else a new one."""
        self._idle_key = None
        if self.ended:
            return
        at = self.last_activity + self._idle_timeout
        if now >= at:
            self.idle_timed_out = True
            self.end()
        elif self._deadlines is not None:
            self._idle_key = self._deadlines.add(at, self, now)

    def stats(self, forward: "_Flow", backward: "_Flow") -> RelayStats:
        return RelayStats(
            a_to_b_bytes=forward.moved,
            b_to_a_bytes=backward.moved,
            first_closed=self.first_closed,
            idle_timed_out=self.idle_timed_out,
            error=self.error,
            duration_s=(self._ended_at or self.loop.time()) - self._started,
            zero_copy=forward.mover.zero_copy and backward.mover.zero_copy,
        )


#: what a direction waits for
_NOTHING, _READ, _WRITE = 0, 1, 2


class _Flow:
    """One direction: ``pump`` moves bytes until a socket would block, then waits for that
    socket's next edge (``readable``/``writable``). The edges of a socket come whether or not a
    direction waits for them, so each direction remembers what they said: a socket is readable
    from an edge that says so (joining the poller gives one for a socket with bytes already)
    until a read finds it empty, and writable until a write finds it full."""

    __slots__ = (
        "_can_read", "_can_write", "_waiting", "_yielded",
        "dst", "finished", "moved", "mover", "run", "source",
    )  # fmt: skip

    def __init__(
        self,
        run: _Run,
        src: socket.socket,
        dst: socket.socket,
        source: Side,
        mover: _movers.Mover,
    ) -> None:
        self.run = run
        self.dst = dst
        self.source = source
        self.mover = mover
        self.moved = 0
        self.finished = False
        # joining the poller reports a socket that has bytes at once: no read to find out
        self._can_read = False
        self._can_write = True
        self._waiting = _NOTHING  # the edge it lacks: _READ (``_can_read``) or _WRITE
        self._yielded: asyncio.Handle | None = None

    def readable_unknown(self) -> None:
        """The source's edges went elsewhere until now: a read at the loop's next turn (not
        at once: ``on_done`` never runs inside the relay's constructor)."""
        self._can_read = True
        self._yielded = self.run.loop.call_soon(self.pump)

    def readable(self) -> None:
        self._can_read = True
        if self._waiting == _READ:  # not while it waits to write: it reads once that is done
            self.pump()

    def writable(self) -> None:
        self._can_write = True
        if self._waiting == _WRITE:
            self.pump()

    def pump(self) -> None:
        """Move what can be moved now; wait for the edge of what cannot."""
        self._yielded = None
        self._waiting = _NOTHING
        if self.finished or self.run.ended:
            return
        try:
            self._move()
        except BaseException as exc:  # a bug: the caller sees it, no callback stays behind
            self.run.failed(exc)
            if not isinstance(exc, Exception):
                raise

    def _move(self) -> None:
        mover = self.mover
        burst = 0
        while True:
            if mover.pending:
                if not self._can_write or (sent := self._write()) is None:
                    self._waiting = _WRITE
                    return
                burst += sent
                continue
            if burst >= YIELD_EVERY_BYTES:  # splice and recv never yield on their own
                self._yielded = self.run.loop.call_soon(self.pump)
                return
            if not self._can_read or (got := self._read()) is None:
                self._waiting = _READ
                return
            if got == 0:
                self._finish()
                return
            if mover.drained:  # the look-ahead found nothing more: wait for the next edge
                mover.drained = False
                self._can_read = False

    def _read(self) -> int | None:
        """Bytes read, 0 at EOF, or None: the source is empty, or the relay ended."""
        try:
            got = self.mover.read()
        except OSError as exc:
            self._peer_error(exc, self.source)
            return None
        if got is None:
            self._can_read = False
        return got

    def _write(self) -> int | None:
        """Bytes written, or None: the destination is full, or the relay ended."""
        try:
            sent = self.mover.write()
        except OSError as exc:
            self._peer_error(exc, self.source.other)
            return None
        if sent is None:
            self._can_write = False
            return None
        self.moved += sent
        self.run.last_activity = self.run.loop.time()
        return sent

    def _finish(self) -> None:
        """The source's EOF, its bytes all written: pass it on, and this direction is done."""
        self.stop()
        self.finished = True
        run = self.run
        run.closed(self.source)
        forward, backward = run.flows
        last = forward.finished and backward.finished
        # the last direction of a relay that closes its sockets leaves the FIN to the close,
        # which comes next (both sources are read to their EOF: the close sends no reset)
        if not (last and run.sockets):
            try:  # noqa: SIM105 (suppress() makes an object per call: this runs per connection)
                self.dst.shutdown(socket.SHUT_WR)
            except OSError:  # the other peer may be gone already
                pass
        if last:
            run.end()

    def _peer_error(self, exc: OSError, side: Side) -> None:
        if exc.errno not in _PEER_GONE:
            raise exc
        self.run.peer_gone(side, exc.errno)

    def stop(self) -> None:
        self._waiting = _NOTHING
        if self._yielded is not None:
            self._yielded.cancel()
            self._yielded = None
