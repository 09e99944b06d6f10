"""Management tests run against real servers: NATS, SQLite and PostgreSQL, a DNS server
(``dns_server``: custom domains are verified against it), and uvicorn on 127.0.0.1.

The ``api`` fixture is one management server per database backend for the whole session; every
test gets fresh accounts (``account_factory``), so tests never see each other's objects.
"""

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
import pytest_asyncio
from dns_server import ChallTestServer
from management_fixtures import (
    AccountSeed,
    RunningApi,
    management_settings,
    postgres_admin,
    running,
    seed_account,
)
from sqlalchemy.engine import make_url

from heron_bus.embedded import EmbeddedNats

BACKENDS = ["sqlite", "postgres"]
SNAPSHOT_BATCH_SIZE = 2


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def nats_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    async with EmbeddedNats(store_dir=tmp_path_factory.mktemp("nats")) as server:
        yield server.url


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'management.db'}"
        return
    base = os.environ.get("HERON_TEST_POSTGRES_URL")
    if not base:
        pytest.fail(
            "HERON_TEST_POSTGRES_URL is not set: run the suite with scripts/test, which starts a "
            "throw-away PostgreSQL, or point it at one (postgresql+asyncpg://user@host:port/db)"
        )
    name = f"heron_test_{secrets.token_hex(4)}"
    asyncio.run(postgres_admin(base, f'CREATE DATABASE "{name}"'))
    yield make_url(base).set(database=name).render_as_string(hide_password=False)
    asyncio.run(postgres_admin(base, f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def dns_server() -> Iterator[ChallTestServer]:
    with ChallTestServer() as server:
        yield server


@pytest.fixture(scope="session")
def api(
    database_url: str,
    nats_url: str,
    dns_server: ChallTestServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningApi]:
    settings = management_settings(
        database_url,
        nats_url,
        tmp_path_factory.mktemp("data"),
        # small batches, so that every edge snapshot of a few services spans several
        management_snapshot_batch_size=SNAPSHOT_BATCH_SIZE,
        management_dns_resolver=dns_server.resolver,
    )
    with running(settings) as api:
        yield api


AccountFactory = Callable[[], AccountSeed]


@pytest.fixture
def account_factory(api: RunningApi) -> AccountFactory:
    """Fresh accounts, each with one user and token per role, a peer and a resource of each kind."""

    def make() -> AccountSeed:
        return asyncio.run(seed_account(api.database_url))

    return make


@pytest.fixture
def account(account_factory: AccountFactory) -> AccountSeed:
    return account_factory()


@pytest.fixture
def owner(api: RunningApi, account: AccountSeed) -> Iterator[httpx.Client]:
    with api.client(account.tokens["owner"]) as client:
        yield client


@pytest_asyncio.fixture
async def owner_async(api: RunningApi, account: AccountSeed) -> AsyncIterator[httpx.AsyncClient]:
    """The owner's client for async tests (which gRPC tests are)."""
    async with api.async_client(account.tokens["owner"]) as client:
        yield client


@pytest.fixture
def unique_domain() -> Callable[[str], str]:
    """Domains under ``proxy.example.test``, the cluster of ``Management.edge_sync``'s edges
    unless told otherwise: accepted before and after such an edge registered."""

    def make(prefix: str = "app") -> str:
        return f"{prefix}-{secrets.token_hex(4)}.proxy.example.test"

    return make
