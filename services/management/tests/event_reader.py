"""Reading events back the way other services do: a durable consumer through ``heron_bus.events``
(a throw-away one per read), against the real nats-server the session started."""

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from typing import TypeVar

from heron_bus import Bus, ensure_streams, events
from heron_bus.subjects import EVENTS_STREAM
from heron_core.events import Event

WAIT_S = 20.0

E = TypeVar("E", bound=Event)


async def first_events(
    bus: Bus, event_type: type[E], wanted: Callable[[E], bool], count: int
) -> list[E]:
    """The first ``count`` events of ``event_type`` in the stream that are ``wanted``, in order."""
    await ensure_streams(bus)  # as every consumer does: it may start before any publisher
    durable = f"test-{secrets.token_hex(4)}"
    found: list[E] = []

    async def collect() -> None:
        async with contextlib.aclosing(events(bus, event_type, durable=durable)) as stream:
            async for delivery in stream:
                await delivery.ack()
                if wanted(delivery.event):
                    found.append(delivery.event)
                    if len(found) == count:
                        return

    try:
        await asyncio.wait_for(collect(), WAIT_S)
    except TimeoutError:
        raise AssertionError(f"{len(found)} of {count} events within {WAIT_S}s: {found}") from None
    finally:
        await bus.js.delete_consumer(EVENTS_STREAM, durable)
    return found
