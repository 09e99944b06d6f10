"""ACME end to end: the stack with the certmanager against Pebble, validated through the edge.

    test (client host: root ns; Pebble and     --veth-- edge host              --veth-- peer host
          pebble-challtestsrv on 10.x.0.1,              heron-stack: management,         heron up,
          curl trusting only Pebble's root)             certmanager, heron-edge :443/:80  a backend

Pebble's DNS answers every name with the edge host's address, so Pebble validates each challenge
against the edge's public ports — tls-alpn-01 on 443, http-01 on 80 — which answer from the
``acme_challenges`` bucket the certmanager fills. A client that trusts only Pebble's root proves
the certificate the edge serves is the one the CA issued.
"""

import asyncio
import contextlib
import os
import secrets
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from certmanager_harness import Pebble
from e2e_support import PYTHON, Hosts, free_subnet, stack_with_agent, start

from heron_tunnel.netns import unique_name

TOKEN = "hrn_" + secrets.token_urlsafe(30)
DOMAIN = "heron.test"
BACKEND_PORT = 7080
BACKEND = Path(__file__).parents[1] / "integration" / "http_backend.py"


@contextlib.asynccontextmanager
async def acme_stack(
    tmp_path: Path,
    challenge: str,
    *,
    subnet: str,
    validated_at: str,
    stack_env: dict[str, str] | None = None,
) -> AsyncIterator[tuple[Hosts, Pebble]]:
    """The stack with ACME against Pebble, whose DNS sends every name to ``validated_at``."""
    pebble = Pebble(
        tmp_path / "pebble", host=f"{subnet}.0.1", answer_ipv4=validated_at,
        validation_ports=(80, 443),
    )  # fmt: skip
    async with stack_with_agent(
        tmp_path, prefix="ha", subnet=subnet, token=TOKEN, client_side=[pebble],
        stack_env={"HERON_PROXY_DOMAIN": DOMAIN,
                   "HERON_ACME_DIRECTORY_URL": pebble.directory_url,
                   "HERON_ACME_CA_FILE": str(pebble.ca_file),
                   "HERON_PROXY_ACME_CHALLENGE_TYPE": challenge,
                   # a failed order waits long: only the API's retry brings it back in the test
                   "HERON_CERTMANAGER_RETRY_INITIAL_S": "600", **(stack_env or {})},
        peer_processes=[("backend", [PYTHON, str(BACKEND), "--port", str(BACKEND_PORT)])],
    ) as hosts:  # fmt: skip
        await hosts.eventually("the edge's main port", lambda: listening(hosts.address))
        yield hosts, pebble


async def listening(address: str, port: int = 443) -> bool:
    try:
        _, writer = await asyncio.open_connection(address, port)
    except OSError:
        return False
    writer.close()
    return True


@pytest_asyncio.fixture(params=["tls-alpn-01", "http-01"])
async def acme(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Hosts, Pebble]]:
    subnet = free_subnet(230, 20)
    async with acme_stack(
        tmp_path, request.param, subnet=subnet, validated_at=f"{subnet}.0.2"
    ) as found:
        yield found


async def status_of(hosts: Hosts, service_id: str) -> dict[str, Any]:
    async with hosts.client() as client:
        meta: dict[str, Any] = (await client.get(f"/api/services/{service_id}")).json()["meta"]
    return meta


async def https_status(hosts: Hosts, host: str, root: Path, *, at: str = "") -> int:
    """curl over HTTPS to the edge at ``at`` (default: the stack's) trusting only ``root``; 0
    when TLS (or anything else) failed."""
    process = await asyncio.create_subprocess_exec(
        "curl", "--silent", "--max-time", "10", "--output", "/dev/null", "--write-out",
        "%{http_code}", "--resolve", f"{host}:443:{at or hosts.address}", "--cacert", str(root),
        f"https://{host}/",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await process.communicate()
    return int(out or b"0")


async def test_a_new_domain_gets_a_certificate_from_the_ca(
    acme: tuple[Hosts, Pebble], tmp_path: Path
) -> None:
    hosts, pebble = acme
    root = tmp_path / "pebble-root.pem"
    root.write_bytes(await pebble.root_pem())
    app = f"app.{DOMAIN}"
    pebble.pause()  # the order waits: the service shows what it waits for
    try:
        service_id = await create_service(hosts, "app", app)

        async def pending() -> bool:
            return bool((await status_of(hosts, service_id))["status"] == "certificate_pending")

        await hosts.eventually("certificate_pending while the CA is away", pending, within_s=30)
        assert await https_status(hosts, app, root) == 0  # the local CA's stand-in: not trusted
    finally:
        pebble.resume()

    async def active() -> bool:
        return bool((await status_of(hosts, service_id))["status"] == "active")

    await hosts.eventually("the service active with its certificate", active, within_s=60)
    assert await https_status(hosts, app, root) == 200

    # the CA cannot validate (its DNS sends the name elsewhere): certificate_failed, with why
    broken = f"broken.{DOMAIN}"
    await pebble.dns("add-a", host=f"{broken}.", addresses=["127.0.0.1"])
    broken_id = await create_service(hosts, "broken", broken)

    async def failed() -> str | None:
        meta = await status_of(hosts, broken_id)
        return meta["status_reason"] if meta["status"] == "certificate_failed" else None

    reason = await hosts.eventually("certificate_failed with the CA's reason", failed, 60)
    assert "127.0.0.1" in reason, reason
    # the cause fixed, the retry action brings the certificate (the certmanager's own retry
    # would wait ten minutes)
    await pebble.dns("clear-a", host=f"{broken}.")
    async with hosts.client() as client:
        retried = await client.post(f"/api/services/{broken_id}/certificate/retry")
    assert retried.status_code == 202, retried.text

    async def broken_active() -> bool:
        return bool((await status_of(hosts, broken_id))["status"] == "active")

    await hosts.eventually("the certificate after the retry", broken_active, within_s=60)
    assert await https_status(hosts, broken, root) == 200


async def create_service(hosts: Hosts, name: str, domain: str) -> str:
    target = {"target_type": "peer", "target_id": hosts.peer_id, "port": BACKEND_PORT}
    async with hosts.client() as client:
        created = await client.post(
            "/api/services", json={"name": name, "domain": domain, "targets": [target]}
        )
    assert created.status_code == 201, created.text
    service_id: str = created.json()["id"]
    return service_id


async def test_two_edges_of_a_cluster_share_the_challenge_and_the_certificate(
    tmp_path: Path,
) -> None:
    """The CA reaches the second edge only: it answers a challenge it never saw ordered, and both
    edges serve the certificate."""
    subnet = free_subnet(230, 20)
    first, second = f"{subnet}.0.2", f"{subnet}.0.3"
    stack_env = {"HERON_PROXY_ADDRESS": f"{first}:443", "HERON_PROXY_HTTP_ADDRESS": f"{first}:80"}
    async with acme_stack(
        tmp_path, "tls-alpn-01", subnet=subnet, validated_at=second, stack_env=stack_env
    ) as (hosts, pebble):
        root = tmp_path / "pebble-root.pem"
        root.write_bytes(await pebble.root_pem())
        await add_address(hosts, first, second)
        async with hosts.client() as client:
            token = await client.post("/api/proxy-tokens", json={"name": "edge-b"})
        assert token.status_code == 201, token.text
        edge_b = await start(
            hosts.logs, hosts.edge, "edge-b", PYTHON, "-m", "heron_edge",
            env={"HERON_MODE": "development", "HERON_LOG_FORMAT": "json",
                 "HERON_DATA_DIR": str(tmp_path / "edge-b"),
                 "HERON_PROXY_DOMAIN": DOMAIN, "HERON_PROXY_TOKEN": token.json()["plain_token"],
                 "HERON_PROXY_MANAGEMENT_URL": "http://127.0.0.1:50051",
                 "HERON_NATS_URL": "nats://127.0.0.1:4222", "HERON_PROXY_ACME_CERTIFICATES": "true",
                 "HERON_PROXY_INSTANCE_ID": "edge-b", "HERON_PROXY_WORKERS": "1",
                 "HERON_PROXY_ADDRESS": f"{second}:443", "HERON_PROXY_HTTP_ADDRESS": f"{second}:80",
                 "HERON_PROXY_HEALTH_ADDRESS": "127.0.0.1:9101", "HERON_PROXY_WG_PORT": "51821",
                 "HERON_PROXY_WIREGUARD_INTERFACE": unique_name("wgb"),
                 "HERON_PROXY_WIREGUARD_ENDPOINT": f"{subnet}.1.1:51821"},
        )  # fmt: skip
        try:
            await hosts.eventually("the second edge's main port", lambda: listening(second))
            app = f"shared.{DOMAIN}"
            service_id = await create_service(hosts, "shared", app)

            async def active() -> bool:
                return bool((await status_of(hosts, service_id))["status"] == "active")

            await hosts.eventually("the certificate, validated at the second edge", active, 60)

            async def both_serve_it() -> bool:
                return [
                    await https_status(hosts, app, root, at=edge) for edge in (first, second)
                ] == [200, 200]

            await hosts.eventually("both edges serving the CA's certificate", both_serve_it, 30)
        finally:
            os.killpg(edge_b.pid, signal.SIGTERM)  # the edge and its workers
            await asyncio.wait_for(edge_b.wait(), 20)


async def add_address(hosts: Hosts, existing: str, new: str) -> None:
    """``new`` on the edge host's interface that holds ``existing``."""
    shown = await hosts.edge.run("ip", "-o", "-4", "address", "show", timeout_s=10)
    device = next(
        line.split()[1] for line in shown.stdout.decode().splitlines() if f" {existing}/" in line
    )
    await hosts.edge.run("ip", "address", "add", f"{new}/24", "dev", device, timeout_s=10)
