"""Who may do what, over HTTP: 401 without a valid token, 403 for a role that may not."""

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from management_fixtures import AccountSeed, RunningApi


def _service(seed: AccountSeed, domain: str) -> dict[str, Any]:
    return {
        "name": "s",
        "domain": domain,
        "targets": [{"target_type": "peer", "target_id": seed.peer_id}],
    }


@pytest.mark.parametrize(
    "authorization",
    [None, "Token", "Token nope", "Basic dXNlcjpwYXNz", "Token " + "x" * 600, "hrn_nothing"],
)
def test_without_a_valid_token_everything_is_401(
    api: RunningApi, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with api.client() as client:
        for method, path in [
            ("GET", "/api/services"),
            ("POST", "/api/services"),
            ("GET", "/api/users"),
            ("DELETE", "/api/tokens/tok_x"),
        ]:
            response = client.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Token"
            assert response.headers["content-type"] == "application/problem+json"


def test_bearer_is_accepted_as_well(api: RunningApi, account: AccountSeed) -> None:
    with api.client() as client:
        response = client.get(
            "/api/services", headers={"Authorization": f"Bearer {account.tokens['owner']}"}
        )
        assert response.status_code == 200


def test_expired_tokens_are_refused(api: RunningApi, owner: httpx.Client) -> None:
    created = owner.post("/api/tokens", json={"name": "short", "expires_in": 1}).json()
    assert datetime.fromisoformat(created["expires_at"]) <= datetime.now(UTC) + timedelta(seconds=2)
    with api.client(created["plain_token"]) as client:
        assert client.get("/api/services").status_code == 200
        time.sleep(
            max(
                0.0,
                (datetime.fromisoformat(created["expires_at"]) - datetime.now(UTC)).total_seconds(),
            )
            + 0.05
        )
        response = client.get("/api/services")
        assert response.status_code == 401
        assert "expired" in response.json()["detail"]


def test_revoked_tokens_stop_working(api: RunningApi, owner: httpx.Client) -> None:
    created = owner.post("/api/tokens", json={"name": "temp"}).json()
    assert created["plain_token"].startswith("hrn_")
    assert "plain_token" not in owner.get(f"/api/tokens/{created['id']}").json()
    assert owner.delete(f"/api/tokens/{created['id']}").status_code == 204
    with api.client(created["plain_token"]) as client:
        assert client.get("/api/services").status_code == 401


@pytest.mark.parametrize(
    ("role", "read", "write"),
    [
        ("owner", 200, 201),
        ("admin", 200, 201),
        ("network_admin", 200, 201),
        ("auditor", 200, 403),
        ("user", 403, 403),
    ],
)
def test_service_permissions_by_role(
    api: RunningApi, account: AccountSeed, unique_domain: Any, role: str, read: int, write: int
) -> None:
    with api.client(account.tokens[role]) as client, api.client(account.tokens["owner"]) as owner:
        existing = owner.post("/api/services", json=_service(account, unique_domain("r"))).json()
        assert client.get("/api/services").status_code == read
        assert client.get(f"/api/services/{existing['id']}").status_code == read
        created = client.post("/api/services", json=_service(account, unique_domain("w")))
        assert created.status_code == write, created.text
        changed = 200 if write == 201 else 403
        assert client.post(f"/api/services/{existing['id']}/disable").status_code == changed
        assert (
            client.post(
                f"/api/services/{existing['id']}/targets",
                json={"target_type": "peer", "target_id": account.peer_id, "path": "/x"},
            ).status_code
            == write
        )
        assert client.delete(f"/api/services/{existing['id']}").status_code == (
            204 if write == 201 else 403
        )
        if write == 403:
            assert created.json()["detail"].startswith(f"role '{role}' may not")


def test_user_management_rules(api: RunningApi, account: AccountSeed) -> None:
    with api.client(account.tokens["admin"]) as admin, api.client(account.tokens["owner"]) as owner:
        made = admin.post(
            "/api/users", json={"email": "Ops@Example.test", "name": "Ops", "role": "network_admin"}
        )
        assert made.status_code == 201, made.text
        assert made.json()["email"] == "ops@example.test"
        assert (
            admin.post(
                "/api/users", json={"email": "ops@example.test", "name": "Again", "role": "user"}
            ).status_code
            == 409
        )
        assert (
            admin.post(
                "/api/users", json={"email": "boss@example.test", "name": "Boss", "role": "owner"}
            ).status_code
            == 403
        )
        assert (
            admin.put(f"/api/users/{account.user_ids['owner']}", json={"role": "user"}).status_code
            == 403
        )
        # The last owner cannot be demoted or deleted.
        last = owner.put(f"/api/users/{account.user_ids['owner']}", json={"role": "admin"})
        assert last.status_code == 409 and "at least one owner" in last.json()["detail"]
        assert owner.delete(f"/api/users/{account.user_ids['owner']}").status_code == 409
        assert (
            owner.put(f"/api/users/{made.json()['id']}", json={"role": "auditor"}).json()["role"]
            == "auditor"
        )
        assert owner.delete(f"/api/users/{made.json()['id']}").status_code == 204
    with api.client(account.tokens["auditor"]) as auditor:
        assert auditor.get("/api/users").status_code == 200
        assert (
            auditor.post(
                "/api/users", json={"email": "x@example.test", "name": "x", "role": "user"}
            ).status_code
            == 403
        )


def test_tokens_are_personal_unless_admin(api: RunningApi, account: AccountSeed) -> None:
    with (
        api.client(account.tokens["network_admin"]) as netadmin,
        api.client(account.tokens["admin"]) as admin,
    ):
        mine = netadmin.get("/api/tokens").json()
        assert {t["user_id"] for t in mine} == {account.user_ids["network_admin"]}
        assert len({t["user_id"] for t in admin.get("/api/tokens").json()}) == 5
        for_other = netadmin.post(
            "/api/tokens", json={"name": "x", "user_id": account.user_ids["auditor"]}
        )
        assert for_other.status_code == 403
        granted = admin.post(
            "/api/tokens", json={"name": "ci", "user_id": account.user_ids["auditor"]}
        )
        assert (
            granted.status_code == 201 and granted.json()["user_id"] == account.user_ids["auditor"]
        )


def test_an_admin_may_not_revoke_an_owners_token(api: RunningApi, account: AccountSeed) -> None:
    with api.client(account.tokens["owner"]) as owner, api.client(account.tokens["admin"]) as admin:
        owners = [t for t in owner.get("/api/tokens").json() if t["name"] == "owner"]
        assert owners
        refused = admin.delete(f"/api/tokens/{owners[0]['id']}")
        assert refused.status_code == 403, refused.text
        assert owner.get("/api/services").status_code == 200  # the owner is not locked out
