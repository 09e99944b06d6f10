"""``ProxyService.Sync`` against the real gRPC port: Hello first, EdgeSetup, TunnelPeers, the
snapshot in acknowledged batches, then changes as they happen."""

import time
from collections.abc import Callable
from typing import Any

import grpc
import httpx
from grpc_clients import Management, ack, wireguard_key
from management_fixtures import AccountSeed, RunningApi, call, proxy_token, seed_account

from heron_proto.heron.v1 import proxy_pb2

Domain = Callable[[str], str]
PUSH_WITHIN_S = 5.0
CREATED, MODIFIED, REMOVED = (
    proxy_pb2.CHANGE_TYPE_CREATED,
    proxy_pb2.CHANGE_TYPE_MODIFIED,
    proxy_pb2.CHANGE_TYPE_REMOVED,
)


async def add_service(owner: httpx.AsyncClient, domain: str, **extra: Any) -> Any:
    return await call(owner, "POST", "/api/services", 201, {"name": "s", "domain": domain, **extra})


async def test_the_first_message_must_be_a_hello(
    api: RunningApi, owner_async: httpx.AsyncClient
) -> None:
    token = await proxy_token(owner_async)
    async with Management(api.grpc_target) as management:
        async with management.edge_sync(token, first=ack(1)) as edge:
            error = await edge.error()
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "hello" in (error.details() or "")
        async with management.edge_sync("hpx_" + "x" * 36) as stranger:
            assert (await stranger.error()).code() is grpc.StatusCode.UNAUTHENTICATED
        async with management.edge_sync(token, key="short") as bad:
            invalid = await bad.error()
        assert invalid.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "wireguard_public_key" in (invalid.details() or "")


async def test_setup_peers_snapshot_and_changes(
    api: RunningApi, owner_async: httpx.AsyncClient, account: AccountSeed, unique_domain: Domain
) -> None:
    owner = owner_async
    token = await proxy_token(owner)
    setup_key = (await call(owner, "POST", "/api/setup-keys", 201, {"name": "k"}))["key"]
    resources = account.resource_ids
    async with Management(api.grpc_target) as management:
        login = await management.login(setup_key=setup_key, hostname="app")
        router = await management.login(setup_key=setup_key, hostname="router")
        routers = f"/api/networks/{account.network_id}/routers"
        await call(owner, "POST", routers, 201, {"peer_id": router.peer_id})
        peer_target = {"target_type": "peer", "target_id": login.peer_id, "port": 8080}
        web = await add_service(owner, unique_domain("web"), targets=[peer_target])
        host_target = {"target_type": "host", "target_id": resources["host"], "port": 5432}
        db = await add_service(owner, unique_domain("db"), mode="tcp", targets=[host_target])
        await add_service(owner, unique_domain("three"))
        await add_service(owner, unique_domain("off"), enabled=False)

        async with management.edge_sync(token) as edge:
            setup = (await edge.read()).edge_setup
            assert setup.overlay_network == "100.64.0.0/10"
            assert setup.overlay_address.startswith("100.")
            peers = (await edge.read()).tunnel_peers.peers
            assert {(p.peer_id, p.overlay_address) for p in peers} == {
                (login.peer_id, login.overlay_address), (router.peer_id, router.overlay_address),
            }  # fmt: skip
            # three enabled services in batches of two: the second waits for the first ack
            first = (await edge.read()).config_batch
            assert (first.sequence, first.snapshot_complete, len(first.mappings)) == (1, False, 2)
            assert await edge.nothing_within(0.5)
            edge.send(ack(1))
            second = (await edge.read()).config_batch
            assert (second.sequence, second.snapshot_complete, len(second.mappings)) == (2, True, 1)
            mappings = {m.id: m for m in [*first.mappings, *second.mappings]}
            assert {web["id"], db["id"]} <= set(mappings) and len(mappings) == 3
            assert {m.change_type for m in mappings.values()} == {CREATED}
            web_target = mappings[web["id"]].targets[0]
            assert (web_target.peer_overlay_address, web_target.host, web_target.port) == (
                login.overlay_address, "", 8080,
            )  # fmt: skip
            assert mappings[web["id"]].mode == proxy_pb2.SERVICE_MODE_HTTP
            db_mapping = mappings[db["id"]]
            assert (db_mapping.mode, db_mapping.listen_port) == (
                proxy_pb2.SERVICE_MODE_TCP, db["listen_port"],
            )  # fmt: skip
            db_target = db_mapping.targets[0]
            assert (db_target.peer_overlay_address, db_target.host, db_target.protocol) == (
                router.overlay_address, "10.1.0.5", proxy_pb2.TARGET_PROTOCOL_TCP,
            )  # fmt: skip
            edge.send(ack(2))

            # changes after the snapshot: one acknowledged batch each
            started = time.monotonic()
            new = await add_service(owner, unique_domain("new"), targets=[peer_target])
            created = (await edge.read(PUSH_WITHIN_S)).config_batch
            assert time.monotonic() - started < PUSH_WITHIN_S
            assert created.sequence == 3 and not created.snapshot_complete
            assert [(m.id, m.change_type) for m in created.mappings] == [(new["id"], CREATED)]
            edge.send(ack(3))
            changed = {
                "name": "n", "domain": new["domain"], "pass_host_header": True,
                "targets": [peer_target],
            }  # fmt: skip
            await call(owner, "PUT", f"/api/services/{new['id']}", 200, changed)
            modified = (await edge.read(PUSH_WITHIN_S)).config_batch
            assert [(m.id, m.change_type) for m in modified.mappings] == [(new["id"], MODIFIED)]
            assert modified.mappings[0].pass_host_header is True
            edge.send(ack(4))
            await call(owner, "POST", f"/api/services/{web['id']}/disable")
            removed = (await edge.read(PUSH_WITHIN_S)).config_batch
            assert [(m.id, m.change_type, m.domain) for m in removed.mappings] == [
                (web["id"], REMOVED, web["domain"])
            ]
            edge.send(ack(5))

            # a new agent shows up in the edge's tunnel peers
            newcomer = await management.login(setup_key=setup_key, hostname="late")
            grown = (await edge.read(PUSH_WITHIN_S)).tunnel_peers.peers
            assert newcomer.peer_id in {p.peer_id for p in grown} and len(grown) == 3


async def test_changes_wait_for_the_previous_ack_and_are_folded(
    api: RunningApi, owner_async: httpx.AsyncClient, unique_domain: Domain
) -> None:
    token = await proxy_token(owner_async)
    async with Management(api.grpc_target) as management, management.edge_sync(token) as edge:
        await edge.read()
        await edge.read()
        empty = (await edge.read()).config_batch
        assert (empty.sequence, empty.snapshot_complete, list(empty.mappings)) == (1, True, [])
        first = await add_service(owner_async, unique_domain("a"))
        second = await add_service(owner_async, unique_domain("b"))
        assert await edge.nothing_within(0.5)  # batch 1 is not acknowledged yet
        edge.send(ack(1))
        folded = (await edge.read(PUSH_WITHIN_S)).config_batch
        assert folded.sequence == 2
        assert sorted(m.id for m in folded.mappings) == sorted([first["id"], second["id"]])


async def test_an_instance_keeps_its_address_and_a_newer_stream_replaces_it(
    api: RunningApi, owner_async: httpx.AsyncClient
) -> None:
    token = await proxy_token(owner_async)
    key = wireguard_key()
    async with Management(api.grpc_target) as management:
        async with management.edge_sync(token, instance_id="edge-a", key=key) as older:
            address = (await older.read()).edge_setup.overlay_address
            async with management.edge_sync(token, instance_id="edge-a", key=key) as newer:
                assert (await newer.read()).edge_setup.overlay_address == address
                assert (await older.error(PUSH_WITHIN_S)).code() is grpc.StatusCode.ABORTED
        # a restarted edge (new instance ID) with the same key keeps the address too
        async with management.edge_sync(token, instance_id="edge-b", key=key) as restarted:
            assert (await restarted.read()).edge_setup.overlay_address == address


async def test_revoking_the_token_ends_its_streams(
    api: RunningApi, owner_async: httpx.AsyncClient
) -> None:
    created = await call(owner_async, "POST", "/api/proxy-tokens", 201, {"name": "edge"})
    async with Management(api.grpc_target) as management:
        async with management.edge_sync(created["plain_token"]) as edge:
            await edge.read()
            await call(owner_async, "DELETE", f"/api/proxy-tokens/{created['id']}", 204)
            error = await edge.error(PUSH_WITHIN_S)
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in (error.details() or "")
        async with management.edge_sync(created["plain_token"]) as again:
            assert (await again.error()).code() is grpc.StatusCode.UNAUTHENTICATED


async def test_an_edge_sees_only_its_own_accounts_services(
    api: RunningApi, unique_domain: Domain
) -> None:
    mine, theirs = await seed_account(api.database_url), await seed_account(api.database_url)
    async with (
        api.async_client(mine.tokens["owner"]) as a,
        api.async_client(theirs.tokens["owner"]) as b,
    ):
        token = await proxy_token(a)
        await add_service(b, unique_domain("theirs"))
        own = await add_service(a, unique_domain("mine"))
    async with Management(api.grpc_target) as management, management.edge_sync(token) as edge:
        await edge.read()
        await edge.read()
        batch = (await edge.read()).config_batch
        assert [m.id for m in batch.mappings] == [own["id"]]
        assert batch.mappings[0].account_id == mine.account_id
