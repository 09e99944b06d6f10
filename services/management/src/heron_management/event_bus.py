"""Management's NATS: the outbox's way out (``NatsPublisher``, JetStream, connected lazily so
management starts without NATS) and the way in (``NatsEventListener``: every replica's events,
for the gRPC streams of this one; ``connect_when_up`` for every consumer that waits for NATS).
"""

import asyncio
from collections.abc import Callable, Sequence

import structlog
from nats.aio.msg import Msg

from heron_bus import Bus, BusError, SchemaError, connect, ensure_streams, subject_for
from heron_bus.consume import parse_event
from heron_bus.subjects import EVENTS_SUBJECTS
from heron_core.events import (
    EdgeChanged,
    Event,
    NetworkChanged,
    PeerChanged,
    ProxyTokenRevoked,
    ServiceChanged,
)

log = structlog.get_logger(__name__)

#: the events that change what an agent's or an edge's stream shows
STREAM_EVENTS: tuple[type[Event], ...] = (
    ServiceChanged,
    PeerChanged,
    NetworkChanged,
    EdgeChanged,
    ProxyTokenRevoked,
)
LISTEN_RETRY_INITIAL_S = 0.5
LISTEN_RETRY_MAX_S = 15.0


async def connect_when_up(url: str, *, name: str, waiting: str) -> Bus:
    """A connection to NATS, tried again with backoff until it answers (management starts and
    runs without it); ``waiting`` is logged at each try."""
    delay = LISTEN_RETRY_INITIAL_S
    while True:
        try:
            return await connect(url, name=name)
        except BusError as exc:
            log.info(waiting, error=str(exc), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, LISTEN_RETRY_MAX_S)


class NatsPublisher:
    """An ``events.EventPublisher`` over JetStream; (re)connects on first use."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._bus: Bus | None = None
        self._lock = asyncio.Lock()

    async def publish_serialized(self, subject: str, payload: bytes, *, msg_id: str) -> None:
        bus = await self._connected()
        await bus.publish_serialized(subject, payload, msg_id=msg_id)

    async def close(self) -> None:
        if self._bus is not None:
            await self._bus.close()
            self._bus = None

    async def _connected(self) -> Bus:
        async with self._lock:
            if self._bus is None:
                bus = await connect(self._url, name="heron-management")
                await ensure_streams(bus)
                log.info("connected to NATS", url=self._url)
                self._bus = bus
            return self._bus


class NatsEventListener:
    """A plain (core) NATS subscription to ``heron.events.>``: it sees every event any replica
    publishes to the EVENTS stream, with no durable state; a gap while NATS is away is covered
    by each stream's periodic refresh."""

    def __init__(self, url: str, deliver: Callable[[Sequence[Event]], None]) -> None:
        self._url = url
        self._deliver = deliver
        self._types = {subject_for(t): t for t in STREAM_EVENTS}

    async def run(self) -> None:
        while True:
            bus = await connect_when_up(
                self._url, name="heron-management-listener", waiting="event listener waits for NATS"
            )
            try:
                # nats-py resubscribes by itself after a reconnect
                await bus.nc.subscribe(EVENTS_SUBJECTS, cb=self._on_message)
                log.info("listening for events", url=bus.url, subject=EVENTS_SUBJECTS)
                await asyncio.Event().wait()  # until cancelled
            finally:
                await bus.close()

    async def _on_message(self, msg: Msg) -> None:
        event_type = self._types.get(msg.subject)
        if event_type is None:
            return
        try:
            event = parse_event(event_type, msg.data)
        except SchemaError as exc:
            log.warning("event skipped", subject=msg.subject, reason=str(exc))
            return
        self._deliver([event])
