"""Publish and consume through a real nats-server: what a consuming service relies on."""

import asyncio
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

import pytest
from structlog.testing import capture_logs

from heron_bus import Bus, Delivery, connect, events, subject_for
from heron_bus.embedded import EmbeddedNats
from heron_bus.subjects import EVENTS_STREAM
from heron_core.events import ServiceChanged

pytestmark = pytest.mark.asyncio(loop_scope="module")

NewEvent = Callable[[], ServiceChanged]
Deliveries = AsyncGenerator[Delivery[ServiceChanged], None]


async def next_delivery(deliveries: Deliveries) -> Delivery[ServiceChanged]:
    return await asyncio.wait_for(anext(deliveries), timeout=5)


async def test_a_published_event_comes_back_typed(bus: Bus, new_event: NewEvent) -> None:
    sent = new_event()
    await bus.publish(sent)

    async with aclosing(events(bus, ServiceChanged, durable="roundtrip")) as deliveries:
        delivery = await next_delivery(deliveries)
        await delivery.ack()

    assert delivery.event == sent
    assert isinstance(delivery.event, ServiceChanged)


async def test_a_restarted_durable_resumes_after_what_it_acked(
    bus: Bus, nats_server: EmbeddedNats, new_event: NewEvent
) -> None:
    acked, later = new_event(), new_event()
    await bus.publish(acked)
    async with aclosing(events(bus, ServiceChanged, durable="resumer")) as deliveries:
        await (await next_delivery(deliveries)).ack()

    await bus.publish(later)
    async with (
        await connect(nats_server.url, name="restarted") as restarted,
        aclosing(events(restarted, ServiceChanged, durable="resumer")) as deliveries,
    ):
        delivery = await next_delivery(deliveries)
        await delivery.ack()

    assert delivery.event == later


async def test_a_nakked_event_is_delivered_again(bus: Bus, new_event: NewEvent) -> None:
    sent = new_event()
    await bus.publish(sent)

    async with aclosing(events(bus, ServiceChanged, durable="nakker")) as deliveries:
        await (await next_delivery(deliveries)).nak()
        again = await next_delivery(deliveries)
        await again.ack()

    assert again.event == sent


async def test_a_repeated_msg_id_is_stored_once(bus: Bus, new_event: NewEvent) -> None:
    first, retry, marker = new_event(), new_event(), new_event()
    await bus.publish(first, msg_id="outbox-1")
    await bus.publish(retry, msg_id="outbox-1")
    await bus.publish(marker)

    async with aclosing(events(bus, ServiceChanged, durable="dedup")) as deliveries:
        received = [await next_delivery(deliveries) for _ in range(2)]
        for delivery in received:
            await delivery.ack()

    assert [delivery.event for delivery in received] == [first, marker]
    assert (await bus.js.stream_info(EVENTS_STREAM)).state.messages == 2


async def test_messages_that_are_not_valid_events_are_skipped_and_logged(
    bus: Bus, new_event: NewEvent
) -> None:
    subject = subject_for(ServiceChanged)
    newer = new_event().model_copy(update={"schema_version": 2})
    bad = {
        "not-json": b"password=hunter2",
        "not-an-object": b'["hunter2"]',
        "missing-fields": b'{"schema_version": 1, "domain": "hunter2.example.com"}',
        "newer": newer.model_dump_json().encode(),
    }
    for msg_id, payload in bad.items():
        await bus.publish_serialized(subject, payload, msg_id=msg_id)
    valid = new_event()
    await bus.publish(valid)

    with capture_logs() as logs:
        async with aclosing(events(bus, ServiceChanged, durable="skipper")) as deliveries:
            delivery = await next_delivery(deliveries)
            await delivery.ack()

    assert delivery.event == valid
    assert [log["event"] for log in logs] == ["event skipped"] * len(bad)
    assert "hunter2" not in repr(logs)
    assert "service_id (missing)" in logs[2]["reason"]
    assert "schema_version 2" in logs[3]["reason"]
    consumer = await bus.js.consumer_info(EVENTS_STREAM, "skipper")
    assert consumer.num_ack_pending == 0
    assert consumer.num_redelivered == 0
