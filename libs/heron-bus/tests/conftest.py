"""One real nats-server per test module; each test gets its own connection and an empty EVENTS."""

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from heron_bus import Bus, connect, ensure_streams
from heron_bus.embedded import EmbeddedNats
from heron_bus.subjects import EVENTS_STREAM
from heron_core.events import ServiceChanged
from heron_core.ids import new_id
from heron_core.types import AccountId, ChangeKind, ServiceId, ServiceMode


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def nats_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedNats]:
    async with EmbeddedNats(store_dir=tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module")
async def bus(nats_server: EmbeddedNats) -> AsyncIterator[Bus]:
    async with await connect(nats_server.url, name="heron-bus-tests") as connected:
        await ensure_streams(connected)
        await connected.js.purge_stream(EVENTS_STREAM)
        yield connected


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "nats"


@pytest.fixture
def new_event() -> Callable[[], ServiceChanged]:
    def make() -> ServiceChanged:
        return ServiceChanged(
            account_id=AccountId(new_id("acc")), service_id=ServiceId(new_id("svc")),
            change=ChangeKind.CREATED, domain="app.example.com", mode=ServiceMode.HTTP,
            enabled=True,
        )  # fmt: skip

    return make
