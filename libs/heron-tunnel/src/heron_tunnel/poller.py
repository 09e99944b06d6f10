"""One epoll set per event loop for the sockets that relays move bytes between.

A relay waits for its two sockets many times in a connection's life. Through the loop's
``add_reader``/``add_writer`` each wait is a registration: on uvloop a poll handle made and
probed (an ``epoll_ctl`` add and delete, an ``ioctl``), then stopped and closed (three more
``epoll_ctl``), with Python objects for each. Here a socket joins an epoll set of our own once,
edge-triggered for reading and writing both, and leaves it once; the loop watches the set's own
descriptor, which is readable whenever one of its sockets has news. The relay keeps what the
edges said (``readable``/``writable`` until an operation finds the socket empty or full).
"""

import asyncio
import contextlib
import select
import weakref
from collections.abc import Callable

#: what an edge on a socket can mean for the directions that read from it and write to it
READABLE = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
WRITABLE = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
_WATCH = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
#: events taken per wake-up; the loop wakes again at once for the rest
_BATCH = 256

_pollers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Poller]" = (
    weakref.WeakKeyDictionary()
)


class Poller:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._epoll = select.epoll()
        self._handlers: dict[int, Callable[[int], None]] = {}
        self._loop = weakref.ref(loop)  # the loop's table of pollers holds this one
        self._watched = False
        #: numbers registered while a batch is dispatched: the batch's entries for them were
        #: meant for the sockets closed before (their registration brings its own edge)
        self._fresh: set[int] = set()
        self._dispatching = False
        weakref.finalize(loop, self._epoll.close)

    def register(self, fd: int, handler: Callable[[int], None]) -> None:
        """Call ``handler(events)`` on every edge of ``fd`` until ``unregister(fd, handler)``.

        An entry left for the same number belonged to a socket closed since (the kernel has
        dropped it from the set, or ``epoll.register`` would fail): the new handler replaces it.
        """
        if not self._watched:  # on the first use: a loop that never relays pays nothing
            loop = self._loop()
            assert loop is not None  # a poller is only used from its running loop
            loop.add_reader(self._epoll.fileno(), self._dispatch)
            self._watched = True
        self._epoll.register(fd, _WATCH)
        self._handlers[fd] = handler
        if self._dispatching:
            self._fresh.add(fd)

    def unregister(self, fd: int, handler: Callable[[int], None], *, closing: bool = False) -> None:
        """Stop calling ``handler`` (the object given to ``register``) for ``fd``; nothing when
        the number has been closed and registered again by someone else since. ``closing``:
        the caller closes ``fd`` right after, which takes it out of the set without a syscall
        (the socket must not have been duplicated)."""
        if self._handlers.get(fd) is handler:
            del self._handlers[fd]
            if not closing:
                with contextlib.suppress(OSError):  # closed already: the kernel forgot it
                    self._epoll.unregister(fd)

    def hand_over(self, fd: int, handler: Callable[[int], None], to: Callable[[int], None]) -> None:
        """The edges of ``fd`` reach ``to`` from now on instead of ``handler`` (no syscall). The
        edges ``handler`` had are not said again: ``to`` must not wait for one it needs."""
        if self._handlers.get(fd) is not handler:
            raise RuntimeError(f"descriptor {fd} is not registered to {handler!r}")
        self._handlers[fd] = to

    def _dispatch(self) -> None:
        handlers, fresh = self._handlers, self._fresh
        self._dispatching = True
        try:
            for fd, events in self._epoll.poll(0, _BATCH):
                handler = handlers.get(fd)
                # None: an earlier handler of this batch unregistered it; fresh: it closed the
                # socket and another took its number since
                if handler is None or (fresh and fd in fresh):
                    continue
                try:
                    handler(events)
                except Exception as exc:  # noqa: BLE001 (reported, as the loop does a callback's)
                    # the rest of the batch still gets its edges: edge-triggered, they would
                    # not come again
                    self._report(exc, handler)
        finally:
            self._dispatching = False
            fresh.clear()

    def _report(self, exc: Exception, handler: Callable[[int], None]) -> None:
        loop = self._loop()
        if loop is not None:
            loop.call_exception_handler(
                {"message": f"poller handler {handler!r} failed", "exception": exc}
            )


def poller(loop: asyncio.AbstractEventLoop) -> Poller:
    """The poller of ``loop`` (made on first use, closed with the loop's last reference)."""
    found = _pollers.get(loop)
    if found is None:
        found = _pollers[loop] = Poller(loop)
    return found
