import asyncio
from pathlib import Path

import pytest

from heron_bus import Bus, connect, ensure_streams
from heron_bus.embedded import EmbeddedNats
from heron_bus.subjects import ACCESS_LOGS_STREAM, EVENTS_STREAM

pytestmark = pytest.mark.asyncio(loop_scope="module")

WEEK_S = 7 * 24 * 3600.0


async def test_ensuring_twice_keeps_the_streams_and_their_messages(bus: Bus) -> None:
    await ensure_streams(bus)
    await bus.js.publish("heron.events.test.kept", b"{}")

    await ensure_streams(bus)
    await ensure_streams(bus.js)

    events = await bus.js.stream_info(EVENTS_STREAM)
    assert events.state.messages == 1
    assert events.config.max_age == WEEK_S
    assert events.config.duplicate_window == 120.0
    access_logs = await bus.js.stream_info(ACCESS_LOGS_STREAM)
    assert access_logs.config.subjects == ["heron.accesslog.>"]
    assert access_logs.config.max_bytes == 1024**3


async def test_a_stream_changed_by_hand_is_put_back(bus: Bus) -> None:
    info = await bus.js.stream_info(EVENTS_STREAM)
    await bus.js.update_stream(info.config.evolve(max_age=3600.0))

    await ensure_streams(bus)

    assert (await bus.js.stream_info(EVENTS_STREAM)).config.max_age == WEEK_S


async def test_processes_racing_to_create_the_streams_all_succeed(tmp_path: Path) -> None:
    async with EmbeddedNats(store_dir=tmp_path) as server:
        buses = [await connect(server.url, name=f"racer-{n}") for n in range(4)]
        try:
            await asyncio.gather(*(ensure_streams(bus) for bus in buses))
            names = await buses[0].js.streams_info()
        finally:
            for bus in buses:
                await bus.close()

    assert {stream.config.name for stream in names} == {ACCESS_LOGS_STREAM, EVENTS_STREAM}
