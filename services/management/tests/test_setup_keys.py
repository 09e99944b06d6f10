"""``/api/setup-keys`` over HTTP, and what a login with each kind of key gets (gRPC Login)."""

import asyncio
from datetime import UTC, datetime
from typing import Any

import grpc
import httpx
import pytest
from grpc import aio
from grpc_clients import Management, wireguard_key
from management_fixtures import AccountSeed, RunningApi, call, seed_account


def new_key(owner: httpx.Client, **body: Any) -> dict[str, Any]:
    created = owner.post("/api/setup-keys", json={"name": "laptops", **body})
    assert created.status_code == 201, created.text
    key: dict[str, Any] = created.json()
    return key


async def refused(call: Any) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as caught:
        await call
    return caught.value


def test_a_key_is_shown_once_and_stored_hashed(owner: httpx.Client) -> None:
    created = new_key(owner, type="reusable", expires_in=3600, usage_limit=3)
    assert created["key"].startswith("hsk_") and len(created["key"]) == 40
    assert created["state"] == "valid" and created["valid"] is True
    assert created["used_times"] == 0 and created["usage_limit"] == 3
    assert created["expires_at"] is not None and created["revoked"] is False
    shown = owner.get(f"/api/setup-keys/{created['id']}").json()
    assert shown["key"] == created["key"][:8] + "…"  # masked from now on
    assert {k: v for k, v in shown.items() if k != "key"} == {
        k: v for k, v in created.items() if k != "key"
    }
    assert [k["id"] for k in owner.get("/api/setup-keys").json()] == [created["id"]]


def test_rename_revoke_and_delete(owner: httpx.Client) -> None:
    created = new_key(owner)
    renamed = owner.put(f"/api/setup-keys/{created['id']}", json={"name": "servers"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "servers"
    revoked = owner.put(f"/api/setup-keys/{created['id']}", json={"revoked": True}).json()
    assert revoked["revoked"] is True and revoked["state"] == "revoked" and not revoked["valid"]
    back = owner.put(f"/api/setup-keys/{created['id']}", json={"revoked": False})
    assert back.status_code == 409 and "revoked for good" in back.json()["detail"]
    assert owner.delete(f"/api/setup-keys/{created['id']}").status_code == 204
    assert owner.get(f"/api/setup-keys/{created['id']}").status_code == 404


BAD_KEYS: list[tuple[dict[str, Any], str]] = [  # (request, the field the 422 names)
    ({"type": "one-off", "usage_limit": 5}, "usage_limit"),
    ({"type": "forever"}, "type"),
    ({"expires_in": 366 * 24 * 3600}, "expires_in"),
    ({"expires_in": -1}, "expires_in"),
    ({"usage_limit": "3"}, "usage_limit"),
]


def test_bad_keys_are_refused(owner: httpx.Client) -> None:
    for body, field in BAD_KEYS:
        response = owner.post("/api/setup-keys", json={"name": "x", **body})
        assert response.status_code == 422, (body, response.text)
        assert response.json()["errors"][0]["loc"] == [field], body


def test_setup_key_roles(api: RunningApi, account: AccountSeed) -> None:
    for role, read, write in [
        ("owner", 200, 201), ("network_admin", 200, 201), ("auditor", 200, 403), ("user", 403, 403),
    ]:  # fmt: skip
        with api.client(account.tokens[role]) as client:
            assert client.get("/api/setup-keys").status_code == read, role
            assert client.post("/api/setup-keys", json={"name": "x"}).status_code == write, role


async def created_key(owner: httpx.AsyncClient, **body: Any) -> Any:
    return await call(owner, "POST", "/api/setup-keys", 201, {"name": "laptops", **body})


async def shown(owner: httpx.AsyncClient, path: str) -> Any:
    return await call(owner, "GET", path)


async def test_login_registers_a_peer_and_counts_one_use(
    api: RunningApi, owner_async: httpx.AsyncClient
) -> None:
    key = await created_key(owner_async)
    public_key = wireguard_key()
    async with Management(api.grpc_target) as management:
        login = await management.login(setup_key=key["key"], key=public_key, hostname="web-1")
    peer = await shown(owner_async, f"/api/peers/{login.peer_id}")
    assert peer["name"] == peer["hostname"] == "web-1"
    assert peer["wireguard_public_key"] == public_key
    assert peer["overlay_address"] == peer["ip"] == login.overlay_address
    assert login.overlay_network == "100.64.0.0/10"
    assert login.peer_token.startswith("hpt_")
    used = await shown(owner_async, f"/api/setup-keys/{key['id']}")
    assert used["used_times"] == 1 and used["last_used_at"] is not None


async def test_a_one_off_key_registers_one_peer_and_still_resumes_it(
    api: RunningApi, owner_async: httpx.AsyncClient
) -> None:
    key = await created_key(owner_async, type="one-off")
    first = wireguard_key()
    async with Management(api.grpc_target) as management:
        login = await management.login(setup_key=key["key"], key=first)
        second = await refused(management.login(setup_key=key["key"], key=wireguard_key()))
        assert second.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "usage limit" in (second.details() or "")
        # `heron up --setup-key KEY` again on the same machine: the same peer, no new count
        again = await management.login(setup_key=key["key"], key=first)
    assert (again.peer_id, again.overlay_address) == (login.peer_id, login.overlay_address)
    assert again.peer_token != login.peer_token
    used = await shown(owner_async, f"/api/setup-keys/{key['id']}")
    assert (used["used_times"], used["state"], used["valid"]) == (1, "overused", False)


async def test_a_usage_limit_caps_new_peers(
    api: RunningApi, owner_async: httpx.AsyncClient
) -> None:
    key = await created_key(owner_async, usage_limit=2)
    async with Management(api.grpc_target) as management:
        await management.login(setup_key=key["key"])
        await management.login(setup_key=key["key"])
        third = await refused(management.login(setup_key=key["key"]))
    assert third.code() is grpc.StatusCode.UNAUTHENTICATED
    assert (await shown(owner_async, f"/api/setup-keys/{key['id']}"))["used_times"] == 2


async def test_expired_revoked_and_unknown_keys_are_refused(
    api: RunningApi, owner_async: httpx.AsyncClient
) -> None:
    expiring = await created_key(owner_async, expires_in=1)
    revoked = await created_key(owner_async)
    await owner_async.put(f"/api/setup-keys/{revoked['id']}", json={"revoked": True})
    known = wireguard_key()
    async with Management(api.grpc_target) as management:
        await management.login(setup_key=expiring["key"], key=known)
        until_expiry = datetime.fromisoformat(expiring["expires_at"]) - datetime.now(UTC)
        await asyncio.sleep(max(0.0, until_expiry.total_seconds()) + 0.05)
        reasons = {}
        for name, plain, key in [
            ("expired", expiring["key"], wireguard_key()),
            ("expired, known key", expiring["key"], known),
            ("revoked", revoked["key"], wireguard_key()),
            ("unknown", "hsk_" + "x" * 36, wireguard_key()),
        ]:
            error = await refused(management.login(setup_key=plain, key=key))
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED, name
            reasons[name] = error.details() or ""
    assert "expired" in reasons["expired"] and "expired" in reasons["expired, known key"]
    assert "revoked" in reasons["revoked"] and "not valid" in reasons["unknown"]
    assert (await shown(owner_async, f"/api/setup-keys/{expiring['id']}"))["state"] == "expired"


async def test_relogin_with_a_known_key_resumes_the_same_peer(
    api: RunningApi, owner_async: httpx.AsyncClient
) -> None:
    key = await created_key(owner_async)
    public_key = wireguard_key()
    async with Management(api.grpc_target) as management:
        first = await management.login(setup_key=key["key"], key=public_key, hostname="db")
        again = await management.login(setup_key=key["key"], key=public_key, hostname="db")
        assert (again.peer_id, again.overlay_address) == (first.peer_id, first.overlay_address)
        # the older token stopped working; the newer one logs in without a setup key
        stale = await refused(management.login(key=public_key, peer_token=first.peer_token))
        assert stale.code() is grpc.StatusCode.UNAUTHENTICATED
        resumed = await management.login(key=public_key, peer_token=again.peer_token)
        assert resumed.peer_id == first.peer_id
    assert (await shown(owner_async, f"/api/setup-keys/{key['id']}"))["used_times"] == 1
    peers = await shown(owner_async, "/api/peers")
    assert [p["id"] for p in peers if p["name"] == "db"] == [first.peer_id]


async def test_peer_token_logins_need_the_registered_key(
    api: RunningApi, owner_async: httpx.AsyncClient
) -> None:
    key = await created_key(owner_async)
    async with Management(api.grpc_target) as management:
        login = await management.login(setup_key=key["key"])
        other_key = await refused(management.login(peer_token=login.peer_token))
        nothing = await refused(management.login())
        malformed = await refused(management.login(setup_key=key["key"], key="not-a-key"))
    assert other_key.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "another WireGuard key" in (other_key.details() or "")
    assert nothing.code() is grpc.StatusCode.UNAUTHENTICATED
    assert malformed.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_key_registered_in_one_account_is_refused_in_another(api: RunningApi) -> None:
    first, second = await seed_account(api.database_url), await seed_account(api.database_url)
    public_key = wireguard_key()
    async with (
        api.async_client(first.tokens["owner"]) as a,
        api.async_client(second.tokens["owner"]) as b,
        Management(api.grpc_target) as management,
    ):
        key_a, key_b = await created_key(a), await created_key(b)
        await management.login(setup_key=key_a["key"], key=public_key)
        error = await refused(management.login(setup_key=key_b["key"], key=public_key))
        assert error.code() is grpc.StatusCode.ALREADY_EXISTS
        assert [p for p in await shown(b, "/api/peers") if p["wireguard_public_key"]] == []
        assert (await shown(b, f"/api/setup-keys/{key_b['id']}"))["used_times"] == 0


async def test_peer_names_are_made_unique(api: RunningApi, owner_async: httpx.AsyncClient) -> None:
    key = await created_key(owner_async)
    async with Management(api.grpc_target) as management:
        logins = [await management.login(setup_key=key["key"], hostname="web") for _ in range(3)]
    names = {(await shown(owner_async, f"/api/peers/{x.peer_id}"))["name"] for x in logins}
    assert names == {"web", "web-2", "web-3"}
