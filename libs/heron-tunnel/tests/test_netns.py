"""Real namespaces and veth pairs (root only, as in CI); every one is deleted again."""

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from ipaddress import IPv4Interface

import pytest

from heron_tunnel.netns import (
    MAX_NAME_CHARS,
    MAX_PREFIX_CHARS,
    Namespace,
    NamespaceError,
    cleanup_stale,
    unique_name,
    veth,
)

PREFIX = "hrnt"

#: accepts one TCP connection on argv[1] and answers what it reads, upper-cased
ECHO_SERVER = """
import socket, sys
with socket.create_server((sys.argv[1], 0)) as server:
    print(server.getsockname()[1], flush=True)
    connection, _ = server.accept()
    with connection:
        connection.sendall(connection.recv(1024).upper())
"""
ECHO_CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as connection:
    connection.sendall(b"hello")
    print(connection.recv(1024).decode())
"""


async def output(*argv: str) -> str:
    process = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE)
    stdout, _ = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 0, argv
    return stdout.decode()


async def namespaces() -> list[str]:
    return [line.split()[0] for line in (await output("ip", "netns", "list")).splitlines() if line]


@pytest.fixture
async def namespace() -> AsyncIterator[Namespace]:
    async with Namespace.unique(PREFIX) as created:
        yield created


def test_unique_names_fit_interface_names_and_do_not_repeat() -> None:
    names = {unique_name("x" * MAX_PREFIX_CHARS) for _ in range(2000)}

    assert len(names) == 2000
    assert all(len(name) == MAX_NAME_CHARS for name in names)
    assert all(name.startswith("x" * MAX_PREFIX_CHARS) for name in names)


@pytest.mark.parametrize("prefix", ["", "x" * (MAX_PREFIX_CHARS + 1), "a/b", "a b"])
def test_unique_name_refuses_a_prefix_that_cannot_fit(prefix: str) -> None:
    with pytest.raises(ValueError, match="name prefix"):
        unique_name(prefix)


async def test_a_namespace_exists_inside_the_context_with_lo_up() -> None:
    async with Namespace.unique(PREFIX) as namespace:
        assert namespace.name in await namespaces()
        links = json.loads((await namespace.run("ip", "-j", "link", "show", "lo")).stdout)
        assert "UP" in links[0]["flags"]

    assert namespace.name not in await namespaces()


async def test_run_returns_output_and_reports_failures_with_stderr(namespace: Namespace) -> None:
    done = await namespace.run("sh", "-c", "echo out; echo err >&2")
    assert (done.stdout, done.stderr) == (b"out\n", b"err\n")

    failed = await namespace.run("sh", "-c", "exit 3", check=False)
    assert failed.returncode == 3

    with pytest.raises(NamespaceError, match=rf"{namespace.name}.*exited with 4: no good"):
        await namespace.run("sh", "-c", "echo no good >&2; exit 4")


async def test_run_kills_a_command_past_its_deadline(namespace: Namespace) -> None:
    started = asyncio.get_running_loop().time()

    with pytest.raises(NamespaceError, match=r"did not finish within 0.2s"):
        await namespace.run("sleep", "30", timeout_s=0.2)

    assert asyncio.get_running_loop().time() - started < 5
    assert await namespace.pids() == []


async def test_an_error_inside_still_deletes_the_namespace_and_stops_its_processes() -> None:
    namespace = Namespace.unique(PREFIX)
    started: list[asyncio.subprocess.Process] = []

    async def fail_inside() -> None:
        async with namespace:
            # `spawn` returns once `ip netns exec` runs, before it has entered the namespace:
            # each one says when it is inside, or `delete` could miss it
            sleeper = await namespace.spawn(
                "sh", "-c", "echo inside; exec sleep 30", stdout=subprocess.PIPE
            )
            started.append(sleeper)
            # one that ignores SIGTERM needs the SIGKILL
            stubborn = await namespace.spawn(
                "sh", "-c", "trap '' TERM; echo trapped; sleep 30 & wait", stdout=subprocess.PIPE
            )
            started.append(stubborn)
            assert sleeper.stdout is not None and stubborn.stdout is not None
            assert await asyncio.wait_for(sleeper.stdout.readline(), 5) == b"inside\n"
            # SIGTERM before the trap is set would end it as -15: wait until it is
            assert await asyncio.wait_for(stubborn.stdout.readline(), 5) == b"trapped\n"
            assert len(await namespace.pids()) >= 2
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await fail_inside()
    sleeper, stubborn = started

    assert namespace.name not in await namespaces()
    assert await asyncio.wait_for(sleeper.wait(), 5) == -15
    assert await asyncio.wait_for(stubborn.wait(), 5) == -9


async def test_delete_is_idempotent() -> None:
    namespace = Namespace.unique(PREFIX)
    async with namespace:
        await namespace.delete()
    await namespace.delete()

    assert namespace.name not in await namespaces()


async def test_creating_a_namespace_that_exists_is_refused(namespace: Namespace) -> None:
    with pytest.raises(NamespaceError, match="File exists"):
        await Namespace(namespace.name).create()

    assert namespace.name in await namespaces()


async def test_veth_carries_tcp_between_two_namespaces() -> None:
    async with Namespace.unique(PREFIX) as a, Namespace.unique(PREFIX) as b:
        a_end, b_end = await veth(
            a, b, IPv4Interface("10.78.0.1/30"), IPv4Interface("10.78.0.2/30")
        )
        server = await b.spawn(
            sys.executable, "-c", ECHO_SERVER, "10.78.0.2", stdout=subprocess.PIPE
        )
        try:
            assert server.stdout is not None
            port = int(await asyncio.wait_for(server.stdout.readline(), 5))

            done = await a.run(sys.executable, "-c", ECHO_CLIENT, "10.78.0.2", str(port))

            assert done.stdout == b"HELLO\n"
            assert await asyncio.wait_for(server.wait(), 5) == 0
        finally:
            if server.returncode is None:
                server.kill()
                await server.wait()
        assert len(a_end) <= MAX_NAME_CHARS and len(b_end) <= MAX_NAME_CHARS
        # the ends live only in the two namespaces
        host_links = await output("ip", "-o", "link")
        assert a_end not in host_links and b_end not in host_links


async def test_veth_refuses_addresses_of_two_networks(namespace: Namespace) -> None:
    with pytest.raises(ValueError, match="two hosts of one network"):
        await veth(namespace, namespace, IPv4Interface("10.1.0.1/24"), IPv4Interface("10.2.0.1/24"))


async def test_cleanup_stale_deletes_what_dead_processes_left_and_keeps_the_rest() -> None:
    # a prefix of this run's own, so that concurrent runs' clean-ups cannot interfere
    prefix = "c" + secrets.token_hex(3)
    # a real crashed run: another process makes a namespace and exits without deleting it
    left = (
        await output(
            sys.executable, "-c",
            "import subprocess; from heron_tunnel.netns import unique_name; "
            f"name = unique_name({prefix!r}); "
            "subprocess.run(['ip', 'netns', 'add', name], check=True); print(name)",
        )
    ).strip()  # fmt: skip
    ours = Namespace.unique(prefix)
    other_shape = Namespace(unique_name(prefix[:-1]))  # starts like ours, one character shorter
    try:
        assert left in await namespaces()
        await ours.create()
        await other_shape.create()

        deleted = await cleanup_stale(prefix)

        assert deleted == [left]
        assert left not in await namespaces()
        assert ours.name in await namespaces()  # we are alive
        assert other_shape.name in await namespaces()
    finally:
        for namespace in (Namespace(left), ours, other_shape):
            await namespace.delete()
