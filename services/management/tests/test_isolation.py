"""Two accounts: nothing of one is visible or changeable with the other's token, on every route.

The test walks the OpenAPI document, so a new route without an isolation case fails here.
"""

import asyncio
import re
import secrets
import time
from typing import Any

import httpx
from grpc_clients import Management, registered_edge
from management_fixtures import AccountSeed, RunningApi


async def _register_edge(api: RunningApi, proxy_token: str, address: str) -> None:
    """An edge of cluster ``address`` that registers and goes: the cluster stays on record."""
    async with (
        Management(api.grpc_target) as management,
        registered_edge(management, proxy_token, address),
    ):
        pass


def _seed_objects(
    api: RunningApi, client: httpx.Client, seed: AccountSeed, domain: str
) -> dict[str, str]:
    service = client.post(
        "/api/services",
        json={
            "name": "victim",
            "domain": domain,
            "targets": [{"target_type": "peer", "target_id": seed.peer_id}],
        },
    ).json()
    token = client.post("/api/tokens", json={"name": "victim"}).json()
    setup_key = client.post("/api/setup-keys", json={"name": "victim"}).json()
    proxy_token = client.post("/api/proxy-tokens", json={"name": "victim"}).json()
    router = client.post(
        f"/api/networks/{seed.network_id}/routers", json={"peer_id": seed.peer_id}
    ).json()
    cluster = f"victim-{secrets.token_hex(4)}.example.test"
    asyncio.run(_register_edge(api, proxy_token["plain_token"], cluster))
    deadline = time.monotonic() + 5
    while client.get(f"/api/proxy-clusters/{cluster}").json()["connected_instances"]:
        assert time.monotonic() < deadline, "the edge's stream did not end"
        time.sleep(0.05)  # until management has seen the stream end: the listing holds still
    custom = client.post(
        "/api/domains", json={"domain": f"victim-{secrets.token_hex(4)}.example.org"}
    ).json()
    while client.get(f"/api/domains/{custom['id']}").json()["checked_at"] is None:
        assert time.monotonic() < deadline + 5, "the custom domain was not verified"
        time.sleep(0.05)  # until its verification ended: the listing holds still
    return {
        "address": cluster,
        "domain_id": custom["id"],
        "setup_key_id": setup_key["id"],
        "proxy_token_id": proxy_token["id"],
        "router_id": router["id"],
        "service_id": service["id"],
        "target_id": service["targets"][0]["id"],
        "user_id": seed.user_ids["auditor"],
        "token_id": token["id"],
        "peer_id": seed.peer_id,
        "network_id": seed.network_id,
        "resource_id": seed.resource_ids["host"],
    }


#: collection routes where B's POST creates an object in B's own account
OWN_ACCOUNT_CREATES = {"/api/users", "/api/setup-keys", "/api/proxy-tokens", "/api/networks"}


def _collection_answer(method: str, template: str, cluster: str) -> tuple[int, str]:
    """What B's change on a collection route answers, and a phrase of the answer."""
    if method == "post" and template in OWN_ACCOUNT_CREATES:
        return 201, ""  # made in B's own account
    answers = {
        ("post", "/api/services"): (422, "no peer"),
        ("post", "/api/tokens"): (404, ""),
        ("post", "/api/domains"): (422, f"no cluster {cluster!r} in this account"),
    }
    if (method, template) not in answers:
        raise AssertionError(f"no isolation case for {method.upper()} {template}")
    return answers[(method, template)]


def _body_for(
    method: str, template: str, attacker: AccountSeed, victim: AccountSeed, cluster: str
) -> dict[str, Any] | None:
    """A body that passes validation, so the answer shows ownership, not a malformed request."""
    target = {"target_type": "peer", "target_id": attacker.peer_id}
    resource = {"name": "r", "type": "host", "address": "10.9.9.9"}
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        # Creating in one's own account may not reference the other account's peer.
        ("post", "/api/services"): {
            "name": "x",
            "domain": "steal.example.test",
            "targets": [{"target_type": "peer", "target_id": victim.peer_id}],
        },
        ("put", "/api/services/{service_id}"): {
            "name": "x",
            "domain": "hijack.example.test",
            "targets": [target],
        },
        ("post", "/api/services/{service_id}/targets"): target,
        ("put", "/api/services/{service_id}/targets/{target_id}"): target,
        ("post", "/api/users"): {"email": "new@example.test", "name": "n", "role": "auditor"},
        ("put", "/api/users/{user_id}"): {"name": "renamed"},
        ("post", "/api/tokens"): {"name": "stolen", "user_id": victim.user_ids["auditor"]},
        ("put", "/api/peers/{peer_id}"): {"name": "renamed"},
        ("post", "/api/setup-keys"): {"name": "mine"},
        ("put", "/api/setup-keys/{setup_key_id}"): {"revoked": True},
        ("post", "/api/proxy-tokens"): {"name": "mine"},
        ("post", "/api/networks"): {"name": "mine"},
        ("put", "/api/networks/{network_id}"): {"name": "renamed"},
        ("post", "/api/networks/{network_id}/resources"): resource,
        ("put", "/api/networks/{network_id}/resources/{resource_id}"): resource,
        ("post", "/api/networks/{network_id}/routers"): {"peer_id": attacker.peer_id},
        # A custom domain in one's own account may not point at the other account's cluster.
        ("post", "/api/domains"): {"domain": "steal.example.org", "target_cluster": cluster},
        ("put", "/api/networks/{network_id}/routers/{router_id}"): {"peer_id": attacker.peer_id},
    }
    return bodies.get((method, template))


def test_no_route_crosses_accounts(
    api: RunningApi, account_factory: Any, unique_domain: Any
) -> None:
    victim, attacker = account_factory(), account_factory()
    with (
        api.client(victim.tokens["owner"]) as owner_a,
        api.client(attacker.tokens["owner"]) as owner_b,
    ):
        ids = _seed_objects(api, owner_a, victim, unique_domain("victim"))
        before = {
            path: owner_a.get(path).json()
            for path in (
                "/api/services",
                "/api/users",
                "/api/tokens",
                "/api/peers",
                "/api/networks",
                "/api/setup-keys",
                "/api/proxy-tokens",
                "/api/proxy-clusters",
                "/api/domains",
                f"/api/networks/{victim.network_id}/resources",
                f"/api/networks/{victim.network_id}/routers",
            )
        }
        schema = owner_b.get("/api/openapi.json").json()
        exercised = set()
        for template, operations in schema["paths"].items():
            if not template.startswith("/api/"):
                continue
            for method in operations:
                exercised.add((method, template))
                url = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], template)
                body = _body_for(method, template, attacker, victim, ids["address"])
                response = owner_b.request(method.upper(), url, json=body)
                if "{" in template:
                    assert response.status_code == 404, (method, template, response.text)
                elif method == "get":
                    assert response.status_code == 200, (method, template, response.text)
                    assert not set(ids.values()) & _ids_in(response.json()), (
                        template,
                        response.text,
                    )
                else:
                    status, phrase = _collection_answer(method, template, ids["address"])
                    assert response.status_code == status, (template, response.text)
                    assert phrase in response.text
        assert len(exercised) >= 40
        after = {path: owner_a.get(path).json() for path in before}
        for path, listed in before.items():
            if path == "/api/tokens":  # last_used_at moves as A reads
                assert [t["id"] for t in after[path]] == [t["id"] for t in listed]
            else:
                assert after[path] == listed, path


def test_new_objects_may_not_reference_another_accounts(
    api: RunningApi, account_factory: Any, unique_domain: Any
) -> None:
    victim, attacker = account_factory(), account_factory()
    with api.client(attacker.tokens["owner"]) as client:
        routed = client.post(
            f"/api/networks/{attacker.network_id}/routers", json={"peer_id": victim.peer_id}
        )
        assert routed.status_code == 422, routed.text
        assert routed.json()["errors"][0]["loc"] == ["peer_id"]
        service = client.post(
            "/api/services",
            json={
                "name": "x",
                "domain": unique_domain("x"),
                "targets": [{"target_type": "host", "target_id": victim.resource_ids["host"]}],
            },
        )
        assert service.status_code == 422, service.text
        assert "no network resource" in service.text


def _ids_in(value: Any) -> set[str]:
    if isinstance(value, dict):
        return {v for v in value.values() if isinstance(v, str)} | set().union(
            *(_ids_in(v) for v in value.values())
        )
    if isinstance(value, list):
        return set().union(*(_ids_in(v) for v in value))
    return set()
