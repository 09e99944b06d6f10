"""The connection's behaviour when NATS is missing, stops, or comes back."""

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from pathlib import Path

import pytest

from heron_bus import BusError, BusUnavailableError, Delivery, connect, ensure_streams, events
from heron_bus import consume as consume_module
from heron_bus.embedded import EmbeddedNats
from heron_core.events import ServiceChanged
from heron_core.tasks import spawn

NewEvent = Callable[[], ServiceChanged]


async def wait_until(condition: Callable[[], bool], *, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110  # nats-py has no event to await for this
            await asyncio.sleep(0.05)


async def next_event(deliveries: AsyncGenerator[Delivery[ServiceChanged], None]) -> ServiceChanged:
    delivery = await anext(deliveries)
    await delivery.ack()
    return delivery.event


async def test_connecting_to_nothing_fails_within_the_timeout_naming_the_url() -> None:
    started = time.monotonic()

    with pytest.raises(BusUnavailableError, match=r"connect to 'nats://127\.0\.0\.1:1'"):
        await connect("nats://127.0.0.1:1", name="test", connect_timeout_s=0.3)

    assert time.monotonic() - started < 1.0


async def test_credentials_in_the_url_stay_out_of_messages() -> None:
    with pytest.raises(BusUnavailableError) as caught:
        await connect("nats://heron:s3cret@127.0.0.1:1", name="test", connect_timeout_s=0.1)

    assert "s3cret" not in str(caught.value)
    assert "'nats://***@127.0.0.1:1'" in str(caught.value)


@pytest.mark.parametrize("url", ["nats://127.0.0.1:notaport", ""])
async def test_a_malformed_url_is_refused_at_once(url: str) -> None:
    with pytest.raises(BusError, match="connect to") as caught:
        await connect(url, name="test", connect_timeout_s=5)

    assert not isinstance(caught.value, BusUnavailableError)


async def test_publishing_to_a_stopped_server_fails_quickly(
    store_dir: Path, new_event: NewEvent
) -> None:
    async with (
        EmbeddedNats(store_dir=store_dir) as server,
        await connect(server.url, name="test") as bus,
    ):
        await ensure_streams(bus)
        await server.stop()
        started = time.monotonic()

        with pytest.raises(
            BusUnavailableError, match=r"publish to 'heron\.events\.service\.changed'"
        ):
            await bus.publish(new_event(), timeout_s=1.0)

        assert time.monotonic() - started < 1.5


async def test_publish_and_consume_carry_on_after_the_server_restarts(
    store_dir: Path, new_event: NewEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consume_module, "FETCH_WAIT_S", 0.5)  # notice the restart sooner
    before, after = new_event(), new_event()
    server = EmbeddedNats(store_dir=store_dir)
    async with server, await connect(server.url, name="test") as bus:
        await ensure_streams(bus)
        await bus.publish(before)
        async with aclosing(events(bus, ServiceChanged, durable="survivor")) as deliveries:
            await (await anext(deliveries)).ack()
            waiting = spawn(next_event(deliveries), name="test-consumer")
            await server.stop()
            await server.start()
            await wait_until(lambda: bus.is_connected)
            await bus.publish(after)

            assert await asyncio.wait_for(waiting, timeout=5) == after


async def test_closing_the_bus_ends_its_consumers(store_dir: Path, new_event: NewEvent) -> None:
    async with EmbeddedNats(store_dir=store_dir) as server:
        bus = await connect(server.url, name="test")
        await ensure_streams(bus)
        await bus.publish(new_event())
        async with aclosing(events(bus, ServiceChanged, durable="ender")) as deliveries:
            await next_event(deliveries)
            await bus.close()

            with pytest.raises(BusUnavailableError, match="the connection is closed"):
                await anext(deliveries)
