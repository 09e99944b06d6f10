"""What the end-to-end tests share: hosts as network namespaces, processes in them, waiting.

Every test drives Heron only through its public interfaces; these helpers only set the scene.
"""

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

import httpx

from heron_tunnel.netns import Namespace, unique_name

PYTHON = sys.executable


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
