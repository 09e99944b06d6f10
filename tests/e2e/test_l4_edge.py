"""L4 services end to end: TCP, UDP and TLS through the stack's edge and a peer's agent.

    test (client host: root ns) --veth-- edge host --veth-- peer host
                                         heron-stack         heron up; on its 127.0.0.1: a TCP
                                         (management, NATS,  echo, a UDP echo, a TLS server with
                                          heron-edge)        its own certificate, a PROXY v2
                                                             reader, an HTTP backend

Services are made with the REST API; the client speaks TCP, UDP and TLS to the edge's public
ports. A TLS client that verifies the *backend's* certificate (a CA the edge never saw) proves
the edge terminated nothing.
"""

import asyncio
import contextlib
import os
import secrets
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
import trustme
from e2e_support import PYTHON, Hosts, free_subnet, stack_with_agent

TOKEN = "hrn_" + secrets.token_urlsafe(30)
DOMAIN = "heron.test"
ECHO, UDP_ECHO, TLS_BACKEND, PROXIED, HTTP_BACKEND = 7001, 7002, 7003, 7004, 7080
HERE = Path(__file__).parent
WAIT_S = 10.0


@pytest_asyncio.fixture
async def hosts(tmp_path: Path) -> AsyncIterator[tuple[Hosts, trustme.CA]]:
    ca = trustme.CA()
    issued = ca.issue_cert(f"db.{DOMAIN}", f"secure.{DOMAIN}")
    cert, key = tmp_path / "backend.crt", tmp_path / "backend.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    backends = [
        PYTHON, str(HERE / "l4_backends.py"), "--echo", str(ECHO), "--udp-echo", str(UDP_ECHO),
        "--tls", str(TLS_BACKEND), str(cert), str(key), "--proxied", str(PROXIED),
    ]  # fmt: skip
    http = [
        PYTHON,
        str(HERE.parent / "integration" / "http_backend.py"),
        "--port",
        str(HTTP_BACKEND),
    ]
    async with stack_with_agent(
        tmp_path, prefix="hl", subnet=free_subnet(200, 30), token=TOKEN,
        stack_env={"HERON_PROXY_DOMAIN": DOMAIN},
        peer_processes=[("backends", backends), ("http", http)],
    ) as found:  # fmt: skip
        yield found, ca


def peer_target(hosts: Hosts, port: int, **options: Any) -> dict[str, Any]:
    return {"target_type": "peer", "target_id": hosts.peer_id, "port": port, "options": options}


async def create(hosts: Hosts, **service: Any) -> dict[str, Any]:
    async with hosts.client() as client:
        created = await client.post("/api/services", json=service)
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


async def tcp_exchange(hosts: Hosts, port: int, data: bytes, expect: int) -> bytes | None:
    """``data`` sent, ``expect`` bytes back; None while the service is not there yet."""
    try:
        reader, writer = await asyncio.open_connection(hosts.address, port)
    except OSError:
        return None
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.readexactly(expect), WAIT_S)
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        return None
    finally:
        writer.close()


class _UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)


async def test_tcp_udp_and_tls_services_through_the_edge(
    hosts: tuple[Hosts, trustme.CA],
) -> None:
    state, backend_ca = hosts
    # a TCP echo, a UDP echo, and on one custom port a TLS service and a TCP service
    await create(state, name="echo", domain=f"echo.{DOMAIN}", mode="tcp", listen_port=20001,
                 targets=[peer_target(state, ECHO)])  # fmt: skip
    await create(state, name="dns-ish", domain=f"udp.{DOMAIN}", mode="udp", listen_port=20002,
                 targets=[peer_target(state, UDP_ECHO)])  # fmt: skip
    await create(state, name="db", domain=f"db.{DOMAIN}", mode="tls", listen_port=20003,
                 targets=[peer_target(state, TLS_BACKEND)])  # fmt: skip
    await create(state, name="shared", domain=f"shared.{DOMAIN}", mode="tcp", listen_port=20003,
                 targets=[peer_target(state, ECHO)])  # fmt: skip
    # on the main port: a TLS service next to an HTTP service
    await create(state, name="secure", domain=f"secure.{DOMAIN}", mode="tls",
                 targets=[peer_target(state, TLS_BACKEND)])  # fmt: skip
    await create(state, name="web", domain=f"web.{DOMAIN}",
                 targets=[{**peer_target(state, HTTP_BACKEND), "path": "/"}])  # fmt: skip
    # PROXY v2 to a backend that reads it
    await create(state, name="pp", domain=f"pp.{DOMAIN}", mode="tcp", listen_port=20004,
                 targets=[peer_target(state, PROXIED, proxy_protocol=True)])  # fmt: skip

    # TCP echo
    payload = os.urandom(256 * 1024)

    async def echoed() -> bool:
        return await tcp_exchange(state, 20001, payload, len(payload)) == payload

    await state.eventually("the TCP echo through the edge", echoed, within_s=15)

    # UDP echo, many datagrams in one session
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        _UdpClient, remote_addr=(state.address, 20002)
    )
    try:

        async def udp_echoed() -> bool:
            transport.sendto(b"ping")
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(client.received.get(), 1.0) == b"echo:ping"
            return False

        await state.eventually("the UDP echo through the edge", udp_echoed, within_s=15)
        for index in range(20):
            transport.sendto(f"datagram {index}".encode())
            reply = await asyncio.wait_for(client.received.get(), WAIT_S)
            assert reply == f"echo:datagram {index}".encode()
    finally:
        transport.close()

    # TLS on the custom port: the client verifies the backend's own certificate
    context = ssl.create_default_context()
    backend_ca.configure_trust(context)

    async def tls_greeting(port: int, name: str) -> bytes | None:
        try:
            reader, writer = await asyncio.open_connection(
                state.address, port, ssl=context, server_hostname=name
            )
        except (OSError, ssl.SSLError):
            return None
        try:
            line = await asyncio.wait_for(reader.readline(), WAIT_S)
            writer.write(b"over tls")
            return line + await asyncio.wait_for(reader.readexactly(8), WAIT_S)
        finally:
            writer.close()

    async def tls_custom() -> bool:
        return await tls_greeting(20003, f"db.{DOMAIN}") == b"tls backend\nover tls"

    await state.eventually("TLS passthrough on a custom port", tls_custom, within_s=15)
    # ... and the TCP service on that port takes what is not its TLS service's
    assert await tcp_exchange(state, 20003, b"plain tcp", 9) == b"plain tcp"

    # the main port: TLS passed through by SNI, HTTP terminated by the edge
    async def tls_main() -> bool:
        return await tls_greeting(443, f"secure.{DOMAIN}") == b"tls backend\nover tls"

    await state.eventually("TLS passthrough on the main port", tls_main, within_s=15)

    async def http_main() -> bool:
        process = await asyncio.create_subprocess_exec(
            "curl", "--silent", "--max-time", "10", "--output", "/dev/null",
            "--write-out", "%{http_code}", "--resolve", f"web.{DOMAIN}:443:{state.address}",
            "--cacert", str(state.data / "edge" / "local-ca" / "root.crt"),
            f"https://web.{DOMAIN}/",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        out, _ = await process.communicate()
        return out == b"200"

    await state.eventually("the HTTP service on the main port", http_main, within_s=15)

    # PROXY v2: the backend sees the client's own address and port
    reader, writer = await asyncio.open_connection(state.address, 20004)
    try:
        client_address, client_port = writer.get_extra_info("sockname")[:2]
        line = await asyncio.wait_for(reader.readline(), WAIT_S)
        assert line == f"source={client_address}:{client_port}\n".encode()
        assert client_address == f"{state.subnet}.0.1"
    finally:
        writer.close()

    # every service is reported active
    async def all_active() -> bool:
        async with state.client() as api:
            services = (await api.get("/api/services")).json()
        return all(s["meta"]["status"] == "active" for s in services)

    await state.eventually("every service active", all_active, within_s=30)
