"""A service's ``meta.status``, derived from what edges report on their config streams.

Real edges' streams (``grpc_clients``) send ``ServiceStatus`` reports; the REST API must show the
status derived from them: ``active``, ``certificate_pending``, ``tunnel_not_created`` naming the
edge, ``error``, and ``pending`` again once no edge is connected.
"""

from typing import Any

import httpx
from grpc_clients import Management, service_status
from management_fixtures import AccountSeed, RunningApi, call, proxy_token, seed_account
from status_waits import CLUSTER, acked_change, add_service, meta, synced, wait_for

from heron_core.types import ServiceMode, ServiceStatus
from heron_management.domain.certificates import CertificateFailure
from heron_management.domain.status import EdgeReport, ServiceFacts, derive_status


async def test_reports_drive_the_status_and_a_disconnect_makes_it_pending(
    api: RunningApi, owner_async: httpx.AsyncClient, account: AccountSeed, unique_domain: Any
) -> None:
    owner = owner_async
    token = await proxy_token(owner)
    web = await add_service(owner, account, unique_domain("web"))
    assert web["meta"]["status"] == "pending"
    assert "no edge cluster serves" in web["meta"]["status_reason"]
    async with Management(api.grpc_target) as management:
        async with management.edge_sync(token, instance_id="edge-one") as edge:
            await synced(edge)
            await wait_for(
                owner, web["id"], "pending", f"waiting for an edge of cluster '{CLUSTER}'"
            )

            edge.send(service_status(web["id"], tunnel_up=True, certificate_available=True))
            active = await wait_for(owner, web["id"], "active")
            assert active["status_reason"] is None
            assert active["certificate_issued_at"] is not None

            problem = "no handshake from peer app-1 (100.64.0.3) yet"
            edge.send(service_status(web["id"], tunnel_up=False, error_message=problem))
            down = await wait_for(owner, web["id"], "tunnel_not_created")
            assert down["status_reason"] == f"edge 'edge-one': {problem}"

            edge.send(service_status(web["id"], tunnel_up=True))
            pending = await wait_for(owner, web["id"], "certificate_pending")
            assert "certificate" in pending["status_reason"]
            assert web["domain"] in pending["status_reason"]

            edge.send(service_status(web["id"], tunnel_up=True, error_message="port 443 is taken"))
            failed = await wait_for(owner, web["id"], "error")
            assert failed["status_reason"] == "edge 'edge-one': port 443 is taken"
            assert failed["certificate_issued_at"] == active["certificate_issued_at"]
        gone = await wait_for(owner, web["id"], "pending")
        assert gone["status_reason"] == f"no edge of cluster '{CLUSTER}' is connected"


async def test_l4_services_need_no_certificate(
    api: RunningApi, owner_async: httpx.AsyncClient, account: AccountSeed, unique_domain: Any
) -> None:
    token = await proxy_token(owner_async)
    tcp = await add_service(owner_async, account, unique_domain("db"), mode="tcp")
    tls = await add_service(owner_async, account, unique_domain("tls"), mode="tls")
    async with Management(api.grpc_target) as management, management.edge_sync(token) as edge:
        await synced(edge)
        edge.send(service_status(tcp["id"], tunnel_up=True))
        edge.send(service_status(tls["id"], tunnel_up=True))
        await wait_for(owner_async, tcp["id"], "active")
        found = await wait_for(owner_async, tls["id"], "active")
        assert found["certificate_issued_at"] is None


async def test_one_edge_with_the_tunnel_up_is_enough(
    api: RunningApi, owner_async: httpx.AsyncClient, account: AccountSeed, unique_domain: Any
) -> None:
    owner = owner_async
    token = await proxy_token(owner)
    web = await add_service(owner, account, unique_domain("web"))
    async with (
        Management(api.grpc_target) as management,
        management.edge_sync(token, instance_id="edge-down") as down,
    ):
        await synced(down)
        down.send(service_status(web["id"], tunnel_up=False, error_message="no handshake yet"))
        await wait_for(owner, web["id"], "tunnel_not_created", "edge 'edge-down'")
        async with management.edge_sync(token, instance_id="edge-up") as up:
            await synced(up)
            up.send(service_status(web["id"], tunnel_up=True, certificate_available=True))
            await wait_for(owner, web["id"], "active")
        # the only edge with the tunnel up went away: the other one's reason shows
        found = await wait_for(owner, web["id"], "tunnel_not_created")
        assert found["status_reason"] == "edge 'edge-down': no handshake yet"


async def test_config_changes_derive_the_status_again_from_the_kept_reports(
    api: RunningApi, owner_async: httpx.AsyncClient, account: AccountSeed, unique_domain: Any
) -> None:
    owner = owner_async
    token = await proxy_token(owner)
    web = await add_service(owner, account, unique_domain("web"))
    path = f"/api/services/{web['id']}"
    async with Management(api.grpc_target) as management, management.edge_sync(token) as edge:
        await synced(edge)
        edge.send(service_status(web["id"], tunnel_up=True, certificate_available=True))
        await wait_for(owner, web["id"], "active")

        disabled = await call(owner, "POST", f"{path}/disable")
        assert (disabled["meta"]["status"], disabled["meta"]["status_reason"]) == (
            "pending",
            "the service is disabled",
        )
        await acked_change(edge)
        enabled = await call(owner, "POST", f"{path}/enable")
        assert enabled["meta"]["status"] == "active"  # the edge's last report still holds
        await acked_change(edge)

        target_id = web["targets"][0]["id"]
        await call(owner, "POST", f"{path}/targets/{target_id}/disable")
        assert (await meta(owner, web["id"]))["status"] == "pending"
        await acked_change(edge)
        await call(owner, "POST", f"{path}/targets/{target_id}/enable")
        assert (await meta(owner, web["id"]))["status"] == "active"
        await acked_change(edge)

        # the edge applies the change and finds the tunnel down: its new report decides
        edge.send(service_status(web["id"], tunnel_up=False, error_message="no handshake"))
        await wait_for(owner, web["id"], "tunnel_not_created")
        # nothing was pushed to the edge because of a status change
        assert await edge.nothing_within(0.5)


async def test_a_new_stream_of_the_same_edge_reports_afresh(
    api: RunningApi, owner_async: httpx.AsyncClient, account: AccountSeed, unique_domain: Any
) -> None:
    token = await proxy_token(owner_async)
    web = await add_service(owner_async, account, unique_domain("web"))
    async with (
        Management(api.grpc_target) as management,
        management.edge_sync(token, instance_id="edge-a") as older,
    ):
        await synced(older)
        older.send(service_status(web["id"], tunnel_up=True, certificate_available=True))
        await wait_for(owner_async, web["id"], "active")
        async with management.edge_sync(token, instance_id="edge-a") as newer:
            await synced(newer)
            await wait_for(owner_async, web["id"], "pending", "waiting for an edge")
            newer.send(service_status(web["id"], tunnel_up=True))
            await wait_for(owner_async, web["id"], "certificate_pending")


async def test_reports_about_another_accounts_services_change_nothing(
    api: RunningApi, owner_async: httpx.AsyncClient, account: AccountSeed, unique_domain: Any
) -> None:
    token = await proxy_token(owner_async)
    mine = await add_service(owner_async, account, unique_domain("mine"))
    other = await seed_account(api.database_url)
    async with api.async_client(other.tokens["owner"]) as theirs:
        their_service = await add_service(theirs, other, unique_domain("theirs"))
        async with Management(api.grpc_target) as management, management.edge_sync(token) as edge:
            await synced(edge)
            edge.send(
                service_status(their_service["id"], tunnel_up=True, certificate_available=True)
            )
            edge.send(service_status(mine["id"], tunnel_up=True, certificate_available=True))
            await wait_for(owner_async, mine["id"], "active")
            untouched = await meta(theirs, their_service["id"])
        assert untouched["status"] == "pending"
        assert "no edge cluster serves" in untouched["status_reason"]


# the rules alone


def facts(*reports: EdgeReport, mode: ServiceMode = ServiceMode.HTTP, **extra: Any) -> ServiceFacts:
    given: dict[str, Any] = {
        "domain": "app.example.test", "mode": mode, "enabled": True, "enabled_targets": 1,
        "connected_clusters": [CLUSTER], "known_clusters": [CLUSTER], "reports": reports,
    }  # fmt: skip
    return ServiceFacts(**(given | extra))


def report(edge: str, *, up: bool, cert: bool = False, error: str = "") -> EdgeReport:
    return EdgeReport(edge=edge, tunnel_up=up, certificate_available=cert, error_message=error)


def test_the_rules_in_order() -> None:
    up_with_cert = report("e1", up=True, cert=True)
    assert derive_status(facts(up_with_cert, enabled=False)) == (
        ServiceStatus.PENDING,
        "the service is disabled",
    )
    assert derive_status(facts(up_with_cert, enabled_targets=0))[0] is ServiceStatus.PENDING
    assert derive_status(facts(connected_clusters=[], known_clusters=[]))[1] == (
        "no edge cluster serves 'app.example.test' yet: connect an edge whose proxy domain is a "
        "parent of it, or add it as a custom domain"
    )
    assert derive_status(facts(connected_clusters=[]))[1] == (
        f"no edge of cluster '{CLUSTER}' is connected"
    )
    assert derive_status(facts())[1] == f"waiting for an edge of cluster '{CLUSTER}' to report"
    assert derive_status(facts(up_with_cert)) == (ServiceStatus.ACTIVE, None)
    assert derive_status(facts(report("e1", up=True)))[0] is ServiceStatus.CERTIFICATE_PENDING
    assert derive_status(facts(report("e1", up=True), mode=ServiceMode.UDP))[0] is (
        ServiceStatus.ACTIVE
    )


def test_one_edge_must_have_both_the_tunnel_and_the_certificate() -> None:
    split = facts(report("a", up=True), report("b", up=False, cert=True, error="no handshake"))
    assert derive_status(split)[0] is ServiceStatus.CERTIFICATE_PENDING
    busy = facts(report("a", up=True, cert=True, error="port taken"), report("b", up=False))
    assert derive_status(busy) == (ServiceStatus.ERROR, "edge 'a': port taken")
    quiet = facts(report("b", up=False), report("a", up=False, error="no handshake"))
    assert derive_status(quiet) == (ServiceStatus.TUNNEL_NOT_CREATED, "edge 'a': no handshake")
    silent = facts(report("b", up=False))
    assert derive_status(silent) == (
        ServiceStatus.TUNNEL_NOT_CREATED,
        "edge 'b': no tunnel to the peer of any enabled target",
    )


def test_a_certificate_failure_shows_where_the_certificate_is_what_is_missing() -> None:
    failure = CertificateFailure("rateLimited: too many certificates", retry_at=None)
    failed = derive_status(facts(report("e1", up=True), certificate_failure=failure))
    assert failed == (
        ServiceStatus.CERTIFICATE_FAILED,
        "no certificate for 'app.example.test': rateLimited: too many certificates (no new "
        "attempt until one is asked for (POST /api/services/{id}/certificate/retry))",
    )
    # an edge that holds a certificate serves; a tunnel that is down is the first thing to fix
    served = facts(report("e1", up=True, cert=True), certificate_failure=failure)
    assert derive_status(served) == (ServiceStatus.ACTIVE, None)
    down = facts(report("e1", up=False, error="no handshake"), certificate_failure=failure)
    assert derive_status(down)[0] is ServiceStatus.TUNNEL_NOT_CREATED
    long = CertificateFailure("x" * 5000, retry_at=None)
    assert (
        len(derive_status(facts(report("e1", up=True), certificate_failure=long))[1] or "") < 1024
    )
