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


async def test_a_failing_handler_is_reported_and_the_rest_of_the_batch_still_runs() -> None:
    """Edge-triggered: an edge not delivered now never comes again, so one handler's bug must
    not cost the sockets after it in the same wake-up their edges."""
    loop = asyncio.get_running_loop()
    poller = _poller.poller(loop)
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    pairs = [socket.socketpair() for _ in range(3)]
    reached = asyncio.Event()
    handlers = []
    try:
        for index, (a, _) in enumerate(pairs):

            def handler(events: int, index: int = index) -> None:
                if index == 0:
                    raise RuntimeError("a bug in the first handler")
                if index == len(pairs) - 1:
                    reached.set()

            handlers.append(handler)
            poller.register(a.fileno(), handler)
        for _, b in pairs:
            b.send(b"x")  # all three readable before the loop polls: one batch
        await asyncio.wait_for(reached.wait(), 5)
        assert len(reported) == 1
        assert isinstance(reported[0]["exception"], RuntimeError)
    finally:
        loop.set_exception_handler(None)
        for (a, b), handler in zip(pairs, handlers, strict=False):
            poller.unregister(a.fileno(), handler)
            a.close()
            b.close()


async def test_a_number_taken_again_within_a_batch_gets_none_of_the_old_sockets_edges() -> None:
    """A handler closes another socket and a new one takes its number, all in one batch: the
    batch's entry for the old socket must not reach the new one's handler."""
    loop = asyncio.get_running_loop()
    poller = _poller.poller(loop)
    first, first_peer = socket.socketpair()
    doomed, doomed_peer = socket.socketpair()
    number = doomed.fileno()
    stale: list[int] = []
    swapped = asyncio.Event()
    listeners: list[socket.socket] = []

    def new_handler(events: int) -> None:
        stale.append(events)

    def doomed_handler(events: int) -> None:
        pass

    def first_handler(events: int) -> None:
        if swapped.is_set():
            return
        poller.unregister(number, doomed_handler, closing=True)
        doomed.close()
        listener = socket.socket()  # takes the lowest free number: the doomed one's
        listeners.append(listener)
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # a listener nobody connects to has no edge of its own
        if listener.fileno() == number:
            poller.register(number, new_handler)
        swapped.set()

    poller.register(first.fileno(), first_handler)
    poller.register(number, doomed_handler)
    try:
        first_peer.send(b"x")  # first's edge comes first in the batch, then doomed's
        doomed_peer.send(b"y")
        await asyncio.wait_for(swapped.wait(), 5)
        assert listeners[0].fileno() == number, "the test needs the number taken again"
        await asyncio.sleep(0.1)
        assert stale == []
    finally:
        poller.unregister(first.fileno(), first_handler)
        if listeners and listeners[0].fileno() == number:
            poller.unregister(number, new_handler)
        for sock in (first, first_peer, doomed, doomed_peer, *listeners):
            sock.close()
