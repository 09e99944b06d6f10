"""Connecting a non-blocking socket to an IP address, and the TCP options a tunnel stream uses.

``loop.sock_connect`` on uvloop resolves the address it is given (a ``getaddrinfo`` call, even for
an IP literal) and wraps the wait in a coroutine of its own; a tunnel stream opens one connection
per client connection, so ``connect`` here asks the kernel directly and waits for the socket to
become writable with one future and one timer.
"""

import asyncio
import errno
import os
import socket
from typing import Any

_IN_PROGRESS = frozenset({errno.EINPROGRESS, errno.EAGAIN, errno.EINTR})


async def connect(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    address: tuple[Any, ...],
    timeout_s: float,
) -> None:
    """Connect the non-blocking ``sock`` to ``address`` (an IP address and port, no name).

    Raises ``TimeoutError`` after ``timeout_s``, or the ``OSError`` subclass of the failure
    (``ConnectionRefusedError``…). Leaves no callback on the loop.
    """
    code = sock.connect_ex(address)
    if code == 0:
        return
    if code not in _IN_PROGRESS:
        raise OSError(code, os.strerror(code))
    fd = sock.fileno()
    connected = loop.create_future()
    loop.add_writer(fd, _settle, connected, None)
    timer = loop.call_later(timeout_s, _settle, connected, TimeoutError)
    try:
        await connected
    finally:
        timer.cancel()
        loop.remove_writer(fd)
    if code := sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
        raise OSError(code, os.strerror(code))


def _settle(waiter: "asyncio.Future[None]", error: type[Exception] | None) -> None:
    if waiter.done():  # the fd may fire again before the waiting task runs
        return
    if error is None:
        waiter.set_result(None)
    else:
        waiter.set_exception(error())


def is_canonical_ipv4(text: str) -> bool:
    """Whether ``text`` is an IPv4 address written as ``ipaddress`` writes it: the common case,
    answered without ``ipaddress``'s parser (False: take the general path)."""
    try:
        return socket.inet_ntoa(socket.inet_pton(socket.AF_INET, text)) == text
    except (OSError, ValueError):  # not an IPv4 address; ValueError: an embedded NUL
        return False


def delay_acks(sock: socket.socket) -> None:
    """Let the kernel hold this TCP socket's ACKs for a moment to ride on the next data segment
    (``TCP_QUICKACK`` off: "ping-pong" mode) instead of sending each alone.

    A stream through the tunnel trades small messages (header, answer, first bytes) and every
    segment costs WireGuard a packet on each side. Set before ``connect``, the handshake's last ACK
    goes out with the first bytes written; the kernel leaves the mode when it completes the
    handshake, so call it again once connected. Bulk data is still acknowledged every second
    full segment, as TCP always does; only lone ACKs of small segments wait.
    """
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
