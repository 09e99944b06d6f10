"""What a stream waits on: one inbox per open stream, and the registry that can stop them all.

Each stream's handler runs one loop over its ``Inbox``: ``Received`` (a message from the client,
put there by ``pump``), ``Closed`` (the client finished or the call broke), ``Changed`` (an event
of its account, from the ``ChangeFeed``) and ``Stop`` (end with an error, e.g. at shutdown).
A timeout of ``Inbox.next_all`` is the stream's heartbeat.
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from heron_core.events import Event
from heron_management.errors import ManagementError, ProtocolError


@dataclass(frozen=True)
class Received:
    message: Any  # a protobuf message; only convert.py looks inside


@dataclass(frozen=True)
class Closed:
    """The client half-closed its side, or the call broke."""


@dataclass(frozen=True)
class Changed:
    event: Event


@dataclass(frozen=True)
class Stop:
    error: ManagementError


Signal = Received | Closed | Changed | Stop


class Inbox:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[Signal] = asyncio.Queue()

    def put(self, signal: Signal) -> None:
        self._queue.put_nowait(signal)

    def changed(self, event: Event) -> None:
        self.put(Changed(event))

    async def next_all(self, timeout_s: float) -> list[Signal]:
        """The next signal and every one already waiting behind it (so a burst of changes costs
        one recomputation); empty after ``timeout_s`` without any."""
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                first = await self._queue.get()
        except TimeoutError:
            return []
        signals = [first]
        while not self._queue.empty():
            signals.append(self._queue.get_nowait())
        return signals


async def pump(requests: AsyncIterator[Any], inbox: Inbox) -> None:
    """Move the client's messages into ``inbox`` until it closes its side."""
    try:
        async for message in requests:
            inbox.put(Received(message))
    finally:
        inbox.put(Closed())


class StreamRegistry:
    """Every open stream's inbox, so that shutdown can end them all with one error."""

    def __init__(self) -> None:
        self._inboxes: set[Inbox] = set()

    def __len__(self) -> int:
        return len(self._inboxes)

    def add(self, inbox: Inbox) -> None:
        self._inboxes.add(inbox)

    def discard(self, inbox: Inbox) -> None:
        self._inboxes.discard(inbox)

    def stop_all(self, error: ManagementError) -> None:
        for inbox in tuple(self._inboxes):
            inbox.put(Stop(error))


async def first_message(requests: AsyncIterator[Any], timeout_s: float) -> Any | None:
    """The client's first message; None when it closed its side without sending one."""
    try:
        async with asyncio.timeout(timeout_s):
            return await anext(requests)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise ProtocolError(f"no hello within {timeout_s:g} s of opening the stream") from None
