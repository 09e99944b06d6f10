"""The tunnel end to end: management, an edge and an agent on three hosts, driven as a user would.

Hosts are network namespaces this test creates and deletes:

    test (root ns) --veth-- edge host --veth-- peer host --veth-- resource host
                            management, NATS,   agent,            backend on 10.x
                            heron-edge          backend on 127.0.0.1

The test uses only public interfaces: the REST API (setup key, proxy token, network, services),
the ``heron`` CLI on the peer, ``heron-edge`` on the edge host, and ``open_stream`` run on the
edge host as the L4/L7 proxies will run it. The peer opens no port: WireGuard goes out from it.
"""

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import textwrap
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from e2e_support import PYTHON, api_client, log_tail, root_link, run_json, start, wait_for

from heron_bus.embedded import nats_server_args
from heron_tunnel.netns import Namespace, cleanup_stale, unique_name, veth

SUBNET = f"10.{100 + os.getpid() % 50}"  # 10.100-149.x: private, one per concurrent run
TOKEN = "hrn_" + secrets.token_urlsafe(30)
TUNNEL_BACK_S = 10.0  # the promise after an agent restart
READY_S = 30.0
BACKEND_DOMAIN = "backend.heron.test"


@dataclass
class Stack:
    edge: Namespace
    peer: Namespace
    resource: Namespace
    api: str  # REST base URL, reachable from the test
    grpc_for_peer: str
    peer_state: Path
    peer_interface: str
    logs: Path
    processes: dict[str, asyncio.subprocess.Process]
    setup_key: str = ""

    def client(self) -> httpx.AsyncClient:
        return api_client(self.api, TOKEN)

    def log_tail(self) -> str:
        return log_tail(self.logs)


BACKEND = textwrap.dedent(
    """
    import asyncio, sys
    async def serve(reader, writer):
        writer.write(sys.argv[3].encode() + b"\\n")
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
    async def main():
        server = await asyncio.start_server(serve, sys.argv[1], int(sys.argv[2]))
        print("ready", flush=True)
        await server.serve_forever()
    asyncio.run(main())
    """
)

OPEN_STREAM = textwrap.dedent(
    """
    import asyncio, json, sys
    from heron_edge.connector import StreamTarget, TunnelError, open_stream
    async def main():
        overlay, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
        loop = asyncio.get_running_loop()
        try:
            sock = await open_stream(StreamTarget(overlay, host, port), ("203.0.113.5", 40000))
        except TunnelError as exc:
            print(json.dumps({"ok": False, "status": exc.status.name, "message": exc.message}))
            return
        with sock:
            await loop.sock_sendall(sock, b"ping")
            data = b""
            async with asyncio.timeout(10):
                while not data.endswith(b"ping"):
                    chunk = await loop.sock_recv(sock, 1024)
                    if not chunk:
                        break
                    data += chunk
        print(json.dumps({"ok": True, "reply": data.decode()}))
    asyncio.run(main())
    """
)

DIRECT = textwrap.dedent(
    """
    import json, socket, sys
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
        print(json.dumps({"reached": True}))
    except OSError as exc:
        print(json.dumps({"reached": False, "error": str(exc)}))
    """
)


async def eventually(what: str, stack: Stack, check: Any, within_s: float) -> Any:
    return await wait_for(what, check, within_s, stack.log_tail)


@pytest_asyncio.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    await cleanup_stale("he")
    logs = tmp_path / "logs"
    logs.mkdir()
    processes: dict[str, asyncio.subprocess.Process] = {}
    async with contextlib.AsyncExitStack() as exits:
        edge = await exits.enter_async_context(Namespace.unique("he"))
        peer = await exits.enter_async_context(Namespace.unique("he"))
        resource = await exits.enter_async_context(Namespace.unique("he"))
        await root_link(edge, IPv4Interface(f"{SUBNET}.0.1/24"), IPv4Interface(f"{SUBNET}.0.2/24"))
        await veth(edge, peer, IPv4Interface(f"{SUBNET}.1.1/24"), IPv4Interface(f"{SUBNET}.1.2/24"))
        _, resource_end = await veth(
            peer, resource, IPv4Interface(f"{SUBNET}.2.1/24"), IPv4Interface(f"{SUBNET}.2.2/24")
        )
        # a second address: the subnet target, told apart from the host resource (.2.2)
        await resource.run("ip", "address", "add", f"{SUBNET}.2.3/24", "dev", resource_end)
        # the peer resolves the domain resource; `ip netns exec` mounts this over /etc/hosts
        hosts_dir = Path("/etc/netns") / peer.name
        hosts_dir.mkdir(parents=True, exist_ok=True)
        exits.callback(shutil.rmtree, hosts_dir, ignore_errors=True)
        (hosts_dir / "hosts").write_text(f"127.0.0.1 localhost\n{SUBNET}.2.2 {BACKEND_DOMAIN}\n")

        stack = Stack(
            edge=edge, peer=peer, resource=resource, api=f"http://{SUBNET}.0.2:8080",
            grpc_for_peer=f"http://{SUBNET}.1.1:50051", peer_state=tmp_path / "agent",
            peer_interface=unique_name("wga"), logs=logs, processes=processes,
        )  # fmt: skip

        async def stop_all() -> None:
            for process in processes.values():
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGTERM)
            for process in processes.values():
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    os.killpg(process.pid, signal.SIGKILL)
                    await process.wait()

        exits.push_async_callback(stop_all)
        common = {"HERON_MODE": "development", "HERON_LOG_FORMAT": "json"}
        processes["nats"] = await start(
            logs, edge, "nats", *nats_server_args(store_dir=tmp_path / "nats")
        )
        processes["management"] = await start(
            logs, edge, "management", PYTHON, "-m", "heron_management",
            env={**common, "HERON_DATA_DIR": str(tmp_path / "management"),
                 "HERON_ADMIN_TOKEN": TOKEN, "HERON_MANAGEMENT_HOST": f"{SUBNET}.0.2",
                 "HERON_MANAGEMENT_GRPC_HOST": "0.0.0.0"},
        )  # fmt: skip

        async def api_up() -> bool:
            try:
                async with stack.client() as client:
                    return (await client.get("/api/services")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually("management's API", stack, api_up, READY_S)
        async with stack.client() as client:
            proxy = await client.post("/api/proxy-tokens", json={"name": "edge"})
            assert proxy.status_code == 201, proxy.text
            key = await client.post("/api/setup-keys", json={"name": "peers"})
            assert key.status_code == 201, key.text
            stack.setup_key = key.json()["key"]
        processes["edge"] = await start(
            logs, edge, "edge", PYTHON, "-m", "heron_edge",
            env={**common, "HERON_DATA_DIR": str(tmp_path / "edge"),
                 "HERON_PROXY_DOMAIN": "proxy.heron.test",
                 "HERON_PROXY_TOKEN": proxy.json()["plain_token"],
                 "HERON_PROXY_MANAGEMENT_URL": "http://127.0.0.1:50051",
                 "HERON_PROXY_WIREGUARD_ENDPOINT": f"{SUBNET}.1.1:51820",
                 "HERON_PROXY_WIREGUARD_INTERFACE": unique_name("wge")},
        )  # fmt: skip
        for name, ns, host in (("local", peer, "127.0.0.1"), ("remote", resource, "0.0.0.0")):
            processes[f"backend-{name}"] = await start(
                logs, ns, f"backend-{name}", PYTHON, "-c", BACKEND, host, "7000", name
            )
        await start_agent(stack, with_setup_key=True)
        yield stack


async def start_agent(stack: Stack, *, with_setup_key: bool) -> None:
    argv = [PYTHON, "-m", "heron_agent", "up", "--state-dir", str(stack.peer_state),
            "--interface", stack.peer_interface, "--management", stack.grpc_for_peer]  # fmt: skip
    if with_setup_key:
        argv += ["--setup-key", stack.setup_key]
    stack.processes["agent"] = await start(
        stack.logs, stack.peer, "agent", *argv,
        env={"HERON_MODE": "development", "HERON_LOG_FORMAT": "json"},
    )  # fmt: skip


async def the_peer(stack: Stack) -> dict[str, Any]:
    async with stack.client() as client:
        peers = (await client.get("/api/peers")).json()
    assert len(peers) == 1, peers
    peer: dict[str, Any] = peers[0]
    return peer


async def test_edges_reach_targets_only_through_the_agent_and_only_allowed_ones(
    stack: Stack,
) -> None:
    peer = await eventually(
        "the agent's login", stack,
        lambda: _connected_peer(stack), READY_S,
    )  # fmt: skip
    overlay = peer["overlay_address"]
    assert overlay.startswith("100.")
    async with stack.client() as client:
        network = (await client.post("/api/networks", json={"name": "lab"})).json()
        base = f"/api/networks/{network['id']}"
        resources = {}
        for kind, address in (
            ("host", f"{SUBNET}.2.2"), ("domain", BACKEND_DOMAIN), ("subnet", f"{SUBNET}.2.0/24"),
        ):  # fmt: skip
            made = await client.post(
                f"{base}/resources", json={"name": kind, "type": kind, "address": address}
            )
            assert made.status_code == 201, made.text
            resources[kind] = made.json()["id"]
        router = await client.post(f"{base}/routers", json={"peer_id": peer["id"]})
        assert router.status_code == 201, router.text
        targets = [
            {"target_type": "peer", "target_id": peer["id"], "port": 7000},
            {"target_type": "host", "target_id": resources["host"], "port": 7000},
            {"target_type": "domain", "target_id": resources["domain"], "port": 7000},
            {"target_type": "subnet", "target_id": resources["subnet"], "port": 7000,
             "host": f"{SUBNET}.2.3"},
        ]  # fmt: skip
        service = await client.post(
            "/api/services",
            json={"name": "db", "domain": "db.proxy.heron.test", "mode": "tcp",
                  "targets": targets},
        )  # fmt: skip
        assert service.status_code == 201, service.text

    async def through(host: str) -> dict[str, Any]:
        return await run_json(stack.edge, OPEN_STREAM, overlay, host, "7000")

    async def local_ok() -> dict[str, Any] | None:
        result = await through("")
        return result if result.get("ok") else None

    local = await eventually("a stream to the peer's own port", stack, local_ok, READY_S)
    assert local["reply"] == "local\nping"
    for host in (f"{SUBNET}.2.2", BACKEND_DOMAIN, f"{SUBNET}.2.3"):  # host, domain, subnet
        routed = await eventually(
            f"a stream to {host} through the routing peer", stack,
            lambda host=host: _ok(through(host)), READY_S,
        )  # fmt: skip
        assert routed["reply"] == "remote\nping"

    for host, port in (("127.0.0.1", "7001"), (f"{SUBNET}.2.4", "7000")):  # not on the list
        refused = await run_json(stack.edge, OPEN_STREAM, overlay, host, port)
        assert refused["status"] == "TARGET_NOT_ALLOWED", refused
    # and not reachable from the edge host without the tunnel
    direct = await run_json(stack.edge, DIRECT, f"{SUBNET}.2.2", "7000")
    assert direct["reached"] is False, direct
    direct_peer = await run_json(stack.edge, DIRECT, f"{SUBNET}.1.2", "7000")
    assert direct_peer["reached"] is False, direct_peer

    # a killed agent comes back by itself (restarted by its supervisor: here, the test)
    agent = stack.processes["agent"]
    os.killpg(agent.pid, signal.SIGKILL)
    await agent.wait()
    started = time.monotonic()
    await start_agent(stack, with_setup_key=False)
    back = await eventually("the tunnel after an agent restart", stack, local_ok, TUNNEL_BACK_S)
    assert back["reply"] == "local\nping"
    assert time.monotonic() - started <= TUNNEL_BACK_S
    assert (await the_peer(stack))["overlay_address"] == overlay


async def _connected_peer(stack: Stack) -> dict[str, Any] | None:
    async with stack.client() as client:
        peers = (await client.get("/api/peers")).json()
    return peers[0] if peers and peers[0].get("connected") else None


async def _ok(result: Any) -> dict[str, Any] | None:
    value: dict[str, Any] = await result
    return value if value.get("ok") else None


pytestmark = pytest.mark.timeout(240)
