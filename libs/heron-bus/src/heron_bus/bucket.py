"""NATS KV with compare-and-set, in Heron's types (nats-py's stay inside).

``Bucket`` wraps one bucket: ``get`` gives the value and its revision, ``create`` and ``update``
write only if nobody wrote since (``None`` when someone did), ``watch`` yields every current
entry, then ``None``, then each change. nats-py errors become ``heron_bus`` errors.
"""

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from heron_bus._translate import cancellation_kept
from heron_bus.connection import Bus
from heron_bus.errors import BusError, BusUnavailableError
from heron_bus.kv import BucketDefinition, ensure_bucket

#: a watch that stays silent this long is asked again; bounds how late a dead one is noticed
WATCH_POLL_S = 5.0


@dataclass(frozen=True)
class Entry:
    key: str
    #: None: the key was deleted (or expired)
    value: bytes | None
    revision: int


class Bucket:
    def __init__(self, kv: KeyValue, name: str, js: JetStreamContext) -> None:
        self._kv = kv
        self._js = js
        self.name = name

    @classmethod
    async def open(cls, bus: Bus, definition: BucketDefinition) -> "Bucket":
        return cls(await ensure_bucket(bus, definition), definition.name, bus.js)

    async def get(self, key: str) -> Entry | None:
        """The key's entry (value None if it was deleted); None if it never existed."""
        with self._translated(f"get {key!r}"):
            try:
                entry = await self._kv.get(key)
            except nats.js.errors.KeyNotFoundError as gone:
                if gone.entry is None or gone.entry.revision is None:
                    return None
                return Entry(key, None, gone.entry.revision)
        return Entry(key, entry.value, entry.revision or 0)

    async def keys(self) -> list[str]:
        """Every key that has a value now."""
        with self._translated("list keys"):
            try:
                return list(await self._kv.keys())
            except nats.js.errors.NoKeysError:
                pass
            # nats-py's listing can end before its first entry: when the server has sent every
            # entry before the client asked how many were pending, it sees none pending and
            # none received yet. So "none" is checked against the stream: the keys with any
            # message, and of those the ones whose last message is a value, not a deletion.
            prefix = f"$KV.{self.name}."
            info = await self._js.stream_info(f"KV_{self.name}", subjects_filter=f"{prefix}>")
            subjects = info.state.subjects or {}
        found = []
        for subject in subjects:
            key = subject.removeprefix(prefix)
            entry = await self.get(key)
            if entry is not None and entry.value is not None:
                found.append(key)
        return found

    async def put(self, key: str, value: bytes) -> int:
        with self._translated(f"put {key!r}"):
            return await self._kv.put(key, value)

    async def create(self, key: str, value: bytes) -> int | None:
        """Write ``value`` if the key has none (never set, or deleted); None if it has one."""
        with self._translated(f"create {key!r}"):
            try:
                return await self._kv.create(key, value)
            except nats.js.errors.KeyWrongLastSequenceError:
                return None

    async def update(self, key: str, value: bytes, revision: int) -> int | None:
        """Write ``value`` if the key is still at ``revision``; None if it moved on."""
        with self._translated(f"update {key!r}"):
            try:
                return await self._kv.update(key, value, last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                return None

    async def delete(self, key: str, revision: int | None = None) -> bool:
        """Delete the key (only if still at ``revision``, when given); False if it moved on."""
        with self._translated(f"delete {key!r}"):
            try:
                await self._kv.delete(key, last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                return False
            except nats.js.errors.APIError as exc:
                if exc.err_code in (10071, 10164):  # wrong last sequence, as update raises it
                    return False
                raise
        return True

    async def watch(self) -> AsyncIterator[Entry | None]:
        """Every current entry, then ``None`` (caught up), then each change, until closed."""
        with self._translated("watch"):
            watcher = await self._kv.watchall()
        try:
            while True:
                with self._translated("watch"):
                    try:
                        # nats-py leaves these two unannotated
                        update = await watcher.updates(timeout=WATCH_POLL_S)  # type: ignore[no-untyped-call]
                    except nats.errors.TimeoutError:
                        continue
                if update is None:
                    yield None
                    continue
                deleted = update.operation in (KV_DEL, KV_PURGE)
                yield Entry(update.key, None if deleted else update.value, update.revision or 0)
        finally:
            with suppress(BusError), self._translated("stop watching"):
                await watcher.stop()  # type: ignore[no-untyped-call]

    @contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        try:
            with cancellation_kept(f"{doing} in KV bucket {self.name!r}"):
                yield
        except (TimeoutError, nats.errors.ConnectionClosedError, nats.errors.NoServersError) as exc:
            raise BusUnavailableError(f"{doing} in KV bucket {self.name!r}: {exc!r}") from exc
        except nats.errors.Error as exc:
            raise BusError(f"{doing} in KV bucket {self.name!r}: {exc!r}") from exc
