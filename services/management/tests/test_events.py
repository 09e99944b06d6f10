"""``ServiceChanged`` reaches NATS (JetStream stream ``EVENTS``) for every change, and only then.

The events are read back the way other services will read them: a durable consumer through
``heron_bus.events``, against the real nats-server the session started.
"""

import asyncio
import secrets
from pathlib import Path
from typing import Any

import httpx
from event_reader import first_events
from management_fixtures import (
    AccountSeed,
    RunningApi,
    free_port,
    seed_account,
    server_of_its_own,
)

from heron_bus import Bus, connect
from heron_bus.embedded import EmbeddedNats
from heron_core.events import ServiceChanged
from heron_core.tasks import spawn
from heron_core.types import ChangeKind, ServiceMode
from heron_management.db.engine import create_engine, migrate, session_factory
from heron_management.db.tables import OutboxRow
from heron_management.event_bus import NatsPublisher
from heron_management.events import OutboxRelay


async def changes_of(bus: Bus, service_id: str, count: int) -> list[ServiceChanged]:
    """The first ``count`` events about ``service_id`` in the stream, in order."""
    return await first_events(bus, ServiceChanged, lambda e: e.service_id == service_id, count)


def service(domain: str, account: AccountSeed, **extra: Any) -> dict[str, Any]:
    targets = [{"target_type": "peer", "target_id": account.peer_id, "port": 8080}]
    return {"name": "evented", "domain": domain, "targets": targets, **extra}


async def test_each_change_publishes_service_changed(api: RunningApi, account: AccountSeed) -> None:
    first, second = (f"{n}-{secrets.token_hex(4)}.example.test" for n in ("ev", "moved"))
    headers = {"Authorization": f"Token {account.tokens['owner']}"}
    async with httpx.AsyncClient(base_url=api.base_url, headers=headers, timeout=30) as client:
        created = await client.post("/api/services", json=service(first, account))
        assert created.status_code == 201, created.text
        service_id = created.json()["id"]
        target_id = created.json()["targets"][0]["id"]
        # a refused change publishes nothing
        refused = await client.put(f"/api/services/{service_id}", json={"name": "no domain"})
        assert refused.status_code == 422, refused.text
        calls = [
            client.put(f"/api/services/{service_id}", json=service(second, account)),
            client.post(f"/api/services/{service_id}/disable"),
            client.post(f"/api/services/{service_id}/targets/{target_id}/disable"),
            client.delete(f"/api/services/{service_id}"),
        ]
        for call in calls:
            response = await call
            assert response.is_success, response.text

    async with await connect(api.nats_url, name="heron-management-tests") as bus:
        seen = await changes_of(bus, service_id, count=5)

    assert [e.change for e in seen] == [ChangeKind.CREATED] + [ChangeKind.UPDATED] * 3 + [
        ChangeKind.DELETED
    ]
    assert {e.account_id for e in seen} == {account.account_id}
    assert all(e.mode is ServiceMode.HTTP for e in seen)
    assert [e.domain for e in seen] == [first] + [second] * 4
    assert seen[1].previous_domain == first  # the old domain's certificate can go
    assert [e.previous_domain for e in seen[2:]] == [None, None, None]
    assert [e.enabled for e in seen] == [True, True, False, False, False]
    assert len({e.event_id for e in seen}) == 5


async def test_changes_made_while_nats_is_down_are_published_when_it_returns(
    tmp_path: Path,
) -> None:
    nats_port = free_port()
    with server_of_its_own(tmp_path, f"nats://127.0.0.1:{nats_port}") as alone:
        account = await seed_account(alone.database_url)
        async with alone.async_client(account.tokens["owner"]) as client:
            created = await client.post("/api/services", json=service("down.example.test", account))
        assert created.status_code == 201, created.text  # NATS being away never fails a change

        async with (
            EmbeddedNats(store_dir=tmp_path / "nats", port=nats_port) as nats,
            await connect(nats.url, name="heron-management-tests") as bus,
        ):
            seen = await changes_of(bus, created.json()["id"], count=1)
    assert seen[0].change is ChangeKind.CREATED
    assert seen[0].domain == "down.example.test"


async def test_the_relay_stops_when_a_commit_wakes_it_as_it_is_cancelled(
    nats_url: str, tmp_path: Path
) -> None:
    """Shutdown cancels the relay; a commit (a stream saying goodbye) may wake it in the same
    turn of the loop. It must stop all the same: asyncio.wait_for on Python 3.11 swallowed
    such a cancellation, and the relay, and with it management's shutdown, never ended."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'management.db'}")
    await migrate(engine)
    publisher = NatsPublisher(nats_url)
    relay = OutboxRelay(session_factory(engine), publisher)
    task = spawn(relay.run(), name="outbox-relay")
    try:
        await asyncio.sleep(0.3)  # nothing to publish: it waits to be woken
        relay.notify()
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        assert task.cancelled(), "the relay carried on after it was cancelled"
    finally:
        task.cancel()
        await publisher.close()
        await engine.dispose()


class CancelTurnsIntoAnError:
    """A publisher whose client turns a cancellation into its own error, as libraries do."""

    def __init__(self) -> None:
        self.publishing = asyncio.Event()

    async def publish_serialized(self, subject: str, payload: bytes, *, msg_id: str) -> None:
        del subject, payload, msg_id
        self.publishing.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise ConnectionError("connection closed while publishing") from None


async def test_the_relay_stops_when_a_cancellation_comes_out_as_another_error(
    tmp_path: Path,
) -> None:
    """The relay retries every error for ever, but a cancellation that a library turned into
    an error on its way out is still a request to stop."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'management.db'}")
    await migrate(engine)
    sessions = session_factory(engine)
    async with sessions() as session:
        session.add(OutboxRow(subject="heron.events.test", msg_id="m-1", payload="{}"))
        await session.commit()
    publisher = CancelTurnsIntoAnError()
    task = spawn(OutboxRelay(sessions, publisher).run(), name="outbox-relay")
    try:
        async with asyncio.timeout(5):
            await publisher.publishing.wait()
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        assert task.cancelled(), "the relay carried on after it was cancelled"
    finally:
        task.cancel()
        await engine.dispose()
