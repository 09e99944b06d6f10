"""Support for management's tests: seeded accounts and a real server in a thread."""

import asyncio
import io
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from heron_core.ids import new_id
from heron_core.settings import RunMode
from heron_core.types import ResourceType, Role
from heron_management.app import create_app
from heron_management.db.engine import create_engine, session_factory
from heron_management.db.tables import NetworkRow, PeerRow, ResourceRow, UserRow
from heron_management.identity import add_token, create_account
from heron_management.settings import ManagementSettings

STOP_S = 15


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def postgres_admin(url: str, statement: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE refuse to run inside one)."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class AccountSeed:
    """An account as tests need it: a token per role and one target of each type."""

    account_id: str
    tokens: dict[str, str]
    user_ids: dict[str, str]
    peer_id: str
    resource_ids: dict[str, str]  # by resource type: host, domain, subnet
    network_id: str


async def seed_account(database_url: str) -> AccountSeed:
    """Write an account straight into the database: peers and resources have no create API yet."""
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            suffix = secrets.token_hex(4)
            account, owner = await create_account(
                session, name=f"test-{suffix}", owner_email=f"owner-{suffix}@example.test"
            )
            tokens = {"owner": add_token(session, owner, name="owner").plain}
            user_ids = {"owner": owner.id}
            for role in (Role.ADMIN, Role.NETWORK_ADMIN, Role.AUDITOR, Role.USER):
                user = UserRow(
                    id=new_id("usr"), account_id=account.id, email=f"{role}-{suffix}@example.test",
                    name=str(role), role=role,
                )  # fmt: skip
                session.add(user)
                await session.flush()
                tokens[role.value] = add_token(session, user, name=role.value).plain
                user_ids[role.value] = user.id
            peer = PeerRow(id=new_id("peer"), account_id=account.id, name=f"peer-{suffix}")
            network = NetworkRow(id=new_id("net"), account_id=account.id, name="office")
            session.add(peer)
            session.add(network)
            await session.flush()
            addresses = {ResourceType.HOST: "10.1.0.5", ResourceType.DOMAIN: "db.internal.test",
                         ResourceType.SUBNET: "10.2.0.0/24"}  # fmt: skip
            resource_ids = {}
            for kind, address in addresses.items():
                resource = ResourceRow(
                    id=new_id("res"), account_id=account.id, network_id=network.id,
                    name=f"{kind}-resource", type=kind, address=address,
                )  # fmt: skip
                session.add(resource)
                resource_ids[kind.value] = resource.id
            await session.commit()
            return AccountSeed(
                account_id=account.id, tokens=tokens, user_ids=user_ids, peer_id=peer.id,
                resource_ids=resource_ids, network_id=network.id,
            )  # fmt: skip
    finally:
        await engine.dispose()


async def call(
    client: httpx.AsyncClient, method: str, path: str, expect: int = 200, body: Any = None
) -> Any:
    """One request that must answer ``expect``; its JSON body (None when empty)."""
    response = await client.request(method, path, json=body)
    assert response.status_code == expect, (method, path, response.text)
    return response.json() if response.content else None


async def proxy_token(owner: httpx.AsyncClient) -> str:
    """A new proxy token of ``owner``'s account: what its edges present."""
    created = await call(owner, "POST", "/api/proxy-tokens", 201, {"name": "edge"})
    token: str = created["plain_token"]
    return token


@dataclass
class RunningApi:
    base_url: str
    database_url: str
    nats_url: str
    grpc_target: str = ""  # host:port of the gRPC server (agents' and edges' streams)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Token {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    def async_client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Token {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30)


class ServerThread:
    def __init__(self, settings: ManagementSettings) -> None:
        self.settings = settings
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=settings.management_port,
            log_config=None,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name="management", daemon=True)

    def _run(self) -> None:
        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            await self.server.serve()

        asyncio.run(serve())

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("management did not start within 30 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=STOP_S)
        if self.thread.is_alive():  # a shutdown that hangs is a bug: show where
            raise AssertionError(
                f"management did not stop within {STOP_S} s; its tasks:\n{self._tasks()}"
            )

    def _tasks(self) -> str:
        if self.loop is None:
            return "(no event loop)"
        out = io.StringIO()
        for task in list(asyncio.all_tasks(self.loop)):  # a snapshot, for the failure message
            task.print_stack(limit=8, file=out)
        return out.getvalue()


def management_settings(
    database_url: str, nats_url: str, data_dir: Path, **extra: object
) -> ManagementSettings:
    extra.setdefault("management_grpc_port", free_port())
    return ManagementSettings(
        mode=RunMode.DEVELOPMENT,
        data_dir=data_dir,
        database_url=database_url,
        nats_url=nats_url,
        management_port=free_port(),
        **extra,  # type: ignore[arg-type]
    )


@contextmanager
def running(settings: ManagementSettings) -> Iterator[RunningApi]:
    """Management with ``settings`` in a thread, and how to reach it."""
    with ServerThread(settings):
        yield RunningApi(
            base_url=f"http://127.0.0.1:{settings.management_port}",
            database_url=settings.resolved_database_url(),
            nats_url=settings.nats_url,
            grpc_target=f"127.0.0.1:{settings.management_grpc_port}",
        )


def server_of_its_own(
    tmp_path: Path, nats_url: str, **extra: object
) -> AbstractContextManager[RunningApi]:
    """A management server on a SQLite database of its own, for tests that need other settings
    (or a NATS that is not there yet) than the session's ``api``."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'management.db'}"
    return running(management_settings(database_url, nats_url, tmp_path, **extra))
