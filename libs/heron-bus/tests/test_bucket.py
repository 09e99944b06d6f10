"""``Bucket.keys``: every key that holds a value, even when nats-py's listing comes back empty."""

import secrets

import nats.js.errors
import pytest

from heron_bus import Bus
from heron_bus.bucket import Bucket
from heron_bus.kv import BucketDefinition

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def filled(bus: Bus) -> Bucket:
    bucket = await Bucket.open(
        bus, BucketDefinition(f"keys_{secrets.token_hex(4)}", "Bucket.keys tests")
    )
    for key in ("a", "b.c", "d"):
        await bucket.put(key, b"1")
    await bucket.delete("d")
    return bucket


async def test_keys_lists_the_keys_with_values(bus: Bus) -> None:
    bucket = await filled(bus)
    assert sorted(await bucket.keys()) == ["a", "b.c"]


async def test_an_empty_listing_is_checked_against_the_stream(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nats-py's ``keys()`` can end before its first entry when the server sent them all before
    the client counted what was pending (it then raises NoKeysError): the stream says better."""
    bucket = await filled(bus)

    async def raced(*_: object, **__: object) -> list[str]:
        raise nats.js.errors.NoKeysError

    monkeypatch.setattr(bucket._kv, "keys", raced)
    assert sorted(await bucket.keys()) == ["a", "b.c"]
    empty = await Bucket.open(bus, BucketDefinition(f"keys_{secrets.token_hex(4)}", "empty"))
    monkeypatch.setattr(empty._kv, "keys", raced)
    assert await empty.keys() == []
