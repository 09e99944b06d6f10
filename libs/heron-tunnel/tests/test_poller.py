"""The per-loop epoll set: edges reach the handler registered for a socket, and only it."""

import asyncio
import socket

from heron_tunnel import poller as _poller


async def test_an_edge_reaches_the_handler_until_it_unregisters() -> None:
    poller = _poller.poller(asyncio.get_running_loop())
    a, b = socket.socketpair()
    seen: list[int] = []
    got = asyncio.Event()

    def handler(events: int) -> None:
        seen.append(events)
        got.set()

    with a, b:
        poller.register(a.fileno(), handler)
        b.send(b"x")
        await asyncio.wait_for(got.wait(), 5)
        assert seen[-1] & _poller.READABLE

        poller.unregister(a.fileno(), handler)
        count = len(seen)
        b.send(b"y")
        await asyncio.sleep(0.05)
        assert len(seen) == count


async def test_a_late_unregister_leaves_the_next_owner_of_the_number_alone() -> None:
    poller = _poller.poller(asyncio.get_running_loop())
    first, first_peer = socket.socketpair()
    fd = first.fileno()

    def old_handler(events: int) -> None:
        raise AssertionError("the closed socket's handler was called")

    poller.register(fd, old_handler)
    first.close()  # the kernel drops it from the epoll set; its number is free again
    first_peer.close()
    second, second_peer = socket.socketpair()
    with second, second_peer:
        if second.fileno() != fd:  # the lowest free number is taken: it should be ours
            second, second_peer = second_peer, second
        assert second.fileno() == fd
        got = asyncio.Event()
        poller.register(fd, lambda events: got.set())

        poller.unregister(fd, old_handler)  # its old owner, late: must not touch the new one
        second_peer.send(b"x")
        await asyncio.wait_for(got.wait(), 5)
