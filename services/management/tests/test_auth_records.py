"""The KV bucket ``auth_services`` follows the database: what the auth gateway logs users in with.

Read back the way the gateway reads it (``heron_bus.kv.watch_bucket`` semantics through
``Bucket``), against the session's real nats-server; every API test runs on SQLite and
PostgreSQL.
"""

import asyncio
import secrets
from typing import Any

import httpx
from argon2 import PasswordHasher
from management_fixtures import AccountSeed, RunningApi

from heron_bus import connect
from heron_bus.bucket import Bucket
from heron_bus.kv import AUTH_SERVICES
from heron_core.auth import AuthMethod, ServiceAuthRecord
from heron_management.db.engine import create_engine, session_factory
from heron_management.db.tables import ServiceRow

WITHIN_S = 10.0


def service(account: AccountSeed, **extra: Any) -> dict[str, Any]:
    targets = [{"target_type": "peer", "target_id": account.peer_id, "port": 8080}]
    domain = f"auth-{secrets.token_hex(4)}.example.test"
    return {"name": "protected", "domain": domain, "targets": targets, **extra}


async def record_of(api: RunningApi, service_id: str, wanted: Any) -> ServiceAuthRecord | None:
    """The bucket's record for ``service_id`` once ``wanted(record)`` holds (None: deleted)."""
    deadline = asyncio.get_running_loop().time() + WITHIN_S
    async with await connect(api.nats_url, name="auth-records-test") as bus:
        bucket = await Bucket.open(bus, AUTH_SERVICES)
        while True:
            entry = await bucket.get(service_id)
            found = (
                ServiceAuthRecord.decode(entry.value)
                if entry is not None and entry.value is not None
                else None
            )
            if wanted(found):
                return found
            assert asyncio.get_running_loop().time() < deadline, f"last seen: {found}"
            await asyncio.sleep(0.1)


async def test_a_protected_service_has_a_record_that_follows_its_settings(
    api: RunningApi, account: AccountSeed
) -> None:
    auth = {
        "password_auth": {"enabled": True, "password": "correct horse"},
        "pin_auth": {"enabled": True, "pin": "123456"},
        "sso_auth": {"enabled": True, "groups": ["eng"]},
    }
    headers = {"Authorization": f"Token {account.tokens['owner']}"}
    async with httpx.AsyncClient(base_url=api.base_url, headers=headers, timeout=30) as client:
        body = service(account, auth=auth)
        created = await client.post("/api/services", json=body)
        assert created.status_code == 201, created.text
        service_id = created.json()["id"]

        first = await record_of(api, service_id, lambda r: r is not None)
        assert first is not None
        assert first.domain == body["domain"]
        assert first.account_id == account.account_id
        assert first.methods == [AuthMethod.SSO, AuthMethod.PASSWORD, AuthMethod.PIN]
        assert first.sso_groups == ["eng"]
        assert first.password_hash is not None and first.pin_hash is not None
        assert PasswordHasher().verify(first.password_hash, "correct horse")
        assert PasswordHasher().verify(first.pin_hash, "123456")
        assert "correct horse" not in first.model_dump_json()

        # a new password gives a new version (that an unchanged save keeps it, and that every
        # other setting changes it: test_every_auth_change_and_only_a_change_ends_the_sessions)
        same = await client.put(f"/api/services/{service_id}", json={**body, "auth": {
            "password_auth": {"enabled": True}, "pin_auth": {"enabled": True},
            "sso_auth": {"enabled": True, "groups": ["eng"]},
        }})  # fmt: skip
        assert same.status_code == 200, same.text
        changed = {**auth, "password_auth": {"enabled": True, "password": "battery staple"}}
        updated = await client.put(f"/api/services/{service_id}", json={**body, "auth": changed})
        assert updated.status_code == 200, updated.text
        second = await record_of(
            api, service_id, lambda r: r is not None and r.session_version != first.session_version
        )
        assert second is not None
        assert second.password_hash is not None
        assert PasswordHasher().verify(second.password_hash, "battery staple")

        # only header auths left: no browser login, no record
        machines = {"header_auths": [{"header": "X-Api-Key", "value": "k-123"}]}
        only_headers = await client.put(
            f"/api/services/{service_id}", json={**body, "auth": machines}
        )
        assert only_headers.status_code == 200, only_headers.text
        assert await record_of(api, service_id, lambda r: r is None) is None

        again = await client.put(f"/api/services/{service_id}", json={**body, "auth": auth})
        assert again.status_code == 200, again.text
        assert await record_of(api, service_id, lambda r: r is not None)
        deleted = await client.delete(f"/api/services/{service_id}")
        assert deleted.status_code == 204, deleted.text
        assert await record_of(api, service_id, lambda r: r is None) is None


async def test_an_unprotected_service_has_no_record(api: RunningApi, account: AccountSeed) -> None:
    headers = {"Authorization": f"Token {account.tokens['owner']}"}
    async with httpx.AsyncClient(base_url=api.base_url, headers=headers, timeout=30) as client:
        open_service = await client.post("/api/services", json=service(account))
        assert open_service.status_code == 201, open_service.text
        marker = await client.post(
            "/api/services",
            json=service(account, auth={"pin_auth": {"enabled": True, "pin": "4321"}}),
        )
        assert marker.status_code == 201, marker.text
    # once the protected one written after it is there, the open one would be too
    assert await record_of(api, marker.json()["id"], lambda r: r is not None)
    assert await record_of(api, open_service.json()["id"], lambda r: r is None) is None


async def auth_revision(api: RunningApi, service_id: str) -> int:
    engine = create_engine(api.database_url)
    try:
        async with session_factory(engine)() as session:
            row = await session.get(ServiceRow, service_id)
            assert row is not None
            return row.auth_revision
    finally:
        await engine.dispose()


async def test_every_auth_change_and_only_a_change_ends_the_sessions(
    api: RunningApi, account: AccountSeed, owner_async: httpx.AsyncClient
) -> None:
    """The revision behind ``session_version``: a save that changes nothing keeps it, and any
    change of the auth settings (not only a secret) moves it on, never back."""
    sso = {"enabled": True, "groups": ["eng"]}
    auth: dict[str, Any] = {
        "password_auth": {"enabled": True, "password": "correct horse"},
        "pin_auth": {"enabled": True, "pin": "123456"},
        "sso_auth": sso,
    }
    kept = {"password_auth": {"enabled": True}, "pin_auth": {"enabled": True}, "sso_auth": sso}
    steps: list[tuple[str, dict[str, Any], bool]] = [
        ("an unchanged save (secrets kept)", kept, False),
        ("another group", {**kept, "sso_auth": {"enabled": True, "groups": ["eng", "ops"]}}, True),
        ("the PIN turned off", {**kept, "pin_auth": {"enabled": False}}, True),
        (
            "single sign-on turned off",
            {**kept, "pin_auth": {"enabled": False}, "sso_auth": {"enabled": False}},
            True,
        ),
        (
            "the same again",
            {**kept, "pin_auth": {"enabled": False}, "sso_auth": {"enabled": False}},
            False,
        ),
        (
            "back to the first settings",
            kept | {"pin_auth": {"enabled": True, "pin": "123456"}},
            True,
        ),
    ]
    body = service(account, auth=auth)
    created = await owner_async.post("/api/services", json=body)
    assert created.status_code == 201, created.text
    service_id = created.json()["id"]
    revision = await auth_revision(api, service_id)
    for what, settings, changes in steps:
        saved = await owner_async.put(
            f"/api/services/{service_id}", json={**body, "auth": settings}
        )
        assert saved.status_code == 200, f"{what}: {saved.text}"
        now = await auth_revision(api, service_id)
        assert now == revision + changes, f"{what}: revision {revision} -> {now}"
        revision = now
