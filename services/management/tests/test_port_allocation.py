"""L4 listen ports per cluster: a requested port needs a cluster whose edges support custom
ports, is unique per (cluster, transport, port), and a conflict names the service holding it.

Every test uses clusters of its own and ports outside the auto-assign range that no other test
asks for: services without a cluster compete with every cluster for their port, across tests.
"""

import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
from grpc_clients import Management, registered_edge
from management_fixtures import AccountSeed, RunningApi, call, proxy_token, seed_account

from heron_management.domain.ports import AUTO_PORT_RANGE


def cluster_address(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}.example.test"


def rare_port() -> int:
    """A port above the auto-assign range, where only explicit requests land."""
    return 30000 + secrets.randbelow(30000)


def l4(account: AccountSeed, name: str, domain: str, mode: str = "tcp", **extra: Any) -> Any:
    target = {"target_type": "peer", "target_id": account.peer_id, "port": 5432}
    return {"name": name, "domain": domain, "mode": mode, "targets": [target], **extra}


@pytest_asyncio.fixture
async def management(api: RunningApi) -> AsyncIterator[Management]:
    async with Management(api.grpc_target) as channel:
        yield channel


async def test_a_requested_port_needs_a_cluster_with_custom_ports(
    owner_async: httpx.AsyncClient, account: AccountSeed, management: Management
) -> None:
    owner = owner_async
    token = await proxy_token(owner)
    fixed, free = cluster_address("fixed"), cluster_address("free")
    port = rare_port()
    async with (
        registered_edge(management, token, fixed, custom_ports=False),
        registered_edge(management, token, free),
    ):
        refused = await owner.post(
            "/api/services", json=l4(account, "db", f"db.{fixed}", listen_port=port)
        )
        assert refused.status_code == 422, refused.text
        [error] = refused.json()["errors"]
        assert error["loc"] == ["listen_port"]
        assert f"cluster '{fixed}' assigns L4 ports itself" in error["message"]

        auto = await call(owner, "POST", "/api/services", 201, l4(account, "db", f"db.{fixed}"))
        assert (auto["proxy_cluster"], auto["port_auto_assigned"]) == (fixed, True)
        assert auto["listen_port"] in AUTO_PORT_RANGE
        # what GET shows may be PUT back: the assigned port is not a new choice
        kept = await call(owner, "PUT", f"/api/services/{auto['id']}", 200, _writable(auto))
        assert (kept["listen_port"], kept["port_auto_assigned"]) == (auto["listen_port"], True)
        moved = {**_writable(auto), "listen_port": port}
        await call(owner, "PUT", f"/api/services/{auto['id']}", 422, moved)
        # a TLS service on the main port asks for no port of its own
        tls = l4(account, "tls", f"tls.{fixed}", mode="tls", listen_port=443)
        assert (await call(owner, "POST", "/api/services", 201, tls))["listen_port"] == 0

        chosen = l4(account, "db", f"db.{free}", listen_port=port)
        made = await call(owner, "POST", "/api/services", 201, chosen)
        assert (made["proxy_cluster"], made["listen_port"], made["port_auto_assigned"]) == (
            free, port, False,
        )  # fmt: skip


async def test_ports_are_unique_per_cluster_and_a_conflict_names_the_holder(
    api: RunningApi, owner_async: httpx.AsyncClient, account: AccountSeed, management: Management
) -> None:
    owner = owner_async
    token = await proxy_token(owner)
    first, second = cluster_address("first"), cluster_address("second")
    port = rare_port()
    async with (
        registered_edge(management, token, first),
        registered_edge(management, token, second),
    ):
        ssh = await call(
            owner,
            "POST",
            "/api/services",
            201,
            l4(account, "ssh", f"ssh.{first}", listen_port=port),
        )
        clash = await owner.post(
            "/api/services", json=l4(account, "ssh2", f"ssh2.{first}", listen_port=port)
        )
        assert clash.status_code == 409, clash.text
        assert clash.json()["detail"] == (
            f"tcp port {port} is held by service 'ssh' ({ssh['id']}) in cluster '{first}'"
        )
        for mode in ("tls", "udp"):  # SNI tells TLS apart; UDP is another port space
            shared = l4(account, mode, f"{mode}.{first}", mode=mode, listen_port=port)
            await call(owner, "POST", "/api/services", 201, shared)
        elsewhere = l4(account, "ssh", f"ssh.{second}", listen_port=port)
        assert (await call(owner, "POST", "/api/services", 201, elsewhere))["listen_port"] == port

    # a domain under no cluster (an account with none yet) may land in any: it competes with
    # every cluster
    newcomer = await seed_account(api.database_url)
    async with api.async_client(newcomer.tokens["owner"]) as fresh:
        homeless = l4(newcomer, "x", f"x-{secrets.token_hex(4)}.nowhere.test", listen_port=port)
        await call(fresh, "POST", "/api/services", 409, homeless)

    # another account's edges on the same address are the same machines: same port space
    other = await seed_account(api.database_url)
    async with api.async_client(other.tokens["owner"]) as stranger:
        their_token = await proxy_token(stranger)
        own_cluster = cluster_address("own")
        async with (
            registered_edge(management, their_token, first),
            registered_edge(management, their_token, own_cluster),
        ):
            taken = await stranger.post(
                "/api/services", json=l4(other, "s", f"s.{first}", listen_port=port)
            )
            assert taken.status_code == 409, taken.text
            assert taken.json()["detail"] == (
                f"tcp port {port} is held by a service of another account"
            )
            mine = l4(other, "s", f"s.{own_cluster}", listen_port=port)
            await call(stranger, "POST", "/api/services", 201, mine)


async def test_a_cluster_not_yet_known_accepts_the_port_and_its_first_edge_adopts_the_service(
    owner_async: httpx.AsyncClient, account: AccountSeed, management: Management
) -> None:
    owner = owner_async
    later = cluster_address("later")
    port = rare_port()
    early = await call(
        owner,
        "POST",
        "/api/services",
        201,
        l4(account, "early", f"early.{later}", listen_port=port),
    )
    assert (early["proxy_cluster"], early["listen_port"]) == (None, port)
    token = await proxy_token(owner)
    async with registered_edge(management, token, later, custom_ports=False) as edge:
        await edge.read()  # tunnel peers
        snapshot = (await edge.read()).config_batch
        assert [(m.id, m.listen_port) for m in snapshot.mappings] == [(early["id"], port)]
        adopted = await call(owner, "GET", f"/api/services/{early['id']}")
        assert (adopted["proxy_cluster"], adopted["listen_port"]) == (later, port)
        # it keeps the port it was given, but may not choose another one there
        renamed = {**_writable(adopted), "name": "renamed"}
        await call(owner, "PUT", f"/api/services/{early['id']}", 200, renamed)
        other_port = {**renamed, "listen_port": port + 1 if port < 59999 else port - 1}
        await call(owner, "PUT", f"/api/services/{early['id']}", 422, other_port)


def _writable(service: dict[str, Any]) -> dict[str, Any]:
    read_only = {"id", "meta", "source", "port_auto_assigned", "proxy_cluster", "auth"}
    return {k: v for k, v in service.items() if k not in read_only}
