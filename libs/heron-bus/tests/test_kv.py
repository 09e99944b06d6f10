"""The KV buckets: created once with their definitions, a lease that only one holder gets, and
watches that follow a bucket across NATS restarts."""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path

import nats.errors
import nats.js.errors
import pytest

from heron_bus import Bus, BusError, BusUnavailableError, connect
from heron_bus.embedded import EmbeddedNats
from heron_bus.kv import (
    BUCKETS,
    LEASES,
    BucketDefinition,
    KvChange,
    ensure_bucket,
    ensure_buckets,
    watch_bucket,
)

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


# --- watch_bucket


async def next_changes(
    changes: AsyncIterator[KvChange], count: int, *, timeout_s: float = 15.0
) -> list[KvChange]:
    async with asyncio.timeout(timeout_s):
        return [await anext(changes) for _ in range(count)]


async def wait_until(condition: Callable[[], bool], *, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110  # nats-py has no event to await for this
            await asyncio.sleep(0.05)


async def put_when_ready(bus: Bus, bucket: BucketDefinition, key: str, value: bytes) -> None:
    """Put once JetStream answers again: a restarted server takes a moment to recover it."""
    async with asyncio.timeout(10.0):
        while True:
            try:
                await (await ensure_bucket(bus, bucket)).put(key, value)
                return
            except (BusError, nats.errors.Error, TimeoutError):
                await asyncio.sleep(0.1)


async def test_a_watch_gives_the_current_values_then_each_change(bus: Bus) -> None:
    bucket = BucketDefinition("watch_values", "test: watch_bucket's values and changes")
    kv = await ensure_bucket(bus, bucket)
    await kv.put("a", b"1")
    await kv.put("b", b"2")
    await kv.put("gone", b"3")
    await kv.delete("gone")

    async with aclosing(watch_bucket(bus, bucket)) as changes:
        initial = await next_changes(changes, 2)
        assert sorted(initial, key=lambda c: c.key) == [KvChange("a", b"1"), KvChange("b", b"2")]

        await kv.put("a", b"10")
        assert await next_changes(changes, 1) == [KvChange("a", b"10")]
        await kv.put("a", b"10")  # the same value again says nothing new
        await kv.delete("b")
        assert await next_changes(changes, 1) == [KvChange("b", None)]
        await kv.purge("a")
        await kv.put("c", b"")
        assert await next_changes(changes, 2) == [KvChange("a", None), KvChange("c", b"")]


async def test_a_watch_carries_on_after_the_server_restarts(store_dir: Path) -> None:
    bucket = BucketDefinition("watch_restart", "test: a watch across a restart")
    async with (
        EmbeddedNats(store_dir=store_dir) as server,
        await connect(server.url, name="test") as bus,
    ):
        await (await ensure_bucket(bus, bucket)).put("before", b"1")
        async with aclosing(watch_bucket(bus, bucket)) as changes:
            assert await next_changes(changes, 1) == [KvChange("before", b"1")]
            await server.stop()
            await server.start()
            await wait_until(lambda: bus.is_connected)
            await put_when_ready(bus, bucket, "after", b"2")
            # "before" is not yielded again: the watch yields what changed while it was away
            assert await next_changes(changes, 1) == [KvChange("after", b"2")]


async def test_after_nats_lost_its_store_the_watch_says_which_keys_are_gone(
    tmp_path: Path,
) -> None:
    bucket = BucketDefinition("watch_lost", "test: a watch across a store that was lost")
    # the store the server comes back with: one key kept as it was, one new
    async with (
        EmbeddedNats(store_dir=tmp_path / "replacement") as replacement,
        await connect(replacement.url, name="test") as bus,
    ):
        kv = await ensure_bucket(bus, bucket)
        await kv.put("kept", b"same")
        await kv.put("new", b"2")
    server = EmbeddedNats(store_dir=tmp_path / "first")
    async with server, await connect(server.url, name="test") as bus:
        kv = await ensure_bucket(bus, bucket)
        await kv.put("kept", b"same")
        await kv.put("lost", b"1")
        async with aclosing(watch_bucket(bus, bucket)) as changes:
            assert len(await next_changes(changes, 2)) == 2
            await server.stop()
            async with EmbeddedNats(store_dir=tmp_path / "replacement", port=server.port):
                assert await next_changes(changes, 2) == [
                    KvChange("lost", None),
                    KvChange("new", b"2"),
                ]
                await put_when_ready(bus, bucket, "later", b"3")
                assert await next_changes(changes, 1) == [KvChange("later", b"3")]


async def test_a_watch_ends_when_its_connection_is_closed(nats_server: EmbeddedNats) -> None:
    bucket = BucketDefinition("watch_closed", "test: a watch on a closed connection")
    async with await connect(nats_server.url, name="test") as bus:
        await (await ensure_bucket(bus, bucket)).put("a", b"1")
        async with aclosing(watch_bucket(bus, bucket)) as changes:
            assert await next_changes(changes, 1) == [KvChange("a", b"1")]
            await bus.close()
            with pytest.raises(BusUnavailableError, match="watch KV bucket 'watch_closed'"):
                await next_changes(changes, 1)
