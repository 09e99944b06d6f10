"""Signing keys: published before use, rotated, kept until their last session expires."""

import asyncio
import base64
import json
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI

from heron_authgateway.keys import KeyRing
from heron_bus.bucket import Bucket
from heron_bus.connection import Bus
from heron_bus.kv import AUTH_KEYS, AUTH_SERVICES
from heron_core.auth import ServiceAuthRecord, SigningKeyRecord
from heron_core.sessions import PublicKeys, SessionError, SigningKey, verify_session
from heron_core.tasks import spawn

PIN = "2468"
PIN_HASH = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1).hash(PIN)
StartGateway = Callable[..., AbstractAsyncContextManager[FastAPI]]


async def key_records(bus: Bus) -> dict[str, SigningKeyRecord]:
    bucket = await Bucket.open(bus, AUTH_KEYS)
    found = {}
    for kid in await bucket.keys():
        entry = await bucket.get(kid)
        if entry is not None and entry.value is not None:
            found[kid] = SigningKeyRecord.decode(entry.value)
    return found


async def log_in(app: FastAPI) -> str:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        response = await http.post(
            "/.heron/auth/login",
            data={"method": "pin", "pin": PIN},
            headers={"x-heron-service-id": "svc_keys", "x-forwarded-for": "203.0.113.1"},
        )
    assert response.status_code == 303
    return response.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]


async def test_rotation_publishes_a_new_key_and_old_sessions_verify_until_expiry(
    bus: Bus, start_gateway: StartGateway
) -> None:
    record = ServiceAuthRecord(
        service_id="svc_keys", account_id="acc", domain="k.example.test",
        session_version="v", pin_hash=PIN_HASH,
    )  # fmt: skip
    await (await Bucket.open(bus, AUTH_SERVICES)).put(record.service_id, record.encode())
    settings = {"authgateway_key_rotation": "1s", "authgateway_session_ttl": "2s"}
    async with start_gateway(**settings) as app:
        first = await log_in(app)
        first_kid = _kid(first)
        await asyncio.sleep(1.1)
        second = await log_in(app)
        published = await key_records(bus)
        assert _kid(second) != first_kid
        assert {first_kid, _kid(second)} <= published.keys()
        held = published[first_kid]
        assert held.expires_at - held.created_at == timedelta(seconds=3)
        keys = PublicKeys(published.values())
        assert verify_session(first, keys).svc == "svc_keys"
        with pytest.raises(SessionError) as expired:
            verify_session(first, keys, now=held.expires_at.timestamp() + 1)
        assert expired.value.reason == "key_expired"
        # the expired record goes from the bucket
        async with asyncio.timeout(5):
            while first_kid in await key_records(bus):  # noqa: ASYNC110  # polling NATS KV
                await asyncio.sleep(0.1)


async def test_any_replica_prunes_expired_keys_but_keeps_live_ones(bus: Bus) -> None:
    bucket = await Bucket.open(bus, AUTH_KEYS)
    now = datetime.now(UTC)
    stale = SigningKey.generate().record(created_at=now - timedelta(hours=2), expires_at=now)
    live = SigningKey.generate().record(created_at=now, expires_at=now + timedelta(hours=1))
    for record in (stale, live):
        await bucket.put(record.kid, record.encode())
    ring = KeyRing(bucket, rotation_s=3600, session_ttl_s=60, clock=lambda: time.time() + 1)

    assert await ring.prune() == 1
    assert set(await bucket.keys()) == {live.kid}


async def test_a_key_lost_from_the_bucket_is_published_again(bus: Bus) -> None:
    bucket = await Bucket.open(bus, AUTH_KEYS)
    ring = KeyRing(bucket, rotation_s=3600, session_ttl_s=60)
    key = await ring.signing_key()
    await bucket.delete(key.kid)
    maintaining = spawn(ring.maintain(), name="keys")
    try:
        async with asyncio.timeout(5):
            while key.kid not in await bucket.keys():  # noqa: ASYNC110  # polling NATS KV
                await asyncio.sleep(0.05)
    finally:
        maintaining.cancel()
    assert await ring.signing_key() is key


def _kid(token: str) -> str:
    head = token.split(".", 1)[0]
    kid: str = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"]
    return kid
