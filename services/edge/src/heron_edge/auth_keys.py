"""The control process's copy of the KV bucket ``auth_keys``: the auth gateway's public session
keys, which every worker needs to verify ``heron_session`` cookies.

``BucketSync`` feeds each change of the bucket to ``AuthKeyBook.apply``; the book sends the
whole set of current records to the data plane (``publish("auth_keys", records)``) once per
burst of changes (the initial load of a bucket is one send, not one per key). Records whose
``expires_at`` has passed are left out; a record that does not decode is refused with one log
line, and what its key held before stays.
"""

import asyncio
import time
from collections.abc import Callable

import structlog

from heron_bus.kv import KvChange
from heron_core.auth import SigningKeyRecord

log = structlog.get_logger(__name__)


class AuthKeyBook:
    """kid → the gateway's public key record, told to ``on_change`` as a tuple."""

    def __init__(self, on_change: Callable[[tuple[SigningKeyRecord, ...]], None]) -> None:
        self._on_change = on_change
        self._records: dict[str, SigningKeyRecord] = {}
        self._scheduled = False

    def current(self, now: float | None = None) -> tuple[SigningKeyRecord, ...]:
        """The records that have not expired."""
        moment = time.time() if now is None else now
        return tuple(r for r in self._records.values() if r.expires_at.timestamp() > moment)

    def apply(self, change: KvChange) -> None:
        if change.value is None:
            if self._records.pop(change.key, None) is None:
                return
        else:
            try:
                record = SigningKeyRecord.decode(change.value)
            except ValueError as exc:  # malformed, or a schema newer than this edge
                log.warning(
                    "session key refused, keeping the previous one",
                    kid=change.key, reason=str(exc).splitlines()[0],
                )  # fmt: skip
                return
            self._records[change.key] = record
        self._schedule()

    def _schedule(self) -> None:
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._publish()
            return
        self._scheduled = True
        loop.call_soon(self._publish)

    def _publish(self) -> None:
        self._scheduled = False
        records = self.current()
        log.info("session keys to the data plane", keys=len(records))
        self._on_change(records)
