"""The outbox's way out: NATS JetStream, connected lazily so management starts without it."""

import asyncio

import structlog

from heron_bus import Bus, connect, ensure_streams

log = structlog.get_logger(__name__)


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
