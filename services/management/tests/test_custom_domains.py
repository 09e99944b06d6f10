"""``/api/domains``: cluster domains from the account's edges, custom domains verified by a CNAME
against a real DNS server (``dns_server``), and the rule that a service's domain must be under
a cluster domain or a verified custom domain once the account has a cluster.
"""

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from dns_server import ChallTestServer
from event_reader import first_events
from grpc_clients import Management, registered_edge
from management_fixtures import (
    AccountSeed,
    RunningApi,
    call,
    free_port,
    proxy_token,
    seed_account,
    server_of_its_own,
)

from heron_bus import connect
from heron_core.events import DomainChanged
from heron_core.types import ChangeKind
from heron_management.cname_lookup import CnameLookup
from heron_management.domain.custom_domains import CnameChain
from heron_management.errors import DnsLookupError

VERIFIED_WITHIN_S = 10.0


def unique(name: str, parent: str = "example.test") -> str:
    return f"{name}-{secrets.token_hex(4)}.{parent}"


async def with_cluster(api: RunningApi, owner: httpx.AsyncClient, address: str) -> str:
    """An edge of cluster ``address`` registers and goes: the cluster stays on record."""
    token = await proxy_token(owner)
    async with (
        Management(api.grpc_target) as management,
        registered_edge(management, token, address),
    ):
        pass
    return address


async def domain_once(
    owner: httpx.AsyncClient, domain_id: str, *, validated: bool, reason_has: str = ""
) -> dict[str, Any]:
    """The custom domain once its verification shows ``validated`` (and ``reason_has``)."""
    deadline = time.monotonic() + VERIFIED_WITHIN_S
    while True:
        found: dict[str, Any] = await call(owner, "GET", f"/api/domains/{domain_id}")
        checked = found["checked_at"] is not None
        if (
            checked
            and found["validated"] is validated
            and reason_has in (found["validation_reason"] or "")
        ):
            return found
        assert time.monotonic() < deadline, (validated, reason_has, found)
        await asyncio.sleep(0.05)


@pytest_asyncio.fixture
async def cluster(api: RunningApi, owner_async: httpx.AsyncClient) -> str:
    """A cluster of the owner's account (its edge came and went)."""
    return await with_cluster(api, owner_async, unique("edges"))


def service(account: AccountSeed, domain: str) -> dict[str, Any]:
    target = {"target_type": "peer", "target_id": account.peer_id, "port": 8080}
    return {"name": "site", "domain": domain, "targets": [target]}


async def test_a_custom_domain_is_verified_by_its_cname_before_services_use_it(
    api: RunningApi,
    owner_async: httpx.AsyncClient,
    account: AccountSeed,
    cluster: str,
    dns_server: ChallTestServer,
) -> None:
    owner = owner_async
    custom = unique("shop", "example.org")
    validation = f"validation.{custom}"

    added = await call(owner, "POST", "/api/domains", 201, {"domain": custom.upper() + "."})
    assert added["domain"] == custom
    assert (added["type"], added["target_cluster"], added["validated"]) == (
        "custom",
        cluster,
        False,
    )
    assert added["validation_record"] == {"type": "CNAME", "name": validation, "target": cluster}
    assert added["id"].startswith("dom_")
    listed = await call(owner, "GET", "/api/domains")
    assert [(d["domain"], d["type"], d["validated"]) for d in listed] == [
        (cluster, "free", True), (custom, "custom", False),
    ]  # fmt: skip

    # no record yet: the verification says which one to create, and services may not use it
    missing = await domain_once(owner, added["id"], validated=False)
    assert (
        missing["validation_reason"]
        == f"{validation} has no CNAME record: create one pointing at {cluster}"
    )
    refused = await call(owner, "POST", "/api/services", 422, service(account, f"www.{custom}"))
    [error] = refused["errors"]
    assert error["loc"] == ["domain"]
    assert f"create the DNS record {validation} CNAME {cluster}" in error["message"]

    # a record that points elsewhere: the reason names where it points
    dns_server.set_cname(validation, "somewhere.example.net")
    accepted = await call(owner, "POST", f"/api/domains/{added['id']}/validate", 202)
    assert accepted["id"] == added["id"]
    wrong = await domain_once(owner, added["id"], validated=False, reason_has="points at")
    assert (
        wrong["validation_reason"] == f"{validation} points at somewhere.example.net, not {cluster}"
    )

    # the right one, through another name (the chain is followed): verified, services welcome
    dns_server.set_cname(validation, f"alias.{custom}")
    dns_server.set_cname(f"alias.{custom}", cluster)
    await call(owner, "POST", f"/api/domains/{added['id']}/validate", 202)
    verified = await domain_once(owner, added["id"], validated=True)
    assert verified["validation_reason"] is None
    assert verified["validated_at"] is not None
    www = await call(owner, "POST", "/api/services", 201, service(account, f"www.{custom}"))
    assert www["proxy_cluster"] == cluster
    apex = await call(owner, "POST", "/api/services", 201, service(account, custom))
    assert apex["proxy_cluster"] == cluster

    async with await connect(api.nats_url, name="heron-management-tests") as bus:
        changes = await first_events(bus, DomainChanged, lambda e: e.domain == custom, 2)
    assert [(e.change, e.verified, e.account_id) for e in changes] == [
        (ChangeKind.CREATED, False, account.account_id),
        (ChangeKind.UPDATED, True, account.account_id),
    ]


async def test_a_custom_domain_in_use_stays_and_one_deleted_is_gone(
    api: RunningApi,
    owner_async: httpx.AsyncClient,
    account: AccountSeed,
    cluster: str,
    dns_server: ChallTestServer,
) -> None:
    owner = owner_async
    custom = unique("blog", "example.org")
    dns_server.set_cname(f"validation.{custom}", cluster)
    added = await call(
        owner, "POST", "/api/domains", 201, {"domain": custom, "target_cluster": cluster}
    )
    await domain_once(owner, added["id"], validated=True)
    site = await call(owner, "POST", "/api/services", 201, service(account, f"www.{custom}"))

    busy = await call(owner, "DELETE", f"/api/domains/{added['id']}", 409)
    assert busy["detail"] == (
        f"custom domain {custom!r} is used by service 'site' ({site['id']}): delete them or "
        "move them to another domain first"
    )
    await call(owner, "DELETE", f"/api/services/{site['id']}", 204)
    await call(owner, "DELETE", f"/api/domains/{added['id']}", 204)
    await call(owner, "GET", f"/api/domains/{added['id']}", 404)
    assert [d["type"] for d in await call(owner, "GET", "/api/domains")] == ["free"]
    async with await connect(api.nats_url, name="heron-management-tests") as bus:
        [*_, gone] = await first_events(bus, DomainChanged, lambda e: e.domain == custom, 3)
    assert (gone.change, gone.verified) == (ChangeKind.DELETED, True)


async def test_what_a_custom_domain_must_be(
    api: RunningApi, owner_async: httpx.AsyncClient, account: AccountSeed
) -> None:
    owner = owner_async

    async def refused(body: dict[str, Any], status: int = 422) -> Any:
        return await call(owner, "POST", "/api/domains", status, body)

    alone = await refused({"domain": unique("x", "example.org")})  # no cluster to point at
    assert alone["errors"][0]["loc"] == ["target_cluster"]
    assert "connect an edge first" in alone["errors"][0]["message"]

    first = await with_cluster(api, owner, unique("first"))
    second = await with_cluster(api, owner, unique("second"))
    which = await refused({"domain": unique("x", "example.org")})  # two clusters: name one
    listed = ", ".join(repr(c) for c in sorted((first, second)))
    assert (
        which["errors"][0]["message"]
        == f"name the cluster its services go to; its clusters: {listed}"
    )
    stranger = await refused(
        {"domain": unique("x", "example.org"), "target_cluster": "edges.example.net"}
    )
    assert stranger["errors"][0]["message"].startswith(
        "no cluster 'edges.example.net' in this account"
    )
    under = await refused({"domain": f"app.{first}", "target_cluster": first})
    assert under["errors"][0] == {
        "loc": ["domain"],
        "message": f"'app.{first}' is under the cluster domain {first!r}: its services need no custom domain",
    }
    for bad in ("localhost", "not a domain", "x" * 300, "10.0.0.1"):
        await refused({"domain": bad, "target_cluster": first})
    await refused({"domain": unique("x", "example.org"), "target_cluster": first, "extra": 1})

    taken = unique("taken", "example.org")
    await call(owner, "POST", "/api/domains", 201, {"domain": taken, "target_cluster": first})
    twice = await refused({"domain": taken, "target_cluster": second}, 409)
    assert twice["detail"] == f"domain {taken!r} is already a custom domain"
    other = await seed_account(api.database_url)
    async with api.async_client(other.tokens["owner"]) as theirs:
        their_cluster = await with_cluster(api, theirs, unique("theirs"))
        body = {"domain": taken, "target_cluster": their_cluster}
        await call(theirs, "POST", "/api/domains", 409, body)  # one owner per domain


async def test_the_domain_rule_starts_with_the_first_cluster(
    api: RunningApi,
    owner_async: httpx.AsyncClient,
    account: AccountSeed,
    dns_server: ChallTestServer,
) -> None:
    owner = owner_async
    custom = unique("early", "example.org")
    # no cluster yet (a new installation): any domain, the service waits for its cluster
    early = await call(owner, "POST", "/api/services", 201, service(account, f"app.{custom}"))
    assert (early["proxy_cluster"], early["meta"]["status"]) == (None, "pending")

    cluster = await with_cluster(api, owner, unique("edges"))
    elsewhere = await call(
        owner, "POST", "/api/services", 422, service(account, unique("x", "example.net"))
    )
    assert "is under none of this account's cluster domains" in elsewhere["errors"][0]["message"]
    free = await call(owner, "POST", "/api/services", 201, service(account, unique("app", cluster)))
    assert free["proxy_cluster"] == cluster
    # a service made before keeps its domain and may still be changed
    renamed = {**service(account, early["domain"]), "name": "renamed"}
    kept = await call(owner, "PUT", f"/api/services/{early['id']}", 200, renamed)
    assert (kept["name"], kept["proxy_cluster"]) == ("renamed", None)

    # its custom domain verified: it joins the target cluster
    dns_server.set_cname(f"validation.{custom}", cluster)
    added = await call(owner, "POST", "/api/domains", 201, {"domain": custom})
    await domain_once(owner, added["id"], validated=True)
    adopted = await call(owner, "GET", f"/api/services/{early['id']}")
    assert adopted["proxy_cluster"] == cluster


@pytest.mark.parametrize(
    ("role", "reads", "changes"),
    [("owner", 200, 201), ("network_admin", 200, 201), ("auditor", 200, 403), ("user", 403, 403)],
)
def test_domains_are_read_and_changed_by_the_service_roles(
    api: RunningApi, account: AccountSeed, role: str, reads: int, changes: int
) -> None:
    with api.client(account.tokens["owner"]) as owner:
        cluster = asyncio.run(_cluster_of(api, account.tokens["owner"]))
        existing = owner.post("/api/domains", json={"domain": unique("o", "example.org")}).json()
    with api.client(account.tokens[role]) as client:
        assert client.get("/api/domains").status_code == reads
        assert client.get(f"/api/domains/{existing['id']}").status_code == reads
        body = {"domain": unique("r", "example.org"), "target_cluster": cluster}
        assert client.post("/api/domains", json=body).status_code == changes
        expected = 202 if changes == 201 else 403
        assert client.post(f"/api/domains/{existing['id']}/validate").status_code == expected
        expected = 204 if changes == 201 else 403
        assert client.delete(f"/api/domains/{existing['id']}").status_code == expected


async def _cluster_of(api: RunningApi, token: str) -> str:
    async with api.async_client(token) as owner:
        return await with_cluster(api, owner, unique("edges"))


async def test_unverified_domains_are_verified_again_by_themselves(
    tmp_path: Path, nats_url: str, dns_server: ChallTestServer
) -> None:
    settings = {"management_dns_resolver": dns_server.resolver, "management_domain_recheck_s": 1}
    with server_of_its_own(tmp_path, nats_url, **settings) as alone:
        account = await seed_account(alone.database_url)
        async with alone.async_client(account.tokens["owner"]) as owner:
            cluster = await with_cluster(alone, owner, unique("edges"))
            custom = unique("later", "example.org")
            added = await call(owner, "POST", "/api/domains", 201, {"domain": custom})
            await domain_once(owner, added["id"], validated=False, reason_has="no CNAME record")
            dns_server.set_cname(f"validation.{custom}", cluster)
            await domain_once(owner, added["id"], validated=True)  # nobody asked


async def test_the_lookup_follows_chains_and_says_why_dns_did_not_answer(
    dns_server: ChallTestServer,
) -> None:
    lookup = CnameLookup(dns_server.resolver, timeout_s=2)
    start = unique("validation", "example.org")
    dns_server.set_cname(start, "one.example.net")
    dns_server.set_cname("one.example.net", "two.example.net")
    assert await lookup.chain(start) == CnameChain(start, ("one.example.net", "two.example.net"))
    assert await lookup.chain(start, stop_at="one.example.net") == CnameChain(
        start, ("one.example.net",)
    )
    dns_server.set_cname("two.example.net", "one.example.net")  # a loop ends the chain
    assert (await lookup.chain(start)).targets == (
        "one.example.net",
        "two.example.net",
        "one.example.net",
    )
    nowhere = unique("none")
    assert await lookup.chain(nowhere) == CnameChain(nowhere, ())

    silent = CnameLookup(f"127.0.0.1:{free_port()}", timeout_s=0.3)  # nothing answers there
    with pytest.raises(DnsLookupError, match=r"did not answer within 0.3 s"):
        await silent.chain(start)
