"""The accept loop every TCP listener of the edge shares: the main port and each L4 port.

A reader callback on the listening socket accepts up to a batch of connections per wake-up and
hands each (non-blocking, ``TCP_NODELAY``, which accepted sockets inherit from the listener on
Linux) to ``on_connection`` with the client's address as ``accept`` gave it. When the process runs out of
descriptors it stops accepting for half a second instead of spinning on the error — the
connections it holds keep being served meanwhile.
"""

import asyncio
import errno
import socket
import sys
from collections.abc import Callable
from typing import Any

import structlog

from heron_edge.address import Address

log = structlog.get_logger(__name__)

ACCEPT_BATCH = 64
OUT_OF_RESOURCES_PAUSE_S = 0.5
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
#: Linux copies a listener's TCP_NODELAY to the sockets it accepts: one setsockopt, not one each
_INHERITS_NODELAY = sys.platform == "linux"


def bind_socket(address: Address, kind: socket.SocketKind, *, reuse_port: bool) -> socket.socket:
    """A non-blocking socket of ``kind`` bound to ``address`` (``::`` takes IPv4 too)."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((address.host, address.port))
        sock.setblocking(False)  # noqa: FBT003  (the socket API's own signature)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_listener(address: Address, *, reuse_port: bool, backlog: int = 1024) -> socket.socket:
    sock = bind_socket(address, socket.SOCK_STREAM, reuse_port=reuse_port)
    try:
        if _INHERITS_NODELAY:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # for every accepted one
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class Acceptor:
    """Accepts connections on ``sock`` until closed; owns the socket."""

    def __init__(
        self, sock: socket.socket, on_connection: Callable[[socket.socket, Any], None]
    ) -> None:
        self.sock = sock
        self._on_connection = on_connection
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self.port: int = sock.getsockname()[1]
        self._loop.add_reader(sock.fileno(), self._accept)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    log.error(
                        "accept failed, pausing",
                        port=self.port, error=str(exc), pause_s=OUT_OF_RESOURCES_PAUSE_S,
                    )  # fmt: skip
                    self._loop.remove_reader(self.sock.fileno())
                    self._loop.call_later(OUT_OF_RESOURCES_PAUSE_S, self._resume)
                    return
                log.warning("accept failed", port=self.port, error=str(exc))
                continue
            conn.setblocking(False)  # noqa: FBT003
            if not _INHERITS_NODELAY:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._on_connection(conn, peer)

    def _resume(self) -> None:
        if not self._closed:
            self._loop.add_reader(self.sock.fileno(), self._accept)


def plain(address: tuple[str, int] | tuple[str, int, int, int]) -> tuple[str, int]:
    """A socket address as (address, port), IPv4-mapped IPv6 shown as IPv4."""
    host = address[0].removeprefix("::ffff:") if "." in address[0] else address[0]
    return host, address[1]


def local_address(sock: socket.socket) -> tuple[str, int]:
    """Where ``sock`` was accepted (``plain``); raises ``OSError`` when it is already gone."""
    return plain(sock.getsockname())
