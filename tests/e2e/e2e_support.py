"""What the end-to-end tests share: hosts as network namespaces, processes in them, waiting.

Every test drives Heron only through its public interfaces; these helpers only set the scene.
"""

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

import httpx

from heron_tunnel.netns import Namespace, cleanup_stale, unique_name, veth

PYTHON = sys.executable

# one lock file per 10.x prefix a stack of this process took; held (open) until the process
# ends, so that neither this run's other workers nor a concurrent run take the same prefix
_SUBNET_LOCKS = Path(tempfile.gettempdir()) / "heron-test-subnets"
_held_subnets: dict[str, int] = {}


def free_subnet(first: int, count: int) -> str:
    """A ``10.<n>`` prefix, ``n`` in ``[first, first + count)``, that no interface of the test's
    namespace uses and no other stack took in this process, another pytest-xdist worker or a
    concurrent run: they would catch the test's packets, and so would the veths of a namespace
    still being torn down (so a prefix is never given out twice in one process). The process
    id picks where to start looking."""
    _SUBNET_LOCKS.mkdir(mode=0o700, exist_ok=True)
    start = os.getpid() % count
    for step in range(count):
        candidate = f"10.{first + (start + step) % count}"
        if candidate in _held_subnets:
            continue
        lock = os.open(_SUBNET_LOCKS / candidate, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process holds it
            os.close(lock)
            continue
        shown = subprocess.run(
            ["ip", "-o", "-4", "address", "show", "to", f"{candidate}.0.0/16"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        if shown.strip():  # in use by something that takes no lock
            os.close(lock)
            continue
        _held_subnets[candidate] = lock
        return candidate
    raise AssertionError(f"no free 10.x prefix in 10.{first}-{first + count - 1}")


async def root_link(ns: Namespace, root_addr: IPv4Interface, ns_addr: IPv4Interface) -> None:
    """A veth between the test's own namespace and ``ns`` (it vanishes with ``ns``)."""
    root_end, ns_end = unique_name("vr"), unique_name("vn")
    for argv in (
        ["ip", "link", "add", root_end, "type", "veth", "peer", "name", ns_end, "netns", ns.name],
        ["ip", "address", "add", str(root_addr), "dev", root_end],
        ["ip", "link", "set", root_end, "up"],
        ["ip", "-n", ns.name, "address", "add", str(ns_addr), "dev", ns_end],
        ["ip", "-n", ns.name, "link", "set", ns_end, "up"],
    ):
        process = await asyncio.create_subprocess_exec(*argv, stderr=asyncio.subprocess.PIPE)
        _, err = await process.communicate()
        assert process.returncode == 0, f"{argv}: {err.decode()}"


async def start(
    stack_logs: Path, ns: Namespace, name: str, *argv: str, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    command = ns.command("env", *(f"{k}={v}" for k, v in (env or {}).items()), *argv)
    with (stack_logs / f"{name}.log").open("ab") as log:  # the child keeps its own descriptor
        return await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True,
        )  # fmt: skip


async def run_json(ns: Namespace, script: str, *args: str) -> dict[str, Any]:
    done = await ns.run(PYTHON, "-c", script, *args, timeout_s=30)
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


class Miss:
    """A check's "not yet" that says what it saw: false, unlike the status or text it carries."""

    def __init__(self, seen: object) -> None:
        self.seen = seen

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"not yet: {self.seen!r}"


async def wait_for(
    what: str, check: Callable[[], Awaitable[Any]], within_s: float, tail: Callable[[], str]
) -> Any:
    """``check()`` until it returns something true; its last answer and ``tail()`` on failure."""
    deadline = time.monotonic() + within_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what} not within {within_s} s (last: {last})\n{tail()}")


def log_tail(logs: Path, lines: int = 25) -> str:
    parts = []
    for path in sorted(logs.glob("*.log")):
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {path.name}\n" + "\n".join(tail))
    return "\n".join(parts)


def api_client(base_url: str, token: str) -> httpx.AsyncClient:
    """A REST client as an owner: ``Authorization: Token``, no proxy from the environment."""
    return httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Token {token}"}, timeout=15, trust_env=False
    )


READY_S = 60.0


@dataclass
class Hosts:
    """The stack on an *edge* host and an agent on a *peer* host, reached from the test's own
    namespace (the *client* host) over a veth; the peer reaches only the edge."""

    edge: Namespace
    peer: Namespace
    address: str  # the edge host, as the client reaches it
    subnet: str  # 10.x: the client host is <subnet>.0.1, the edge <subnet>.0.2 and <subnet>.1.1
    api: str
    token: str
    data: Path
    logs: Path
    peer_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def client(self) -> httpx.AsyncClient:
        return api_client(self.api, self.token)

    def tail(self) -> str:
        return log_tail(self.logs, 40)

    async def eventually(self, what: str, check: Any, within_s: float = READY_S) -> Any:
        return await wait_for(what, check, within_s, self.tail)


@contextlib.asynccontextmanager
async def stack_with_agent(
    tmp_path: Path,
    *,
    prefix: str,
    subnet: str,
    token: str,
    stack_env: dict[str, str],
    peer_processes: Sequence[tuple[str, Sequence[str]]] = (),
    client_side: Sequence[contextlib.AbstractAsyncContextManager[object]] = (),
) -> AsyncIterator[Hosts]:
    """Namespaces ``<prefix>…`` linked client—edge (``<subnet>.0.0/24``) and edge—peer
    (``<subnet>.1.0/24``), the stack in the edge host with ``stack_env`` added, the
    ``peer_processes`` (name, argv) and a logged-in ``heron up`` in the peer host.
    ``client_side`` are entered once the client host has its address (``<subnet>.0.1``), before
    the stack starts: servers the stack reaches on the client's side (an ACME CA). Everything is
    stopped and removed on exit."""
    await cleanup_stale(prefix)
    logs = tmp_path / "logs"
    logs.mkdir()
    processes: list[asyncio.subprocess.Process] = []
    async with contextlib.AsyncExitStack() as exits:
        edge_ns = await exits.enter_async_context(Namespace.unique(prefix))
        peer_ns = await exits.enter_async_context(Namespace.unique(prefix))
        await root_link(
            edge_ns, IPv4Interface(f"{subnet}.0.1/24"), IPv4Interface(f"{subnet}.0.2/24")
        )
        await veth(
            edge_ns, peer_ns, IPv4Interface(f"{subnet}.1.1/24"), IPv4Interface(f"{subnet}.1.2/24")
        )
        hosts = Hosts(
            edge=edge_ns, peer=peer_ns, address=f"{subnet}.0.2", subnet=subnet,
            api=f"http://{subnet}.0.2:8080",
            token=token, data=tmp_path / "stack", logs=logs,
        )  # fmt: skip
        for server in client_side:
            await exits.enter_async_context(server)

        async def stop_all() -> None:
            for process in processes:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGTERM)
            for process in processes:
                try:
                    await asyncio.wait_for(process.wait(), 20)
                except TimeoutError:
                    os.killpg(process.pid, signal.SIGKILL)
                    await process.wait()

        exits.push_async_callback(stop_all)
        processes.append(
            await start(
                logs, edge_ns, "stack", PYTHON, "-m", "heron_stack",
                env={"HERON_DATA_DIR": str(hosts.data), "HERON_ADMIN_TOKEN": token,
                     "HERON_LOG_FORMAT": "json", "HERON_MANAGEMENT_HOST": hosts.address,
                     "HERON_MANAGEMENT_GRPC_HOST": "0.0.0.0",
                     "HERON_PROXY_WIREGUARD_ENDPOINT": f"{subnet}.1.1:51820",
                     "HERON_PROXY_WIREGUARD_INTERFACE": unique_name("wge"), **stack_env},
            )
        )  # fmt: skip
        for name, argv in peer_processes:
            processes.append(await start(logs, peer_ns, name, *argv))

        async def api_up() -> bool:
            try:
                async with hosts.client() as client:
                    return (await client.get("/api/services")).status_code == 200
            except httpx.TransportError:
                return False

        await hosts.eventually("management's API", api_up)
        async with hosts.client() as client:
            key = await client.post("/api/setup-keys", json={"name": "peers"})
            assert key.status_code == 201, key.text
        processes.append(
            await start(
                logs, peer_ns, "agent", PYTHON, "-m", "heron_agent", "up",
                "--state-dir", str(tmp_path / "agent"), "--interface", unique_name("wga"),
                "--management", f"http://{subnet}.1.1:50051", "--setup-key", key.json()["key"],
                env={"HERON_MODE": "development", "HERON_LOG_FORMAT": "json"},
            )
        )  # fmt: skip

        async def connected_peer() -> str | None:
            async with hosts.client() as client:
                peers = (await client.get("/api/peers")).json()
            return peers[0]["id"] if peers and peers[0].get("connected") else None

        hosts.peer_id = await hosts.eventually("the agent's login", connected_peer)
        yield hosts
