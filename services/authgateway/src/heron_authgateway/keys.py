"""The session-signing keys of this replica, published to the KV bucket ``auth_keys``.

Each replica makes a fresh Ed25519 key at start and another every ``rotation_s``. A key is
published before it signs anything, with ``expires_at`` = created + rotation + session TTL: the
last session it can sign expires then. It signs for ``rotation_s`` at most, so a session never
outlives its key's record. ``maintain`` rotates on time, puts this replica's live keys back if
the bucket lost them (a NATS server that lost its store), and deletes every expired record,
whoever wrote it (compare-and-set: a record rewritten meanwhile stays).
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from heron_bus.bucket import Bucket
from heron_bus.errors import BusError
from heron_core.auth import SigningKeyRecord
from heron_core.sessions import SigningKey

log = structlog.get_logger(__name__)

#: ``maintain`` looks at the bucket at least this often (lost keys, expired records)
KEY_CHECK_S = 30.0


@dataclass(frozen=True)
class _Held:
    key: SigningKey
    record: SigningKeyRecord
    #: after this moment (epoch seconds) the key signs no more
    signs_until: float


class KeyRing:
    def __init__(
        self,
        bucket: Bucket,
        *,
        rotation_s: float,
        session_ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._bucket = bucket
        self._rotation_s = rotation_s
        self._session_ttl_s = session_ttl_s
        self._clock = clock
        self._held: list[_Held] = []
        self._lock = asyncio.Lock()

    @property
    def published(self) -> list[SigningKeyRecord]:
        """This replica's keys that are still published (newest last)."""
        return [held.record for held in self._held]

    async def signing_key(self) -> SigningKey:
        """The key to sign with now: a new one (published first) when the current is due."""
        async with self._lock:
            if not self._held or self._clock() >= self._held[-1].signs_until:
                await self._rotate()
            return self._held[-1].key

    async def maintain(self) -> None:
        """Rotate, restore and prune until cancelled; NATS errors wait for the next round."""
        while True:
            try:
                await self.signing_key()
                await self._restore()
                await self.prune()
            except BusError as exc:
                log.warning("signing keys not maintained", reason=str(exc))
            await asyncio.sleep(self._next_check_s())

    async def prune(self) -> int:
        """Delete every record in the bucket whose ``expires_at`` has passed; how many went."""
        now = self._clock()
        self._held = [held for held in self._held if held.record.expires_at.timestamp() > now]
        removed = 0
        for kid in await self._bucket.keys():
            entry = await self._bucket.get(kid)
            if entry is None or entry.value is None:
                continue
            try:
                expires = SigningKeyRecord.decode(entry.value).expires_at.timestamp()
            except ValueError:
                expires = 0.0  # not a key anyone can verify with
            if expires <= now and await self._bucket.delete(kid, entry.revision):
                log.info("signing key expired and removed", kid=kid)
                removed += 1
        return removed

    async def _rotate(self) -> None:
        now = self._clock()
        key = SigningKey.generate()
        record = key.record(
            created_at=datetime.fromtimestamp(now, UTC),
            expires_at=datetime.fromtimestamp(now + self._rotation_s + self._session_ttl_s, UTC),
        )
        await self._bucket.put(key.kid, record.encode())
        self._held.append(_Held(key, record, signs_until=now + self._rotation_s))
        log.info("signing key published", kid=key.kid, expires_at=record.expires_at.isoformat())

    async def _restore(self) -> None:
        for held in self._held:
            entry = await self._bucket.get(held.record.kid)
            if entry is None or entry.value is None:
                await self._bucket.put(held.record.kid, held.record.encode())
                log.warning("signing key was missing from the bucket, published again",
                            kid=held.record.kid)  # fmt: skip

    def _next_check_s(self) -> float:
        now = self._clock()
        due = [held.signs_until - now for held in self._held[-1:]]
        due += [held.record.expires_at.timestamp() - now for held in self._held]
        return max(0.05, min([KEY_CHECK_S, *due]))
