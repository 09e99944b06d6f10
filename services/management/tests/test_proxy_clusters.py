"""``/api/proxy-clusters`` and what a cluster means to its edges, with edges on real streams.

A cluster is the account's edges with one proxy domain; it supports custom ports when a
connected edge (none connected: an edge seen last) reports it. Each edge gets the services of
its own cluster and those without one.
"""

import asyncio
import secrets
import time
from typing import Any

import httpx
import pytest
from grpc_clients import Management, ack, registered_edge, wireguard_key
from management_fixtures import AccountSeed, RunningApi, call, proxy_token, seed_account

from heron_proto.heron.v1 import proxy_pb2

WITHIN_S = 5.0


def cluster_address(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}.example.test"


async def clusters(owner: httpx.AsyncClient) -> dict[str, Any]:
    listed = await call(owner, "GET", "/api/proxy-clusters")
    return {cluster["address"]: cluster for cluster in listed}


async def eventually_disconnected(owner: httpx.AsyncClient, address: str) -> dict[str, Any]:
    """The cluster once management has seen its streams end."""
    deadline = time.monotonic() + WITHIN_S
    while True:
        cluster: dict[str, Any] = await call(owner, "GET", f"/api/proxy-clusters/{address}")
        if cluster["connected_instances"] == 0:
            return cluster
        assert time.monotonic() < deadline, cluster
        await asyncio.sleep(0.05)


async def test_clusters_show_their_edges_and_whether_they_support_custom_ports(
    api: RunningApi, owner_async: httpx.AsyncClient
) -> None:
    owner = owner_async
    token = await proxy_token(owner)
    mixed, fixed = cluster_address("mixed"), cluster_address("fixed")
    async with (
        Management(api.grpc_target) as management,
        registered_edge(management, token, mixed, instance_id="m-1"),
        registered_edge(management, token, mixed, instance_id="m-2", custom_ports=False),
        registered_edge(management, token, fixed, instance_id="f-1", custom_ports=False),
    ):
        found = await clusters(owner)
        assert set(found) == {mixed, fixed}
        assert (found[mixed]["supports_custom_ports"], found[mixed]["connected_instances"]) == (
            True,
            2,
        )  # fmt: skip  (one edge that supports them is enough)
        instances = found[mixed]["instances"]
        assert [
            (i["instance_id"], i["connected"], i["supports_custom_ports"], i["version"])
            for i in instances
        ] == [("m-1", True, True, "0.1.0-test"), ("m-2", True, False, "0.1.0-test")]
        assert all(i["id"].startswith("edg_") and i["last_seen"] for i in instances)
        assert found[fixed]["supports_custom_ports"] is False
        assert await call(owner, "GET", f"/api/proxy-clusters/{fixed.upper()}") == found[fixed]
    # the streams ended: the edges stay on record, and the last word still stands
    gone = await eventually_disconnected(owner, mixed)
    assert gone["supports_custom_ports"] is True
    assert [i["connected"] for i in gone["instances"]] == [False, False]
    await call(owner, "GET", f"/api/proxy-clusters/{cluster_address('none')}", 404)


async def test_an_edge_that_reports_no_capabilities_gives_no_custom_ports(
    api: RunningApi, owner_async: httpx.AsyncClient
) -> None:
    token = await proxy_token(owner_async)
    old = cluster_address("old")
    hello = proxy_pb2.Hello(
        instance_id="old-edge",
        proxy_domain=old,
        version="0.0.9",
        wireguard_public_key=wireguard_key(),
        wireguard_endpoint="203.0.113.7:51820",
    )  # fmt: skip  (no capabilities at all, as an edge older than them)
    async with (
        Management(api.grpc_target) as management,
        management.edge_sync(token, first=proxy_pb2.EdgeMessage(hello=hello)) as edge,
    ):
        assert (await edge.read()).HasField("edge_setup")
        cluster = await call(owner_async, "GET", f"/api/proxy-clusters/{old}")
    assert (cluster["supports_custom_ports"], cluster["connected_instances"]) == (False, 1)


@pytest.mark.parametrize(
    ("role", "expected"),
    [("owner", 200), ("admin", 200), ("network_admin", 200), ("auditor", 200), ("user", 403)],
)
def test_clusters_are_read_by_those_who_read_services(
    api: RunningApi, account: AccountSeed, role: str, expected: int
) -> None:
    with api.client(account.tokens[role]) as client:
        assert client.get("/api/proxy-clusters").status_code == expected
        unknown = client.get(f"/api/proxy-clusters/{cluster_address('x')}")
        assert unknown.status_code == (404 if expected == 200 else 403)


async def test_accounts_see_only_their_own_edges_even_on_the_same_address(
    api: RunningApi,
) -> None:
    mine, theirs = await seed_account(api.database_url), await seed_account(api.database_url)
    shared, private = cluster_address("shared"), cluster_address("private")
    async with (
        api.async_client(mine.tokens["owner"]) as a,
        api.async_client(theirs.tokens["owner"]) as b,
        Management(api.grpc_target) as management,
    ):
        token_a, token_b = await proxy_token(a), await proxy_token(b)
        async with (
            registered_edge(management, token_a, shared, instance_id="a-edge"),
            registered_edge(management, token_a, private, instance_id="a-private"),
            registered_edge(management, token_b, shared, instance_id="b-edge", custom_ports=False),
        ):
            seen_by_b = await clusters(b)
            assert list(seen_by_b) == [shared]
            assert [i["instance_id"] for i in seen_by_b[shared]["instances"]] == ["b-edge"]
            assert seen_by_b[shared]["supports_custom_ports"] is False  # A's edge is not B's
            await call(b, "GET", f"/api/proxy-clusters/{private}", 404)
            seen_by_a = await clusters(a)
            assert [i["instance_id"] for i in seen_by_a[shared]["instances"]] == ["a-edge"]


async def test_an_edge_serves_its_own_clusters_services_and_those_of_none(
    api: RunningApi, owner_async: httpx.AsyncClient, account: AccountSeed
) -> None:
    owner = owner_async
    token = await proxy_token(owner)
    here, there = cluster_address("here"), cluster_address("there")
    target = {"target_type": "peer", "target_id": account.peer_id, "port": 8080}

    async def add(domain: str, expect: int = 201) -> Any:
        body = {"name": "s", "domain": domain, "targets": [target]}
        return await call(owner, "POST", "/api/services", expect, body)

    # before the account has any cluster, a service may take any domain: it waits for one
    homeless = await add(f"app-{secrets.token_hex(4)}.elsewhere.test")
    assert homeless["proxy_cluster"] is None
    async with Management(api.grpc_target) as management:
        async with registered_edge(management, token, there):
            pass
        await eventually_disconnected(owner, there)  # on record, with no edge connected
        async with registered_edge(management, token, here) as edge:
            await edge.read()  # tunnel peers
            snapshot = (await edge.read()).config_batch  # a service of no cluster: every edge's
            assert ([m.id for m in snapshot.mappings], snapshot.snapshot_complete) == (
                [homeless["id"]], True,
            )  # fmt: skip
            edge.send(ack(snapshot.sequence))
            local = await add(f"app.{here}")
            assert local["proxy_cluster"] == here
            created = (await edge.read(WITHIN_S)).config_batch
            assert [m.id for m in created.mappings] == [local["id"]]
            edge.send(ack(created.sequence))
            remote = await add(f"app.{there}")
            assert remote["proxy_cluster"] == there
            assert remote["meta"]["status_reason"] == f"no edge of cluster '{there}' is connected"
            # now that the account has clusters, a domain under none of them is refused
            refused = await add(f"app-{secrets.token_hex(4)}.elsewhere.test", 422)
            assert refused["errors"][0]["loc"] == ["domain"]
            assert await edge.nothing_within(0.3)  # `there`'s service never comes

            # moving a service to the other cluster takes it off this edge
            body = {"name": "moved", "domain": f"moved.{there}", "targets": [target]}
            moved = await call(owner, "PUT", f"/api/services/{local['id']}", 200, body)
            assert moved["proxy_cluster"] == there
            removed = (await edge.read(WITHIN_S)).config_batch
            assert [(m.id, m.change_type) for m in removed.mappings] == [
                (local["id"], proxy_pb2.CHANGE_TYPE_REMOVED)
            ]
