"""A KV bucket mirrored in memory through a watch, so every replica sees every domain's record
and certificate as soon as any replica writes it.

The watch is opened again after an error and every ``REWATCH_S`` (a watch can go quiet for
good after a server restart); each opening replays the current entries, and the mirror is
replaced whole once they are in, so a deletion missed while away is not kept.
"""

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

import structlog

from heron_bus.bucket import Bucket
from heron_bus.errors import BusError

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: how long one watch is trusted before it is opened again
REWATCH_S = 600.0
#: after a failed watch, before the next
RETRY_S = 1.0


class Mirror(Generic[T]):
    """``entries``: key → (decoded value, revision); ``on_change(key)`` after each change."""

    def __init__(
        self,
        bucket: Bucket,
        decode: Callable[[bytes], T],
        on_change: Callable[[str], None],
        *,
        rewatch_s: float = REWATCH_S,
    ) -> None:
        self._bucket = bucket
        self._decode = decode
        self._on_change = on_change
        self._rewatch_s = rewatch_s
        self.entries: dict[str, tuple[T, int]] = {}
        #: set once the first replay is in
        self.synced = asyncio.Event()

    def get(self, key: str) -> T | None:
        held = self.entries.get(key)
        return held[0] if held else None

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._rewatch_s):
                    await self._watch_once()
            except TimeoutError:
                continue
            except BusError as exc:
                log.warning("watch interrupted", bucket=self._bucket.name, reason=str(exc))
                await asyncio.sleep(RETRY_S)

    async def _watch_once(self) -> None:
        replay: dict[str, tuple[T, int]] | None = {}
        async for entry in self._bucket.watch():
            if entry is None:  # the replay is complete: it becomes the mirror
                if replay is not None:
                    self.entries, replay = replay, None
                    self.synced.set()
                    self._on_change("")
                continue
            target = self.entries if replay is None else replay
            target.pop(entry.key, None)
            if entry.value is not None:
                try:
                    target[entry.key] = (self._decode(entry.value), entry.revision)
                except ValueError as exc:  # pydantic's ValidationError is one
                    log.warning("unreadable entry", bucket=self._bucket.name, key=entry.key,
                                reason=str(exc))  # fmt: skip
            if replay is None:
                self._on_change(entry.key)
