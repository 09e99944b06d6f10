"""Fixtures: a NATS server per test, and gateways (the whole app, lifespan included) on it."""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from fastapi import FastAPI

from heron_authgateway.app import create_app
from heron_authgateway.settings import AuthGatewaySettings
from heron_bus.connection import Bus, connect
from heron_bus.embedded import EmbeddedNats

if TYPE_CHECKING:
    from heron_authgateway.gateway import Gateway

#: a gateway is ready (NATS, records read, key published) well within this
READY_TIMEOUT_S = 10.0

StartGateway = Callable[..., AbstractAsyncContextManager[FastAPI]]


@pytest_asyncio.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    async with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        yield server.url


@pytest_asyncio.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    async with await connect(nats_url, name="authgateway tests") as connected:
        yield connected


@pytest.fixture
def start_gateway(nats_url: str) -> StartGateway:
    """``async with start_gateway(**settings) as app``: a gateway app running its lifespan,
    ready; settings are ``AuthGatewaySettings`` fields (development mode by default)."""

    @asynccontextmanager
    async def started(**overrides: Any) -> AsyncIterator[FastAPI]:
        settings = AuthGatewaySettings(**{"nats_url": nats_url, "mode": "development", **overrides})
        app = create_app(settings, client_name="authgateway under test")
        async with app.router.lifespan_context(app):
            gateway: Gateway = app.state.gateway
            async with asyncio.timeout(READY_TIMEOUT_S):
                while gateway.problems():  # noqa: ASYNC110  # readiness has no event across its parts
                    await asyncio.sleep(0.02)
            yield app

    return started
