"""``peek_client_hello``: the ClientHello of an accepted connection, read without consuming it.

The SNI router decides from the ClientHello where a connection goes, and whoever takes it next
(TLS termination via ``loop.connect_accepted_socket(..., ssl=ctx)``, or the pass-through relay)
must see the hello from its first byte. So the hello is only peeked (``MSG_PEEK``): its bytes
stay in the kernel's receive queue.

A peeked socket stays readable, so waiting for the rest of a record with a plain reader would
spin. Instead ``SO_RCVLOWAT`` is set to the byte count ``parse_client_hello`` asks for: epoll
then reports the socket readable only once that many bytes are queued, or at end of stream or
on an error. A wake-up that peeks fewer bytes than asked is one of those, which ``poll`` tells
without reading (POLLRDHUP, POLLHUP, POLLERR). ``SO_RCVLOWAT`` is back at 1 however this returns.
"""

import asyncio
import select
import socket
from enum import StrEnum
from typing import Final

from heron_core.errors import HeronError
from heron_edge.tls.clienthello import (
    MAX_CLIENT_HELLO_BYTES,
    ClientHello,
    MalformedClientHelloError,
    NeedMore,
    NotTls,
    parse_client_hello,
)

#: a client sends its whole hello at once; a slow link needs a round trip or two for a large one
SNI_PEEK_TIMEOUT_S: Final = 10.0
#: Linux also reports a socket readable below SO_RCVLOWAT under receive-memory pressure or a
#: nearly closed receive window; with the peer still there, pause this long before waiting again
EARLY_WAKE_PAUSE_S: Final = 0.01
_GONE: Final = select.POLLRDHUP | select.POLLHUP | select.POLLERR


class PeekFailure(StrEnum):
    """Why no ClientHello came."""

    TIMEOUT = "timeout"  # not all of it within the time allowed
    CLOSED = "closed"  # the client closed or reset the connection first
    MALFORMED = "malformed"  # TLS, but no acceptable ClientHello (the cause is chained)


class PeekError(HeronError):
    """No ClientHello to route by; ``reason`` says why, ``message`` in words."""

    def __init__(self, reason: PeekFailure, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


async def peek_client_hello(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    *,
    timeout_s: float = SNI_PEEK_TIMEOUT_S,
    max_size: int = MAX_CLIENT_HELLO_BYTES,
) -> ClientHello | NotTls:
    """The ClientHello at the start of non-blocking stream ``sock``, left unread in the socket.

    ``NOT_TLS`` when the client speaks something else (the bytes, too, stay queued). Raises
    ``PeekError``; the socket is the caller's to close either way.
    """
    if sock.gettimeout() != 0:
        raise ValueError("the socket must be non-blocking")
    low_water = 1
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                peeked = _peek(sock, max_size)
                result = _parse(peeked, max_size)
                if not isinstance(result, NeedMore):
                    return result
                if low_water > 1 and len(peeked) < low_water:  # woken, but short
                    if _peer_gone(sock):
                        raise _closed(sock, len(peeked), low_water)
                    await asyncio.sleep(EARLY_WAKE_PAUSE_S)
                if result.at_least != low_water:
                    low_water = result.at_least
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, low_water)
                await _readable(loop, sock)
    except TimeoutError:
        received = len(_peek_quietly(sock, max_size))
        raise PeekError(
            PeekFailure.TIMEOUT,
            f"no complete ClientHello within {timeout_s:g} s ({received} bytes received)",
        ) from None
    finally:
        if low_water != 1 and sock.fileno() != -1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


def _peek(sock: socket.socket, max_size: int) -> bytes:
    """The bytes queued (b"" while there are none); raises ``PeekError`` at end of stream."""
    try:
        data = sock.recv(max_size, socket.MSG_PEEK)
    except BlockingIOError:
        return b""
    except OSError as exc:  # reset, or the connection timed out in the kernel
        raise PeekError(
            PeekFailure.CLOSED, f"connection lost before the ClientHello: {exc.strerror or exc}"
        ) from None
    if not data:
        raise PeekError(PeekFailure.CLOSED, "the client closed the connection before sending")
    return data


def _peek_quietly(sock: socket.socket, max_size: int) -> bytes:
    """The bytes queued, for a message: b"" whatever goes wrong."""
    try:
        return sock.recv(max_size, socket.MSG_PEEK)
    except OSError:
        return b""


def _parse(peeked: bytes, max_size: int) -> ClientHello | NeedMore | NotTls:
    try:
        return parse_client_hello(peeked, max_size=max_size)
    except MalformedClientHelloError as exc:
        raise PeekError(PeekFailure.MALFORMED, str(exc)) from exc


def _peer_gone(sock: socket.socket) -> bool:
    """Whether the peer has finished sending (FIN) or the connection failed; reads nothing."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLRDHUP)
    return any(events & _GONE for _, events in poller.poll(0))


def _closed(sock: socket.socket, received: int, needed: int) -> PeekError:
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    how = "reset" if error else "closed"
    return PeekError(
        PeekFailure.CLOSED,
        f"the client {how} the connection after {received} bytes of its ClientHello "
        f"({needed} needed)",
    )


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    """Wait until epoll reports ``sock`` readable (SO_RCVLOWAT bytes queued, EOF or error)."""
    ready: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()
    loop.add_reader(fd, _set_ready, ready)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _set_ready(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)
