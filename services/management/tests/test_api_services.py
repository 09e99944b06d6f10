"""``/api/services`` end to end over HTTP, on SQLite and PostgreSQL."""

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from management_fixtures import AccountSeed, RunningApi
from sqlmodel import select

from heron_management.db.engine import create_engine, session_factory
from heron_management.db.tables import ServiceRow

Domain = Callable[[str], str]


def http_service(domain: str, peer_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "app",
        "domain": domain,
        "targets": [{"target_type": "peer", "target_id": peer_id, "port": 8080}],
        **extra,
    }


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    return body


def test_create_get_list_update_delete(
    owner: httpx.Client, account: AccountSeed, unique_domain: Domain
) -> None:
    domain = unique_domain("app")
    created = owner.post("/api/services", json=http_service(domain.upper(), account.peer_id))
    assert created.status_code == 201, created.text
    service = created.json()
    assert service["domain"] == domain  # normalised to lower case
    assert service["mode"] == "http"
    assert service["enabled"] is True
    assert service["source"] == "permanent"
    assert service["meta"]["status"] == "pending"
    assert "no edge cluster serves" in service["meta"]["status_reason"]
    target = service["targets"][0]
    assert target["path"] == "/" and target["protocol"] == "http" and target["port"] == 8080
    assert target["id"].startswith("tgt_")

    assert owner.get(f"/api/services/{service['id']}").json() == service
    assert [s["id"] for s in owner.get("/api/services").json()] == [service["id"]]

    changed = http_service(domain, account.peer_id, name="renamed", pass_host_header=True)
    updated = owner.put(f"/api/services/{service['id']}", json=changed)
    assert updated.status_code == 200, updated.text
    assert updated.json()["name"] == "renamed"
    assert updated.json()["pass_host_header"] is True
    assert updated.json()["targets"][0]["id"] == target["id"]  # same position keeps its ID

    assert owner.delete(f"/api/services/{service['id']}").status_code == 204
    assert_problem(owner.get(f"/api/services/{service['id']}"), 404)
    assert owner.get("/api/services").json() == []


def test_a_service_may_start_without_targets(owner: httpx.Client, unique_domain: Domain) -> None:
    response = owner.post("/api/services", json={"name": "empty", "domain": unique_domain("e")})
    assert response.status_code == 201, response.text
    assert response.json()["targets"] == []
    assert "no enabled target" in response.json()["meta"]["status_reason"]


def test_enable_and_disable(
    owner: httpx.Client, account: AccountSeed, unique_domain: Domain
) -> None:
    service = owner.post(
        "/api/services", json=http_service(unique_domain("x"), account.peer_id)
    ).json()
    disabled = owner.post(f"/api/services/{service['id']}/disable")
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    assert disabled.json()["meta"]["status_reason"] == "the service is disabled"
    enabled = owner.post(f"/api/services/{service['id']}/enable")
    assert enabled.json()["enabled"] is True


def test_targets_add_replace_toggle_remove(
    owner: httpx.Client, account: AccountSeed, unique_domain: Domain
) -> None:
    service = owner.post(
        "/api/services", json=http_service(unique_domain("t"), account.peer_id)
    ).json()
    base = f"/api/services/{service['id']}/targets"
    api_target = {
        "target_type": "host", "target_id": account.resource_ids["host"], "path": "/api/",
        "protocol": "https", "options": {"request_timeout": "90s", "path_rewrite": "preserve"},
    }  # fmt: skip
    added = owner.post(base, json=api_target)
    assert added.status_code == 201, added.text
    new = added.json()
    assert new["path"] == "/api" and new["port"] == 443
    assert new["options"]["request_timeout"] == "1m30s"
    assert len(owner.get(base).json()) == 2

    clash = owner.post(base, json={**api_target, "path": "/api"})
    body = assert_problem(clash, 422)
    assert "already used" in body["errors"][0]["message"]

    toggled = owner.post(f"{base}/{new['id']}/disable")
    assert toggled.status_code == 200 and toggled.json()["enabled"] is False
    assert owner.post(f"{base}/{new['id']}/enable").json()["enabled"] is True

    replaced = owner.put(f"{base}/{new['id']}", json={**api_target, "path": "/v2", "port": 8443})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["path"] == "/v2" and replaced.json()["id"] == new["id"]

    assert owner.delete(f"{base}/{new['id']}").status_code == 204
    assert [t["id"] for t in owner.get(base).json()] == [service["targets"][0]["id"]]
    assert_problem(owner.delete(f"{base}/{new['id']}"), 404)


def test_a_service_read_with_get_can_be_put_back_and_targets_keep_their_ids(
    owner: httpx.Client, account: AccountSeed, unique_domain: Domain
) -> None:
    paths = [{"target_type": "peer", "target_id": account.peer_id, "port": 80, "path": p}
             for p in ("/a", "/b", "/c")]  # fmt: skip
    service = owner.post(
        "/api/services", json={"name": "ids", "domain": unique_domain("ids"), "targets": paths}
    ).json()
    ids = {t["path"]: t["id"] for t in service["targets"]}
    base = f"/api/services/{service['id']}"
    # positions stay distinct after a removal and an addition
    assert owner.delete(f"{base}/targets/{ids['/a']}").status_code == 204
    added = owner.post(f"{base}/targets", json={**paths[0], "path": "/d"}).json()
    assert [t["path"] for t in owner.get(base).json()["targets"]] == ["/b", "/c", "/d"]

    read = owner.get(base).json()
    body = {
        k: v
        for k, v in read.items()
        if k not in {"id", "meta", "source", "port_auto_assigned", "proxy_cluster", "auth"}
    }
    body["targets"] = list(reversed(read["targets"]))  # reordered, IDs carried along
    put = owner.put(base, json=body)
    assert put.status_code == 200, put.text
    assert [(t["path"], t["id"]) for t in put.json()["targets"]] == [
        ("/d", added["id"]),
        ("/c", ids["/c"]),
        ("/b", ids["/b"]),
    ]


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        ('{"name": "x", "domain": ', 400, "not valid JSON"),
        ('{"name": "x", "domain": "a.example.test", "surprise": 1}', 422, "unknown field"),
        ('{"name": "x", "domain": 42}', 422, "string"),
        ('{"name": "x", "domain": "localhost"}', 422, "fully qualified"),
        ('{"name": "x", "domain": "a..example.test"}', 422, "not valid"),
        ('{"name": "", "domain": "a.example.test"}', 422, "at least 1"),
        ('{"name": "x", "domain": "a.example.test", "mode": "ftp"}', 422, "http"),
        ('[]', 422, "object"),
    ],
)  # fmt: skip
def test_malformed_bodies_get_a_reason(
    owner: httpx.Client, payload: str, status: int, needle: str
) -> None:
    response = owner.post(
        "/api/services", content=payload, headers={"content-type": "application/json"}
    )
    body = assert_problem(response, status)
    assert needle in response.text, body


@pytest.mark.parametrize(
    ("extra", "loc", "needle"),
    [
        ({"listen_port": 9000}, ["listen_port"], "for tcp, udp and tls"),
        ({"mode": "tcp", "pass_host_header": True}, ["pass_host_header"], "for http services"),
        ({"mode": "udp", "auth": {"pin_auth": {"enabled": True, "pin": "1234"}}}, ["auth"], "for http"),
        ({"targets": [{"target_type": "peer", "target_id": "PEER", "options": {"proxy_protocol": True}}]},
         ["targets", 0, "options", "proxy_protocol"], "tcp and tls"),
        ({"mode": "tcp", "targets": [{"target_type": "peer", "target_id": "PEER"}]},
         ["targets", 0, "port"], "needs a port"),
        ({"mode": "tcp", "targets": [{"target_type": "peer", "target_id": "PEER", "port": 22, "path": "/x"}]},
         ["targets", 0, "path"], "for http services"),
        ({"targets": [{"target_type": "peer", "target_id": "PEER", "options": {"request_timeout": "soon"}}]},
         ["targets", 0, "options", "request_timeout"], "not a duration"),
        ({"targets": [{"target_type": "peer", "target_id": "PEER", "port": 70000}]},
         ["targets", 0, "port"], "less than or equal to 65535"),
        ({"targets": [{"target_type": "peer", "target_id": "nope"}]}, ["targets", 0, "target_id"], "no peer"),
        ({"targets": [{"target_type": "subnet", "target_id": "HOST", "host": "10.2.0.7"}]},
         ["targets", 0, "target_id"], "is a host, not a subnet"),
        ({"targets": [{"target_type": "subnet", "target_id": "SUBNET", "host": "10.9.9.9"}]},
         ["targets", 0, "host"], "not inside the subnet 10.2.0.0/24"),
        ({"targets": [{"target_type": "subnet", "target_id": "SUBNET", "host": "evil.example.com"}]},
         ["targets", 0, "host"], "must be an IP address inside the subnet"),
        ({"mode": "tcp", "listen_port": 443}, ["listen_port"], "the edge's main port"),
        ({"mode": "udp", "listen_port": 51820}, ["listen_port"], "WireGuard"),
        ({"targets": [{"target_type": "peer", "target_id": "PEER"}, {"target_type": "peer", "target_id": "PEER", "path": "/"}]},
         ["targets", 1, "path"], "already used"),
        ({"auth": {"password_auth": {"enabled": True}}}, ["auth", "password_auth", "password"], "required"),
        ({"auth": {"pin_auth": {"enabled": True, "pin": "12ab"}}}, ["auth", "pin_auth", "pin"], "pattern"),
        ({"access_restrictions": {"allowed_cidrs": ["10.0.0.1/8"]}},
         ["access_restrictions", "allowed_cidrs", 0], "host bits"),
        ({"targets": [{"target_type": "peer", "target_id": "PEER", "options": {"custom_headers": {"Host": "x"}}}]},
         ["targets", 0, "options", "custom_headers"], "set by the proxy"),
    ],
)  # fmt: skip
def test_rule_violations_name_the_field(
    owner: httpx.Client, account: AccountSeed, unique_domain: Domain,
    extra: dict[str, Any], loc: list[str | int], needle: str,
) -> None:  # fmt: skip
    payload = {"name": "x", "domain": unique_domain("r"), **extra}
    raw = httpx.Request("POST", "/", json=payload).content.decode()
    for placeholder, real in (
        ("PEER", account.peer_id),
        ("HOST", account.resource_ids["host"]),
        ("SUBNET", account.resource_ids["subnet"]),
    ):
        raw = raw.replace(f'"{placeholder}"', f'"{real}"')
    response = owner.post(
        "/api/services", content=raw, headers={"content-type": "application/json"}
    )
    body = assert_problem(response, 422)
    matching = [e for e in body["errors"] if e["loc"] == loc]
    assert matching, body
    assert needle in matching[0]["message"], body


def test_duplicate_domain_is_a_conflict(
    owner: httpx.Client, account: AccountSeed, account_factory: Callable[[], AccountSeed],
    api: RunningApi, unique_domain: Domain,
) -> None:  # fmt: skip
    domain = unique_domain("dup")
    assert (
        owner.post("/api/services", json=http_service(domain, account.peer_id)).status_code == 201
    )
    body = assert_problem(
        owner.post("/api/services", json=http_service(domain, account.peer_id)), 409
    )
    assert domain in body["detail"]
    other = account_factory()
    with api.client(other.tokens["owner"]) as stranger:  # domains are unique across accounts
        assert_problem(
            stranger.post("/api/services", json=http_service(domain, other.peer_id)), 409
        )


def test_l4_services_get_ports(
    owner: httpx.Client, account: AccountSeed, unique_domain: Domain
) -> None:
    target = {"target_type": "peer", "target_id": account.peer_id, "port": 5432}
    tcp = owner.post(
        "/api/services",
        json={"name": "db", "domain": unique_domain("db"), "mode": "tcp", "targets": [target]},
    )
    assert tcp.status_code == 201, tcp.text
    assigned = tcp.json()
    assert assigned["port_auto_assigned"] is True and 20000 <= assigned["listen_port"] < 30000
    assert assigned["targets"][0]["protocol"] == "tcp" and assigned["targets"][0]["path"] is None
    again = owner.put(
        f"/api/services/{assigned['id']}",
        json={"name": "db2", "domain": assigned["domain"], "mode": "tcp", "targets": [target]},
    )
    assert again.json()["listen_port"] == assigned["listen_port"]  # stable across updates

    udp = owner.post(
        "/api/services",
        json={
            "name": "dns",
            "domain": unique_domain("dns"),
            "mode": "udp",
            "targets": [{**target, "port": 53}],
        },
    )
    assert udp.json()["targets"][0]["options"]["session_idle_timeout"] == "30s"

    fixed = {
        "name": "ssh",
        "domain": unique_domain("ssh"),
        "mode": "tcp",
        "listen_port": 12022,
        "targets": [{**target, "port": 22}],
    }
    assert owner.post("/api/services", json=fixed).status_code == 201
    clash = owner.post("/api/services", json={**fixed, "domain": unique_domain("ssh2")})
    assert "held by service 'ssh'" in assert_problem(clash, 409)["detail"]
    tls_same_port = {**fixed, "domain": unique_domain("tls"), "mode": "tls"}
    assert (
        owner.post("/api/services", json=tls_same_port).status_code == 201
    )  # SNI tells them apart


def test_secrets_are_write_only_and_hashed(
    owner: httpx.Client, account: AccountSeed, api: RunningApi, unique_domain: Domain
) -> None:
    auth = {
        "password_auth": {"enabled": True, "password": "correct horse"},
        "pin_auth": {"enabled": True, "pin": "123456"},
        "bearer_auth": {"enabled": True, "groups": ["eng"]},
        "header_auths": [{"header": "X-Api-Key", "value": "s3cret-key"}],
    }
    created = owner.post(
        "/api/services", json=http_service(unique_domain("auth"), account.peer_id, auth=auth)
    )
    assert created.status_code == 201, created.text
    text = created.text
    for secret in ("correct horse", "123456", "s3cret-key"):
        assert secret not in text
    public = created.json()["auth"]
    assert public == {
        "password_auth": {"enabled": True}, "pin_auth": {"enabled": True},
        "sso_auth": {"enabled": True, "groups": ["eng"]},
        "header_auths": [{"enabled": True, "header": "X-Api-Key"}],
    }  # fmt: skip
    stored = _stored_auth(api.database_url, created.json()["id"])
    assert stored["password"]["hash"].startswith("$argon2id$")
    assert stored["pin"]["hash"].startswith("$argon2id$")
    assert stored["header_auths"][0]["hash"].startswith("$argon2id$")
    assert "correct horse" not in str(stored)

    # An enabled method sent without its secret keeps the stored one.
    keep = {"password_auth": {"enabled": True, "password": ""}, "pin_auth": {"enabled": True},
            "header_auths": [{"header": "x-api-key", "value": ""}]}  # fmt: skip
    kept = owner.put(
        f"/api/services/{created.json()['id']}",
        json=http_service(created.json()["domain"], account.peer_id, auth=keep),
    )
    assert kept.status_code == 200, kept.text
    after = _stored_auth(api.database_url, created.json()["id"])
    assert after["password"]["hash"] == stored["password"]["hash"]
    assert after["header_auths"][0]["hash"] == stored["header_auths"][0]["hash"]


def _stored_auth(database_url: str, service_id: str) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        engine = create_engine(database_url)
        try:
            async with session_factory(engine)() as session:
                row = (
                    await session.exec(select(ServiceRow).where(ServiceRow.id == service_id))
                ).one()
                return row.auth
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_oversized_body_is_refused(owner: httpx.Client) -> None:
    response = owner.post(
        "/api/services",
        content=b"{" + b" " * (2 << 20) + b"}",
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 413)


def test_unknown_route_is_a_problem(owner: httpx.Client) -> None:
    assert_problem(owner.get("/api/nothing-here"), 404)


def test_errors_on_a_target_endpoint_point_into_its_own_body(
    owner: httpx.Client, account: AccountSeed, unique_domain: Domain
) -> None:
    first = {"target_type": "peer", "target_id": account.peer_id, "port": 80, "path": "/a"}
    service = owner.post(
        "/api/services", json={"name": "loc", "domain": unique_domain("loc"), "targets": [first]}
    ).json()
    base = f"/api/services/{service['id']}/targets"
    cases = [
        ({**first, "target_id": "nope", "path": "/x"}, ["target_id"], "no peer"),
        ({**first, "path": "/a"}, ["path"], "already used"),
        ({**first, "protocol": "tcp", "path": "/y"}, ["protocol"], "not tcp"),
    ]
    for body, loc, needle in cases:
        problem = assert_problem(owner.post(base, json=body), 422)
        assert [e["loc"] for e in problem["errors"]] == [loc], problem
        assert needle in problem["errors"][0]["message"], problem
    second = owner.post(base, json={**first, "path": "/b"}).json()
    clash = assert_problem(owner.put(f"{base}/{second['id']}", json=first), 422)
    assert [e["loc"] for e in clash["errors"]] == [["path"]], clash
