"""The KV buckets Heron keeps in JetStream, and making sure they exist.

``certificates`` and ``acme_challenges`` are wire contracts (``heron_core.certificates`` has
their values); ``certmanager_leases`` is the certmanager's own: a key per domain being ordered,
created with ``KeyValue.create`` (which fails when it exists) and kept alive by updating it, so
two certmanager replicas never order the same domain at once and a crashed holder's lease ages
out with the bucket's TTL.

``watch_bucket`` is how a reader follows a bucket: its current values, then each change as a
``KvChange``, watched again after NATS was away.
"""

import asyncio
import hashlib
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing, suppress
from dataclasses import dataclass, field

import nats.js.errors
import structlog
from nats.js.api import KeyValueConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from heron_bus._translate import translated
from heron_bus.connection import Bus
from heron_bus.errors import BusError, BusUnavailableError
from heron_bus.subjects import (
    ACME_CHALLENGES_BUCKET,
    AUTH_ATTEMPTS_BUCKET,
    AUTH_FLOWS_BUCKET,
    AUTH_KEYS_BUCKET,
    AUTH_SERVICES_BUCKET,
    CERTIFICATES_BUCKET,
    LEASES_BUCKET,
)
from heron_core.backoff import Backoff

log = structlog.get_logger(__name__)

#: how often a quiet watch looks whether the connection was lost meanwhile (and how often a
#: watch waiting for NATS looks whether it is back): bounds how late a lost watch is noticed
WATCH_POLL_S = 0.5
#: between two attempts to watch again: quick after a blip, slower while NATS stays away
REWATCH_INITIAL_S = 0.5
REWATCH_MAX_S = 10.0
#: a watch that lasted this long failed for a new reason: the next attempt is quick again
REWATCH_RESET_AFTER_S = 30.0
_REMOVALS = (KV_DEL, KV_PURGE)


@dataclass(frozen=True)
class BucketDefinition:
    name: str
    description: str
    #: entries kept per key
    history: int = 1
    #: an entry older than this disappears; None: never
    ttl_s: float | None = None
    #: the bucket's size limit (a write past it fails); None: none. For buckets that anonymous
    #: visitors write to, so that a flood fails writes instead of filling NATS's disk
    max_bytes: int | None = None

    def to_nats(self) -> KeyValueConfig:
        return KeyValueConfig(
            bucket=self.name,
            description=self.description,
            history=self.history,
            ttl=self.ttl_s,
            max_bytes=self.max_bytes,
            storage=StorageType.FILE,
        )


CERTIFICATES = BucketDefinition(
    CERTIFICATES_BUCKET, "issued certificate chains and keys by domain (certmanager → edges)"
)
ACME_CHALLENGES = BucketDefinition(
    ACME_CHALLENGES_BUCKET,
    "pending ACME challenge answers (certmanager → edges)",
    # an order the certmanager abandoned mid-way must not leave answers behind for ever
    ttl_s=3600.0,
)
#: how long a certmanager's lease on a domain lasts unless it renews it
LEASE_TTL_S = 120.0
LEASES = BucketDefinition(
    LEASES_BUCKET, "which certmanager replica is ordering which domain", ttl_s=LEASE_TTL_S
)
AUTH_KEYS = BucketDefinition(
    AUTH_KEYS_BUCKET,
    "public session-signing keys by kid (auth gateway → edges); each names its own expiry",
)
AUTH_SERVICES = BucketDefinition(
    AUTH_SERVICES_BUCKET,
    "login-protected services' auth settings and secret hashes by service id "
    "(management → auth gateway)",
)
#: failures are forgotten a day after the last one at the latest (a lockout is shorter)
AUTH_ATTEMPTS_TTL_S = 24 * 3600.0
AUTH_ATTEMPTS = BucketDefinition(
    AUTH_ATTEMPTS_BUCKET,
    "failed password and PIN attempts per service and client address (auth gateway replicas)",
    ttl_s=AUTH_ATTEMPTS_TTL_S,
    max_bytes=64 * 1024 * 1024,
)
#: an OIDC login must come back from the provider within this time
AUTH_FLOWS_TTL_S = 600.0
AUTH_FLOWS = BucketDefinition(
    AUTH_FLOWS_BUCKET,
    "OIDC logins in progress and one-time hand-off codes (auth gateway replicas)",
    ttl_s=AUTH_FLOWS_TTL_S,
    max_bytes=64 * 1024 * 1024,
)
BUCKETS = (
    CERTIFICATES, ACME_CHALLENGES, LEASES, AUTH_KEYS, AUTH_SERVICES, AUTH_ATTEMPTS, AUTH_FLOWS,
)  # fmt: skip


async def ensure_bucket(target: Bus | JetStreamContext, bucket: BucketDefinition) -> KeyValue:
    """The bucket, created with its definition when missing; safe when processes race."""
    js = target.js if isinstance(target, Bus) else target
    with translated(f"ensure KV bucket {bucket.name!r}"):
        try:
            return await js.key_value(bucket.name)
        except nats.js.errors.BucketNotFoundError:
            return await js.create_key_value(bucket.to_nats())


async def ensure_buckets(target: Bus | JetStreamContext) -> None:
    for bucket in BUCKETS:
        await ensure_bucket(target, bucket)


@dataclass(frozen=True, slots=True)
class KvChange:
    """A key's new state in a watched bucket; ``value`` None: deleted, purged or aged out."""

    key: str
    value: bytes | None


async def watch_bucket(bus: Bus, bucket: BucketDefinition) -> AsyncGenerator[KvChange, None]:
    """Every key of ``bucket`` with its value, then each change as it happens, forever.

    The bucket is created with its definition when missing. After NATS was away (a reconnect,
    a restarted server, even one that lost its store) the bucket is watched again, with backoff
    while that fails, and only the difference is yielded: keys changed meanwhile with their
    values, keys gone with None. The values of one (re)watch are yielded together, without
    giving the event loop a turn in between. Raises ``BusUnavailableError`` once the connection
    is closed. Close it (``aclose()`` or ``contextlib.aclosing``) to stop watching.
    """
    state = _WatchState()
    backoff = Backoff(
        initial_s=REWATCH_INITIAL_S, max_s=REWATCH_MAX_S, reset_after_s=REWATCH_RESET_AFTER_S
    )
    while True:
        started = time.monotonic()
        try:
            async with aclosing(_watch_once(bus, bucket, state)) as changes:
                async for change in changes:
                    yield change
        except BusError as exc:
            if bus.is_closed:
                raise BusUnavailableError(f"watch KV bucket {bucket.name!r}: closed") from exc
            delay = backoff.delay_after(time.monotonic() - started)
            # one warning per outage; the attempts while it lasts are debug lines
            (log.debug if state.lost else log.warning)(
                "kv watch lost, watching again",
                bucket=bucket.name, reason=str(exc), retry_in_s=delay,
            )  # fmt: skip
            state.lost = True
            await asyncio.sleep(delay)


@dataclass
class _WatchState:
    #: key → digest of the value last yielded
    held: dict[str, bytes] = field(default_factory=dict)
    #: the last watch broke, and no watch has seen the bucket since
    lost: bool = False


async def _watch_once(
    bus: Bus, bucket: BucketDefinition, state: _WatchState
) -> AsyncGenerator[KvChange, None]:
    """One watch, until it breaks (always by raising ``BusError``)."""
    doing = f"watch KV bucket {bucket.name!r}"
    await _until_connected(bus, doing)
    reconnects = _reconnects(bus)
    kv = await ensure_bucket(bus, bucket)
    with translated(doing):
        watcher = await kv.watchall()
    try:
        current: dict[str, bytes] = {}
        while (entry := await _next_entry(bus, watcher, reconnects, doing)) is not None:
            if entry.operation not in _REMOVALS:
                current[entry.key] = entry.value or b""
        changes = [KvChange(key, None) for key in state.held.keys() - current.keys()]
        changes += [KvChange(key, value) for key, value in current.items()]
        log.info("kv bucket watched", bucket=bucket.name, keys=len(current), again=state.lost)
        state.lost = False
        for change in changes:
            if _record(state.held, change):
                yield change
        while True:
            entry = await _next_entry(bus, watcher, reconnects, doing)
            if entry is None:
                continue  # the end of the initial values is marked once; not again
            value = None if entry.operation in _REMOVALS else entry.value or b""
            change = KvChange(entry.key, value)
            if _record(state.held, change):
                yield change
    finally:
        with suppress(BusError), translated(f"stop watching {bucket.name!r}"):
            await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves it unannotated


def _record(held: dict[str, bytes], change: KvChange) -> bool:
    """Note ``change`` in ``held``; False when it repeats what was already yielded."""
    if change.value is None:
        return held.pop(change.key, None) is not None
    digest = hashlib.blake2b(change.value, digest_size=16).digest()
    if held.get(change.key) == digest:
        return False
    held[change.key] = digest
    return True


async def _next_entry(
    bus: Bus, watcher: KeyValue.KeyWatcher, reconnects: int, doing: str
) -> KeyValue.Entry | None:
    """The watcher's next entry, or None where its initial values end.

    Raises ``BusUnavailableError`` once the connection was lost since the watch began: nats-py
    resumes a watch only after it missed two heartbeats, and never from a server that lost its
    store.
    """
    while True:
        if bus.is_closed or _reconnects(bus) != reconnects:
            raise BusUnavailableError(f"{doing}: the connection to NATS was lost")
        try:
            # asyncio.timeout, not wait_for: no task per entry, so entries already queued are
            # taken without giving the event loop a turn
            async with asyncio.timeout(WATCH_POLL_S):
                entry: KeyValue.Entry | None = await anext(watcher)
        except TimeoutError:
            continue
        except StopAsyncIteration as exc:
            raise BusUnavailableError(f"{doing}: the watcher stopped") from exc
        return entry


async def _until_connected(bus: Bus, doing: str) -> None:
    while not bus.is_connected:
        if bus.is_closed:
            raise BusUnavailableError(f"{doing}: the connection is closed")
        await asyncio.sleep(WATCH_POLL_S)


def _reconnects(bus: Bus) -> int:
    count: int = bus.nc.stats["reconnects"]
    return count
