"""Changes that race each other: checks that read before they write must still hold.

Each test fires the same kind of change many times at once (bounded: a few dozen requests) and
asserts that exactly the allowed ones succeed and the others get a 409, never a 500 or a
duplicate, on SQLite and PostgreSQL alike.
"""

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from management_fixtures import AccountSeed, RunningApi

Domain = Callable[[str], str]
PARALLEL = 12


async def together(
    api: RunningApi, token: str, requests: list[tuple[str, str, dict[str, Any]]]
) -> list[httpx.Response]:
    headers = {"Authorization": f"Token {token}"}
    async with httpx.AsyncClient(base_url=api.base_url, headers=headers, timeout=60) as client:
        return await asyncio.gather(
            *(client.request(method, url, json=body) for method, url, body in requests)
        )


def statuses(responses: list[httpx.Response]) -> list[int]:
    return sorted(r.status_code for r in responses)


async def test_one_domain_created_at_once_many_times_is_created_once(
    api: RunningApi, account: AccountSeed, unique_domain: Domain
) -> None:
    body = {"name": "race", "domain": unique_domain("race")}
    responses = await together(
        api, account.tokens["owner"], [("POST", "/api/services", body)] * PARALLEL
    )
    assert statuses(responses) == [201] + [409] * (PARALLEL - 1), [r.text for r in responses]
    assert all("already in use" in r.text for r in responses if r.status_code == 409)


async def test_one_path_added_at_once_many_times_is_added_once(
    api: RunningApi, account: AccountSeed, unique_domain: Domain
) -> None:
    token = account.tokens["owner"]
    (created,) = await together(
        api, token, [("POST", "/api/services", {"name": "p", "domain": unique_domain("p")})]
    )
    service_id = created.json()["id"]
    target = {"target_type": "peer", "target_id": account.peer_id, "port": 80, "path": "/x"}
    responses = await together(
        api, token, [("POST", f"/api/services/{service_id}/targets", target)] * PARALLEL
    )
    assert statuses(responses) == [201] + [422] * (PARALLEL - 1), [r.text for r in responses]
    (listed,) = await together(api, token, [("GET", f"/api/services/{service_id}/targets", {})])
    assert [t["path"] for t in listed.json()] == ["/x"]


async def test_one_listen_port_claimed_at_once_many_times_is_given_once(
    api: RunningApi, account: AccountSeed, unique_domain: Domain
) -> None:
    port = 30_000 + int.from_bytes(unique_domain("x").encode()[:2]) % 5000
    requests = [
        ("POST", "/api/services", {"name": "tcp", "domain": unique_domain("t"), "mode": "tcp",
                                   "listen_port": port})
        for _ in range(PARALLEL)
    ]  # fmt: skip
    responses = await together(api, account.tokens["owner"], requests)
    assert statuses(responses) == [201] + [409] * (PARALLEL - 1), [r.text for r in responses]


async def test_auto_assigned_ports_never_collide(
    api: RunningApi, account: AccountSeed, unique_domain: Domain
) -> None:
    requests = [
        ("POST", "/api/services", {"name": "u", "domain": unique_domain("u"), "mode": "udp"})
        for _ in range(PARALLEL)
    ]
    responses = await together(api, account.tokens["owner"], requests)
    assert statuses(responses) == [201] * PARALLEL
    ports = [r.json()["listen_port"] for r in responses]
    assert len(set(ports)) == PARALLEL
