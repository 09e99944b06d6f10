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
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from certmanager_harness import Pebble
from e2e_support import PYTHON, Hosts, stack_with_agent

SUBNET = f"10.{230 + os.getpid() % 20}"  # 10.230-249.x: apart from the other e2e tests'
TOKEN = "hrn_" + secrets.token_urlsafe(30)
DOMAIN = "heron.test"
BACKEND_PORT = 7080
BACKEND = Path(__file__).parents[1] / "integration" / "http_backend.py"


@pytest_asyncio.fixture(params=["tls-alpn-01", "http-01"])
async def acme(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Hosts, Pebble]]:
    pebble = Pebble(
        tmp_path / "pebble", host=f"{SUBNET}.0.1", answer_ipv4=f"{SUBNET}.0.2",
        validation_ports=(80, 443),
    )  # fmt: skip
    async with stack_with_agent(
        tmp_path, prefix="ha", subnet=SUBNET, token=TOKEN, client_side=[pebble],
        stack_env={"HERON_PROXY_DOMAIN": DOMAIN,
                   "HERON_ACME_DIRECTORY_URL": pebble.directory_url,
                   "HERON_ACME_CA_FILE": str(pebble.ca_file),
                   "HERON_PROXY_ACME_CHALLENGE_TYPE": request.param,
                   "HERON_CERTMANAGER_RETRY_INITIAL_S": "5"},
        peer_processes=[("backend", [PYTHON, str(BACKEND), "--port", str(BACKEND_PORT)])],
    ) as hosts:  # fmt: skip

        async def edge_listening() -> bool:  # Pebble validates against it
            try:
                _, writer = await asyncio.open_connection(hosts.address, 443)
            except OSError:
                return False
            writer.close()
            return True

        await hosts.eventually("the edge's main port", edge_listening)
        yield hosts, pebble


async def status_of(hosts: Hosts, service_id: str) -> dict[str, Any]:
    async with hosts.client() as client:
        meta: dict[str, Any] = (await client.get(f"/api/services/{service_id}")).json()["meta"]
    return meta


async def https_status(hosts: Hosts, host: str, root: Path) -> int:
    """curl over HTTPS trusting only ``root``; 0 when TLS (or anything else) failed."""
    process = await asyncio.create_subprocess_exec(
        "curl", "--silent", "--max-time", "10", "--output", "/dev/null", "--write-out",
        "%{http_code}", "--resolve", f"{host}:443:{hosts.address}", "--cacert", str(root),
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
    target = {"target_type": "peer", "target_id": hosts.peer_id, "port": BACKEND_PORT}
    pebble.pause()  # the order waits: the service shows what it waits for
    try:
        async with hosts.client() as client:
            created = await client.post(
                "/api/services", json={"name": "app", "domain": app, "targets": [target]}
            )
        assert created.status_code == 201, created.text
        service_id = created.json()["id"]

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
