"""The accept loop every TCP listener of the edge shares, on real sockets over 127.0.0.1."""

import asyncio
import socket

import pytest

from heron_edge.acceptor import Acceptor, bind_listener, local_address, plain
from heron_edge.address import Address


@pytest.mark.parametrize("host", ["127.0.0.1", "::"])
async def test_accepted_connections_are_non_blocking_without_delay_with_their_address(
    host: str,
) -> None:
    accepted: asyncio.Queue[tuple[socket.socket, tuple[str, int]]] = asyncio.Queue()
    acceptor = Acceptor(
        bind_listener(Address(host, 0), reuse_port=False),
        lambda sock, peer: accepted.put_nowait((sock, plain(peer))),
    )
    try:
        with socket.create_connection(("127.0.0.1", acceptor.port), timeout=5) as client:
            async with asyncio.timeout(5):
                sock, peer = await accepted.get()
            with sock:
                assert peer == client.getsockname()  # an IPv4-mapped address shown as IPv4
                assert local_address(sock) == ("127.0.0.1", acceptor.port)
                assert sock.gettimeout() == 0.0
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        acceptor.close()
