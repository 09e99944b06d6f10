"""The services users may log in to: the KV bucket ``auth_services`` (management writes it),
followed with ``watch_bucket`` into a dict of service id → ``ServiceAuthRecord``.

``loaded`` is set once the bucket's values at start are in: at once when it is empty, else
right after the first batch ``watch_bucket`` yields (it yields a watch's values together,
without giving the event loop a turn, so a callback scheduled then runs after the batch).
"""

import asyncio
from contextlib import aclosing

import structlog

from heron_bus.bucket import Bucket
from heron_bus.connection import Bus
from heron_bus.kv import AUTH_SERVICES, KvChange, watch_bucket
from heron_core.auth import ServiceAuthRecord

log = structlog.get_logger(__name__)


class Registry:
    def __init__(self) -> None:
        self._records: dict[str, ServiceAuthRecord] = {}
        self.loaded = asyncio.Event()
        self._loading = False

    def get(self, service_id: str) -> ServiceAuthRecord | None:
        return self._records.get(service_id)

    def __len__(self) -> int:
        return len(self._records)

    async def follow(self, bus: Bus) -> None:
        """Keep the dict equal to the bucket until cancelled (NATS outages included)."""
        async with aclosing(watch_bucket(bus, AUTH_SERVICES)) as changes:
            if not await (await Bucket.open(bus, AUTH_SERVICES)).keys():
                self.loaded.set()
            async for change in changes:
                self.apply(change)
                if not self._loading and not self.loaded.is_set():
                    self._loading = True
                    asyncio.get_running_loop().call_soon(self._caught_up)

    def apply(self, change: KvChange) -> None:
        if change.value is None:
            self._records.pop(change.key, None)
            return
        try:
            record = ServiceAuthRecord.decode(change.value)
        except ValueError as exc:  # malformed, or a schema newer than this gateway
            log.warning(
                "auth record refused, keeping the previous one",
                service_id=change.key, reason=str(exc).splitlines()[0],
            )  # fmt: skip
            return
        self._records[change.key] = record

    def _caught_up(self) -> None:
        self.loaded.set()
        log.info("auth records read", services=len(self._records))
