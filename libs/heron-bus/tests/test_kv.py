"""The KV buckets: created once with their definitions, and a lease that only one holder gets."""

import nats.js.errors
import pytest

from heron_bus import Bus
from heron_bus.kv import BUCKETS, LEASES, ensure_bucket, ensure_buckets

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_buckets_are_created_with_their_definitions_and_again_is_harmless(bus: Bus) -> None:
    await ensure_buckets(bus)
    await ensure_buckets(bus)  # a second process starting later
    for definition in BUCKETS:
        status = await (await bus.js.key_value(definition.name)).status()
        assert status.bucket == definition.name
        assert status.history == definition.history
        assert (status.ttl or None) == definition.ttl_s  # no TTL reads as 0


async def test_a_lease_is_held_by_whoever_created_it_first(bus: Bus) -> None:
    leases = await ensure_bucket(bus, LEASES)
    await leases.purge("lease.example.com")
    revision = await leases.create("lease.example.com", b"replica-a")
    with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
        await leases.create("lease.example.com", b"replica-b")
    # the holder renews it with the revision it holds; a stale revision is refused
    renewed = await leases.update("lease.example.com", b"replica-a", last=revision)
    with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
        await leases.update("lease.example.com", b"replica-b", last=revision)
    assert renewed > revision
