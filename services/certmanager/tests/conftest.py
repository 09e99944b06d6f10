"""Fixtures: a NATS server, Pebble with its DNS, and the edge stand-in, fresh for each test."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from certmanager_harness import Pebble, Responder

from heron_bus.connection import Bus, connect
from heron_bus.embedded import EmbeddedNats
from heron_bus.streams import ensure_streams


@pytest_asyncio.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    async with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        yield server.url


@pytest_asyncio.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    async with await connect(nats_url, name="certmanager tests") as connected:
        await ensure_streams(connected)
        yield connected


@pytest_asyncio.fixture
async def pebble(tmp_path: Path) -> AsyncIterator[Pebble]:
    async with Pebble(tmp_path / "pebble") as running:
        yield running


@pytest_asyncio.fixture
async def responder(bus: Bus, pebble: Pebble, tmp_path: Path) -> AsyncIterator[Responder]:
    async with Responder(bus, pebble.http_port, pebble.tls_port, tmp_path) as answering:
        yield answering
