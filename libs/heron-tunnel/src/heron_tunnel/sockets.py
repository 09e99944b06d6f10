"""Connecting a non-blocking socket to an IP address, and the TCP options a tunnel stream uses.

``loop.sock_connect`` on uvloop resolves the address it is given (a ``getaddrinfo`` call, even for
an IP literal) and wraps the wait in a coroutine of its own; a tunnel stream opens one connection
per client connection, so ``connect`` here asks the kernel directly and waits for the socket to
become writable with one future and one timer.

TCP Fast Open (RFC 7413) lets a tunnel stream's header ride on its SYN: the agent reads it, and
dials the target, one round trip sooner, and WireGuard carries one packet fewer per stream. The
agent's listener asks for it (``accept_fast_open``); the edge's sockets use it when the kernel
allows (``request_fast_open``). With cookies, as the RFC has it: the first stream to an agent
makes an ordinary handshake that fetches a cookie, the next ones send their header in the SYN
with it, and a SYN with data from an address that never completed a handshake (a forged
source) is not acted on before the handshake completes.
"""

import asyncio
import errno
import os
import socket
from functools import cache, partial
from pathlib import Path
from typing import Any

from heron_tunnel import poller as _poller

#: what ``connect_ex`` answers while the connect goes on
CONNECT_IN_PROGRESS = frozenset({errno.EINPROGRESS, errno.EAGAIN, errno.EINTR, errno.EALREADY})
#: Linux's socket options, where Python's ``socket`` module does not name them
TCP_FASTOPEN_CONNECT = getattr(socket, "TCP_FASTOPEN_CONNECT", 30)
#: ``net.ipv4.tcp_fastopen``, per network namespace: bit 1 clients, bit 2 listeners that ask
FAST_OPEN_SYSCTL = Path("/proc/sys/net/ipv4/tcp_fastopen")
_CLIENT_BIT, _SERVER_BIT = 0x1, 0x2
#: SYNs with data a listener holds before their handshakes complete
FAST_OPEN_QUEUE = 1024


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
    await settle_connect(loop, sock, start_connect(sock, address), timeout_s)


def start_connect(sock: socket.socket, address: tuple[Any, ...]) -> int:
    """Begin connecting the non-blocking ``sock``: 0 when it is connected already (loopback:
    the handshake is over by the time connect returns), else ``connect_ex``'s errno (under way,
    or the failure) for ``settle_connect``."""
    code = sock.connect_ex(address)
    if code in CONNECT_IN_PROGRESS and is_connected(sock):
        return 0
    return code


async def settle_connect(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, code: int, timeout_s: float
) -> None:
    """Finish the connect ``start_connect`` answered ``code`` to; errors as ``connect``'s."""
    if code == 0:
        return
    if code not in CONNECT_IN_PROGRESS:
        raise OSError(code, os.strerror(code))
    await wait_connected(loop, sock, timeout_s)


async def wait_connected(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, timeout_s: float
) -> None:
    """Wait until the connect under way on ``sock`` completes; errors as ``connect``'s."""
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


async def wait_readable(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, deadline: float
) -> bool:
    """Wait until ``sock`` has bytes, an EOF or an error to read (True), or until the loop's
    clock reaches ``deadline`` (False). One registration with the loop's poller and one timer:
    no task, no transport."""
    woken: asyncio.Future[bool] = loop.create_future()
    fd = sock.fileno()
    poller = _poller.poller(loop)
    handler = partial(_wake, woken)
    poller.register(fd, handler)
    timer = loop.call_at(deadline, _time_up, woken)
    try:
        return await woken
    finally:
        timer.cancel()
        poller.unregister(fd, handler)


def _wake(woken: "asyncio.Future[bool]", events: int) -> None:
    if events & _poller.READABLE and not woken.done():
        woken.set_result(True)


def _time_up(woken: "asyncio.Future[bool]") -> None:
    if not woken.done():
        woken.set_result(False)


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


def is_connected(sock: socket.socket) -> bool:
    """Whether ``sock``'s handshake has completed (False while its SYN waits for an answer)."""
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


@cache
def _fast_open_sysctl() -> int:
    try:
        return int(FAST_OPEN_SYSCTL.read_text())
    except (OSError, ValueError):
        return 0


def request_fast_open(sock: socket.socket) -> bool:
    """Have ``sock`` (not yet connected) send its first write with the SYN when it holds a
    cookie for the address: ``connect`` then returns at once and the SYN leaves with the first
    ``send``. False, and nothing changed, where the kernel does not do it for clients."""
    if not _fast_open_sysctl() & _CLIENT_BIT:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_CONNECT, 1)
    except OSError:
        return False
    return True


def accept_fast_open(listener: socket.socket, *, enable_in_kernel: bool) -> str | None:
    """Let clients with a cookie send their first bytes with the SYN to ``listener``; None when
    done, or why not. ``enable_in_kernel``: set the listener bit of ``net.ipv4.tcp_fastopen``
    when it is off (it only concerns listeners that ask, like this one; root only)."""
    try:
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, FAST_OPEN_QUEUE)
    except (OSError, AttributeError) as exc:
        return f"the kernel refuses it ({exc})"
    try:
        value = int(FAST_OPEN_SYSCTL.read_text())
        if not value & _SERVER_BIT:
            if not enable_in_kernel:
                return f"net.ipv4.tcp_fastopen is {value}, without the listener bit (2)"
            FAST_OPEN_SYSCTL.write_text(str(value | _SERVER_BIT))
    except (OSError, ValueError) as exc:
        return f"net.ipv4.tcp_fastopen cannot be read or set: {exc}"
    return None
