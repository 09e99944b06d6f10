"""``/api/peers``, ``/api/networks`` with ``/resources`` and ``/routers``, and ``/api/proxy-tokens``
over HTTP: CRUD, validation, roles, and the 409s that keep services' targets reachable."""

from collections.abc import Callable
from typing import Any

import httpx
from grpc_clients import Management
from management_fixtures import AccountSeed, RunningApi, call

Domain = Callable[[str], str]


def service_to(owner: httpx.Client, domain: str, *targets: dict[str, Any]) -> dict[str, Any]:
    created = owner.post(
        "/api/services", json={"name": "uses-it", "domain": domain, "targets": list(targets)}
    )
    assert created.status_code == 201, created.text
    service: dict[str, Any] = created.json()
    return service


def conflict(response: httpx.Response) -> str:
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "application/problem+json"
    detail: str = response.json()["detail"]
    return detail


async def logged_in_peer(api: RunningApi, owner: httpx.AsyncClient, hostname: str) -> str:
    key = (await call(owner, "POST", "/api/setup-keys", 201, {"name": hostname}))["key"]
    async with Management(api.grpc_target) as management:
        return (await management.login(setup_key=key, hostname=hostname)).peer_id


# peers


def test_rename_a_peer_unique_per_account(owner: httpx.Client, account: AccountSeed) -> None:
    renamed = owner.put(f"/api/peers/{account.peer_id}", json={"name": "gateway"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "gateway"
    assert renamed.json()["connected"] is False and renamed.json()["ip"] is None
    assert owner.get(f"/api/peers/{account.peer_id}").json()["name"] == "gateway"


async def test_a_taken_name_is_refused(api: RunningApi, owner_async: httpx.AsyncClient) -> None:
    await logged_in_peer(api, owner_async, "db")
    other = await logged_in_peer(api, owner_async, "cache")
    refused = await owner_async.put(f"/api/peers/{other}", json={"name": "db"})
    assert "named 'db'" in conflict(refused)


def test_deleting_a_targeted_peer_names_the_services(
    owner: httpx.Client, account: AccountSeed, unique_domain: Domain
) -> None:
    service = service_to(
        owner, unique_domain("p"), {"target_type": "peer", "target_id": account.peer_id}
    )
    detail = conflict(owner.delete(f"/api/peers/{account.peer_id}"))
    assert f"'uses-it' ({service['id']})" in detail
    assert owner.delete(f"/api/services/{service['id']}").status_code == 204
    assert owner.delete(f"/api/peers/{account.peer_id}").status_code == 204
    assert owner.get(f"/api/peers/{account.peer_id}").status_code == 404


async def test_the_only_router_of_a_targeted_network_stays(
    api: RunningApi, owner_async: httpx.AsyncClient, account: AccountSeed, unique_domain: Domain
) -> None:
    owner = owner_async
    routers = f"/api/networks/{account.network_id}/routers"
    first = await call(owner, "POST", routers, 201, {"peer_id": account.peer_id})
    target = {"target_type": "host", "target_id": account.resource_ids["host"], "port": 5432}
    body = {"name": "uses-it", "domain": unique_domain("r"), "targets": [target]}
    service = await call(owner, "POST", "/api/services", 201, body)
    assert service["id"] in conflict(await owner.delete(f"/api/peers/{account.peer_id}"))
    assert service["id"] in conflict(await owner.delete(f"{routers}/{first['id']}"))
    off = {"peer_id": account.peer_id, "enabled": False}
    assert service["id"] in conflict(await owner.put(f"{routers}/{first['id']}", json=off))
    # a second router takes over: the first peer (and its route) may go
    second_peer = await logged_in_peer(api, owner, "router-2")
    await call(owner, "POST", routers, 201, {"peer_id": second_peer})
    await call(owner, "DELETE", f"/api/peers/{account.peer_id}", 204)
    assert [r["peer_id"] for r in await call(owner, "GET", routers)] == [second_peer]


# networks and resources


def test_network_crud(owner: httpx.Client) -> None:
    created = owner.post("/api/networks", json={"name": "lab", "description": "racks"})
    assert created.status_code == 201, created.text
    network = created.json()
    assert network["resources"] == network["routers"] == [] and network["routing_peers_count"] == 0
    updated = owner.put(f"/api/networks/{network['id']}", json={"name": "lab-2"}).json()
    assert (updated["name"], updated["description"]) == ("lab-2", "")
    assert network["id"] in {n["id"] for n in owner.get("/api/networks").json()}
    assert owner.delete(f"/api/networks/{network['id']}").status_code == 204
    assert owner.get(f"/api/networks/{network['id']}").status_code == 404


RESOURCES = [  # (request, type, stored address)
    ({"type": "host", "address": " 10.0.0.7 "}, "host", "10.0.0.7"),
    ({"type": "host", "address": "fd00::1"}, "host", "fd00::1"),
    ({"type": "domain", "address": "DB.Internal.Example."}, "domain", "db.internal.example"),
    ({"type": "subnet", "address": "10.8.0.0/16"}, "subnet", "10.8.0.0/16"),
    ({"address": "192.168.1.0/24"}, "subnet", "192.168.1.0/24"),
    ({"address": "192.168.1.9"}, "host", "192.168.1.9"),
    ({"address": "nas.home.arpa"}, "domain", "nas.home.arpa"),
]
BAD_RESOURCES = [
    {"type": "host", "address": "10.0.0.0/24"},
    {"type": "host", "address": "db.example"},
    {"type": "subnet", "address": "10.0.0.1/24"},
    {"type": "subnet", "address": "10.0.0.1"},
    {"type": "domain", "address": "not a domain"},
    {"type": "domain", "address": "10.0.0.1"},
]


def test_resource_addresses_follow_their_type(owner: httpx.Client, account: AccountSeed) -> None:
    url = f"/api/networks/{account.network_id}/resources"
    for body, kind, address in RESOURCES:
        created = owner.post(url, json={"name": "r", **body})
        assert created.status_code == 201, created.text
        assert (created.json()["type"], created.json()["address"]) == (kind, address)
        assert created.json()["service_count"] == 0
        assert owner.get(f"{url}/{created.json()['id']}").json() == created.json()
    for body in BAD_RESOURCES:
        refused = owner.post(url, json={"name": "r", **body})
        assert refused.status_code == 422, (body, refused.text)
        assert refused.json()["errors"][0]["loc"] == ["address"], body


def test_targeted_resources_and_networks_stay(
    owner: httpx.Client, account: AccountSeed, unique_domain: Domain
) -> None:
    resources = f"/api/networks/{account.network_id}/resources"
    subnet = account.resource_ids["subnet"]  # 10.2.0.0/24
    service = service_to(
        owner,
        unique_domain("s"),
        {"target_type": "subnet", "target_id": subnet, "host": "10.2.0.9", "port": 22},
    )
    assert owner.get(f"{resources}/{subnet}").json()["service_count"] == 1
    named = f"'uses-it' ({service['id']})"
    assert named in conflict(owner.delete(f"{resources}/{subnet}"))
    assert named in conflict(owner.delete(f"/api/networks/{account.network_id}"))
    moved = owner.put(f"{resources}/{subnet}", json={"name": "s", "address": "10.3.0.0/24"})
    assert named in conflict(moved)
    retyped = owner.put(f"{resources}/{subnet}", json={"name": "s", "address": "10.2.0.9"})
    assert named in conflict(retyped)
    wider = owner.put(f"{resources}/{subnet}", json={"name": "wider", "address": "10.2.0.0/16"})
    assert wider.status_code == 200 and wider.json()["service_count"] == 1
    assert owner.delete(f"/api/services/{service['id']}").status_code == 204
    assert owner.delete(f"/api/networks/{account.network_id}").status_code == 204
    assert owner.get(f"{resources}/{subnet}").status_code == 404


# routers


def test_router_crud(owner: httpx.Client, account: AccountSeed) -> None:
    url = f"/api/networks/{account.network_id}/routers"
    created = owner.post(url, json={"peer_id": account.peer_id})
    assert created.status_code == 201, created.text
    router = created.json()
    assert (router["peer_id"], router["enabled"], router["network_id"]) == (
        account.peer_id, True, account.network_id,
    )  # fmt: skip
    assert "already routes" in conflict(owner.post(url, json={"peer_id": account.peer_id}))
    network = owner.get(f"/api/networks/{account.network_id}").json()
    assert network["routers"] == [router["id"]] and network["routing_peers_count"] == 1
    off = owner.put(f"{url}/{router['id']}", json={"peer_id": account.peer_id, "enabled": False})
    assert off.status_code == 200 and off.json()["enabled"] is False
    assert owner.get(f"/api/networks/{account.network_id}").json()["routing_peers_count"] == 0
    assert owner.post(url, json={"peer_id": "peer_nope"}).status_code == 422
    assert owner.delete(f"{url}/{router['id']}").status_code == 204
    assert owner.get(url).json() == []


# proxy tokens


def test_proxy_tokens_are_shown_once(owner: httpx.Client) -> None:
    created = owner.post("/api/proxy-tokens", json={"name": "edge-eu"})
    assert created.status_code == 201, created.text
    token = created.json()
    assert (
        token["plain_token"].startswith("hpx_") and token["hint"] == token["plain_token"][:8] + "…"
    )
    shown = owner.get(f"/api/proxy-tokens/{token['id']}").json()
    assert "plain_token" not in shown and shown["name"] == "edge-eu"
    assert [t["id"] for t in owner.get("/api/proxy-tokens").json()] == [token["id"]]
    assert owner.delete(f"/api/proxy-tokens/{token['id']}").status_code == 204
    assert owner.get("/api/proxy-tokens").json() == []


def test_proxy_tokens_are_for_owners_and_admins(api: RunningApi, account: AccountSeed) -> None:
    for role in ("owner", "admin", "network_admin", "auditor", "user"):
        allowed = role in {"owner", "admin"}
        with api.client(account.tokens[role]) as client:
            made = client.post("/api/proxy-tokens", json={"name": "x"})
            assert made.status_code == (201 if allowed else 403), role
            assert client.get("/api/proxy-tokens").status_code == (200 if allowed else 403), role


def test_network_roles(api: RunningApi, account: AccountSeed) -> None:
    routers = f"/api/networks/{account.network_id}/routers"
    resources = f"/api/networks/{account.network_id}/resources"
    for role, read, write in [
        ("admin", 200, 201), ("network_admin", 200, 201), ("auditor", 200, 403), ("user", 403, 403),
    ]:  # fmt: skip
        with api.client(account.tokens[role]) as client:
            for path in ("/api/peers", "/api/networks", routers):
                assert client.get(path).status_code == read, (role, path)
            assert client.post("/api/networks", json={"name": "n"}).status_code == write, role
            resource = {"name": "r", "address": "10.0.0.1"}
            assert client.post(resources, json=resource).status_code == write, role
            if write == 201:  # one router per peer and network: make room for the next role
                made = client.post(routers, json={"peer_id": account.peer_id})
                assert made.status_code == 201, role
                client.delete(f"{routers}/{made.json()['id']}")
            else:
                refused = client.post(routers, json={"peer_id": account.peer_id})
                assert refused.status_code == 403, role
            renamed = client.put(f"/api/peers/{account.peer_id}", json={"name": f"by-{role}"})
            assert renamed.status_code == (200 if write == 201 else 403), role
