"""The certificate manager's events move a service's status, and the retry action asks it again.

Events are published on the session's real NATS as the certificate manager publishes them
(``CertificateIssued``, ``CertificateFailed``); management's durable consumers store them and
derive the status; the retry's ``CertificateRequested`` is read back with a durable consumer.
"""

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from event_reader import first_events
from grpc_clients import Management, service_status
from management_fixtures import (
    AccountSeed,
    RunningApi,
    call,
    free_port,
    proxy_token,
    seed_account,
    server_of_its_own,
)
from status_waits import CLUSTER, add_service, meta, synced, wait_for

from heron_bus import Bus, connect, ensure_streams
from heron_bus.embedded import EmbeddedNats
from heron_core.events import CertificateFailed, CertificateIssued, CertificateRequested

CA_REASON = "urn:ietf:params:acme:error:connection: 203.0.113.9: Timeout during connect"
WITHIN_S = 30.0  # a consumer that waited for NATS retries with backoff


@pytest_asyncio.fixture
async def bus(api: RunningApi) -> AsyncIterator[Bus]:
    async with await connect(api.nats_url, name="heron-management-tests") as connected:
        await ensure_streams(connected)
        yield connected


def web_domain() -> str:
    return f"web-{secrets.token_hex(4)}.{CLUSTER}"


def issued(domain: str, **extra: Any) -> CertificateIssued:
    now = datetime.now(UTC)
    return CertificateIssued(
        domain=domain, not_before=now - timedelta(hours=1), not_after=now + timedelta(days=90),
        issuer="Pebble Intermediate CA 4f1d7e", **extra,
    )  # fmt: skip


async def eventually(owner: httpx.AsyncClient, service_id: str, key: str, value: Any) -> Any:
    """The service's ``meta`` once ``meta[key]`` is ``value`` (a datetime compares parsed)."""
    deadline = time.monotonic() + WITHIN_S
    while True:
        found = await meta(owner, service_id)
        shown = found[key]
        if isinstance(value, datetime) and shown is not None:
            shown = datetime.fromisoformat(shown)
        if shown == value:
            return found
        assert time.monotonic() < deadline, (key, value, found)
        await asyncio.sleep(0.05)


async def test_a_failure_shows_with_the_cas_reason_until_a_certificate_is_issued(
    api: RunningApi, owner_async: httpx.AsyncClient, account: AccountSeed, bus: Bus
) -> None:
    owner = owner_async
    token = await proxy_token(owner)
    domain, other = web_domain(), web_domain()
    web = await add_service(owner, account, domain)
    marker = await add_service(owner, account, other)
    async with Management(api.grpc_target) as management, management.edge_sync(token) as edge:
        await synced(edge)
        edge.send(service_status(web["id"], tunnel_up=True))
        edge.send(service_status(marker["id"], tunnel_up=True))
        await wait_for(owner, web["id"], "certificate_pending")

        retry_at = datetime(2031, 5, 4, 3, 2, 1, tzinfo=UTC)
        await bus.publish(CertificateFailed(domain=domain, reason=CA_REASON, retry_at=retry_at))
        failed = await wait_for(owner, web["id"], "certificate_failed")
        assert failed["status_reason"] == (
            f"no certificate for {domain!r}: {CA_REASON} (the next attempt is at "
            "2031-05-04 03:02:01 UTC)"
        )
        assert failed["certificate_issued_at"] is None

        certificate = issued(domain.upper() + ".")  # as a CA might spell it
        await bus.publish(certificate)
        found = await eventually(owner, web["id"], "certificate_issued_at", certificate.occurred_at)
        assert found["status"] == "certificate_pending"  # issued; the edge has yet to load it

        # a failure from before the issue, delivered late, shows nothing; the marker's failure
        # comes after it on the same consumer, so once the marker shows it, it was handled
        late = certificate.occurred_at - timedelta(minutes=1)
        await bus.publish(CertificateFailed(domain=domain, reason="stale", occurred_at=late))
        await bus.publish(CertificateFailed(domain=other, reason="marker"))
        await wait_for(owner, marker["id"], "certificate_failed", "marker")
        assert (await meta(owner, web["id"]))["status"] == "certificate_pending"

        edge.send(service_status(web["id"], tunnel_up=True, certificate_available=True))
        active = await wait_for(owner, web["id"], "active")
        # a renewal's failure does not take down a service whose edges hold a certificate
        await bus.publish(CertificateFailed(domain=domain, reason="renewal refused"))
        await bus.publish(CertificateFailed(domain=other, reason="second marker"))
        await wait_for(owner, marker["id"], "certificate_failed", "second marker")
        assert (await meta(owner, web["id"])) == active


async def test_retry_asks_the_certificate_manager_and_shows_certificate_pending(
    api: RunningApi, owner_async: httpx.AsyncClient, account: AccountSeed, bus: Bus
) -> None:
    owner = owner_async
    token = await proxy_token(owner)
    domain = web_domain()
    web = await add_service(owner, account, domain)
    retry = f"/api/services/{web['id']}/certificate/retry"
    async with Management(api.grpc_target) as management, management.edge_sync(token) as edge:
        await synced(edge)
        edge.send(service_status(web["id"], tunnel_up=True))
        await bus.publish(CertificateFailed(domain=domain, reason=CA_REASON))
        failed = await wait_for(owner, web["id"], "certificate_failed", CA_REASON)
        assert "POST /api/services/{id}/certificate/retry" in failed["status_reason"]

        retried = await call(owner, "POST", retry, 202)
        assert (retried["id"], retried["meta"]["status"]) == (web["id"], "certificate_pending")
        [requested] = await first_events(bus, CertificateRequested, lambda e: e.domain == domain, 1)
        assert requested.account_id == account.account_id

        # the certificate manager tried again and failed again: shown again
        await bus.publish(CertificateFailed(domain=domain, reason="still refused"))
        await wait_for(owner, web["id"], "certificate_failed", "still refused")


@pytest.mark.parametrize(
    ("role", "expected"),
    [("admin", 202), ("network_admin", 202), ("auditor", 403), ("user", 403)],
)
def test_retry_is_for_those_who_manage_services(
    api: RunningApi, account: AccountSeed, role: str, expected: int
) -> None:
    with api.client(account.tokens["owner"]) as owner:
        body = {"name": "s", "domain": web_domain(), "targets": []}
        service = owner.post("/api/services", json=body).json()
    with api.client(account.tokens[role]) as client:
        answer = client.post(f"/api/services/{service['id']}/certificate/retry")
        assert answer.status_code == expected, answer.text


def test_a_service_without_a_certificate_has_nothing_to_retry(
    api: RunningApi, owner: httpx.Client
) -> None:
    for mode in ("tcp", "udp", "tls"):
        body: dict[str, Any] = {"name": "db", "domain": web_domain(), "mode": mode, "targets": []}
        service = owner.post("/api/services", json=body).json()
        refused = owner.post(f"/api/services/{service['id']}/certificate/retry")
        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"] == (
            f"service 'db' is a {mode} service: it has no certificate to retry (only HTTP "
            "services get one: the edge passes TLS services' TLS through)"
        )


async def test_a_deleted_or_moved_service_forgets_its_certificate(
    owner_async: httpx.AsyncClient, account: AccountSeed, bus: Bus
) -> None:
    owner = owner_async
    domain = web_domain()
    first = await add_service(owner, account, domain)
    certificate = issued(domain)
    await bus.publish(certificate)
    await eventually(owner, first["id"], "certificate_issued_at", certificate.occurred_at)
    await call(owner, "DELETE", f"/api/services/{first['id']}", 204)
    again = await add_service(owner, account, domain)
    assert again["meta"]["certificate_issued_at"] is None

    renewed = issued(domain, renewal=True)
    await bus.publish(renewed)
    await eventually(owner, again["id"], "certificate_issued_at", renewed.occurred_at)
    body = {"name": "s", "domain": web_domain(), "targets": again["targets"]}
    moved = await call(owner, "PUT", f"/api/services/{again['id']}", 200, body)
    assert moved["meta"]["certificate_issued_at"] is None


async def test_certificate_events_published_while_management_waits_for_nats_arrive(
    tmp_path: Path,
) -> None:
    nats_port = free_port()
    with server_of_its_own(tmp_path, f"nats://127.0.0.1:{nats_port}") as alone:
        account = await seed_account(alone.database_url)
        async with alone.async_client(account.tokens["owner"]) as owner:
            domain = web_domain()
            web = await add_service(owner, account, domain)
            async with (
                EmbeddedNats(store_dir=tmp_path / "nats", port=nats_port) as nats,
                await connect(nats.url, name="heron-management-tests") as bus,
            ):
                await ensure_streams(bus)
                certificate = issued(domain)
                await bus.publish(certificate)
                await eventually(owner, web["id"], "certificate_issued_at", certificate.occurred_at)
