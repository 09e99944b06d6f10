"""Real wireguard-go in real namespaces: two hosts joined by a veth, a tunnel between them.

Underlay 10.77.0.0/24 on the veth, overlay 100.64.0.0/10 on WireGuard. Namespaces and interface
names come from ``unique_name``, so concurrent runs on one host do not collide; the fixtures
take everything down even when a test fails (and deleting a namespace stops what is left).
"""

import asyncio
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from ipaddress import IPv4Interface, IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from heron_tunnel._socket_buffers import WIREGUARD_GO_SOCKET_BUFFER
from heron_tunnel.keys import generate_private_key
from heron_tunnel.netns import Namespace, unique_name, veth
from heron_tunnel.wireguard import (
    SOCKET_DIR,
    Backend,
    PeerStats,
    WireGuardError,
    WireGuardExitedError,
    WireGuardInterface,
    WireGuardPeer,
    parse_dump,
)

PORT = 51820
#: how long a handshake over a local veth may take (it takes milliseconds)
HANDSHAKE_TIMEOUT_S = 5.0
#: sends argv[3] bytes to argv[1]:argv[2], waiting at most argv[4] s at a time; were they echoed?
TCP_CLIENT = """
import os, socket, sys
payload = os.urandom(int(sys.argv[3]))
try:
    address, timeout = (sys.argv[1], int(sys.argv[2])), float(sys.argv[4])
    with socket.create_connection(address, timeout=timeout) as connection:
        connection.sendall(payload)
        connection.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    print("intact" if received == payload else f"mangled {len(received)}")
except OSError as exc:
    print(f"unreachable {exc!r}")
"""
#: accepts connections on argv[1] and echoes each one's bytes back
TCP_ECHO_SERVER = """
import socket, sys
with socket.create_server((sys.argv[1], 0)) as server:
    print(server.getsockname()[1], flush=True)
    while True:
        connection, _ = server.accept()
        with connection:
            while chunk := connection.recv(65536):
                connection.sendall(chunk)
"""


@dataclasses.dataclass
class Host:
    netns: Namespace
    wg: WireGuardInterface
    underlay: IPv4Interface

    @property
    def overlay(self) -> IPv4Interface:
        return self.wg.address

    def as_peer(self, *extra: IPv4Network | IPv6Network) -> WireGuardPeer:
        return WireGuardPeer(
            public_key=self.wg.public_key,
            allowed_ips=(IPv4Network(f"{self.overlay.ip}/32"), *extra),
            endpoint=f"{self.underlay.ip}:{self.wg.listen_port}",
            persistent_keepalive=1,
        )


@pytest.fixture
async def namespaces() -> AsyncIterator[tuple[Namespace, Namespace]]:
    async with Namespace.unique("hwt") as a, Namespace.unique("hwt") as b:
        await veth(a, b, IPv4Interface("10.77.0.1/24"), IPv4Interface("10.77.0.2/24"))
        yield a, b


@pytest.fixture
async def hosts(namespaces: tuple[Namespace, Namespace]) -> AsyncIterator[tuple[Host, Host]]:
    a, b = namespaces
    wg_a = interface(a, "100.64.0.1/10", listen_port=PORT)
    wg_b = interface(b, "100.64.0.2/10", listen_port=None)  # a random port
    async with wg_a, wg_b:
        yield (
            Host(a, wg_a, IPv4Interface("10.77.0.1/24")),
            Host(b, wg_b, IPv4Interface("10.77.0.2/24")),
        )


@pytest.fixture
async def tunnel(hosts: tuple[Host, Host]) -> tuple[Host, Host]:
    a, b = hosts
    await a.wg.set_peers([b.as_peer()])
    await b.wg.set_peers([a.as_peer()])
    await handshake(a.wg, b.wg.public_key)
    return a, b


@pytest.fixture
async def echo_server(tunnel: tuple[Host, Host]) -> AsyncIterator[int]:
    """A TCP echo server on b's overlay address; its port."""
    _, b = tunnel
    server = await b.netns.spawn(
        sys.executable, "-c", TCP_ECHO_SERVER, str(b.overlay.ip), stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        yield int(await asyncio.wait_for(server.stdout.readline(), 5))
    finally:
        if server.returncode is None:
            server.kill()
        await server.wait()


def interface(
    netns: Namespace, address: str, *, listen_port: int | None, name: str = "", **options: Any
) -> WireGuardInterface:
    return WireGuardInterface(
        name or unique_name("hwg"),
        generate_private_key(),
        listen_port=listen_port,
        address=IPv4Interface(address),
        netns=netns.name,
        **options,
    )


async def handshake(wg: WireGuardInterface, public_key: str) -> PeerStats:
    deadline = asyncio.get_running_loop().time() + HANDSHAKE_TIMEOUT_S
    while True:
        stats = {peer.public_key: peer for peer in await wg.stats()}
        if stats[public_key].latest_handshake is not None:
            return stats[public_key]
        assert asyncio.get_running_loop().time() < deadline, f"no handshake: {stats}"
        await asyncio.sleep(0.05)


async def send_over_tcp(
    client: Host, server: Host, port: int, *, size: int = 1 << 20, timeout_s: float = 5.0
) -> str:
    done = await client.netns.run(
        sys.executable, "-c", TCP_CLIENT, str(server.overlay.ip), str(port), str(size),
        str(timeout_s),
    )  # fmt: skip
    return done.stdout.decode().strip()


async def static_routes(host: Host) -> set[str]:
    done = await host.netns.run("ip", "-j", "route", "show", "dev", host.wg.name, "proto", "static")
    return {route["dst"] for route in json.loads(done.stdout)}


async def links(netns: Namespace) -> set[str]:
    return {link["ifname"] for link in json.loads((await netns.run("ip", "-j", "link")).stdout)}


async def test_peers_handshake_and_carry_tcp_across_the_overlay(
    tunnel: tuple[Host, Host], echo_server: int
) -> None:
    a, b = tunnel

    assert await send_over_tcp(a, b, echo_server) == "intact"

    [seen_from_a] = await a.wg.stats()
    assert seen_from_a.public_key == b.wg.public_key
    assert seen_from_a.endpoint == f"10.77.0.2:{b.wg.listen_port}"
    assert seen_from_a.allowed_ips == (IPv4Network("100.64.0.2/32"),)
    assert seen_from_a.persistent_keepalive == 1
    assert seen_from_a.rx_bytes > 1 << 20 and seen_from_a.tx_bytes > 1 << 20
    assert seen_from_a.latest_handshake is not None
    assert abs((datetime.now(UTC) - seen_from_a.latest_handshake).total_seconds()) < 60


async def test_the_interfaces_are_up_as_configured(hosts: tuple[Host, Host]) -> None:
    a, b = hosts

    assert a.wg.backend is Backend.USERSPACE  # this machine has no kernel module
    assert a.wg.listen_port == PORT
    assert b.wg.listen_port is not None and b.wg.listen_port != 0
    assert await a.wg.healthy()
    [link] = json.loads((await a.netns.run("ip", "-j", "address", "show", a.wg.name)).stdout)
    assert link["mtu"] == 1420
    assert "UP" in link["flags"]
    ipv4 = [(i["local"], i["prefixlen"]) for i in link["addr_info"] if i["family"] == "inet"]
    assert ipv4 == [("100.64.0.1", 10)]
    assert a.wg.socket_path.exists()


async def test_wireguard_go_gets_the_socket_buffers_newer_releases_set(
    hosts: tuple[Host, Host],
) -> None:
    for host in hosts:
        assert host.wg.backend is Backend.USERSPACE
        done = await host.netns.run("ss", "-H4uamn", f"sport = :{host.wg.listen_port}")
        found = re.search(r"\brb(\d+)", done.stdout.decode())
        assert found, done.stdout
        assert int(found.group(1)) >= WIREGUARD_GO_SOCKET_BUFFER  # the kernel doubles it


async def test_allowed_ips_outside_the_overlay_are_routed_and_unrouted(
    hosts: tuple[Host, Host],
) -> None:
    a, b = hosts
    routed = (
        IPv4Network("10.99.0.0/24"),
        IPv4Network("192.168.7.5/32"),
        IPv6Network("fd00:7::/64"),
    )

    await a.wg.set_peers([b.as_peer(*routed)])
    assert await static_routes(a) == {"10.99.0.0/24", "192.168.7.5"}  # the /32 of b's overlay
    v6 = await a.netns.run("ip", "-j", "-6", "route", "show", "dev", a.wg.name, "proto", "static")
    assert [route["dst"] for route in json.loads(v6.stdout)] == ["fd00:7::/64"]

    await a.wg.set_peers([b.as_peer(IPv4Network("10.99.0.0/24"))])
    assert await static_routes(a) == {"10.99.0.0/24"}
    [peer] = await a.wg.stats()
    assert set(peer.allowed_ips) == {IPv4Network("100.64.0.2/32"), IPv4Network("10.99.0.0/24")}


async def test_removing_a_peer_breaks_the_path_and_drops_its_routes(
    tunnel: tuple[Host, Host], echo_server: int
) -> None:
    a, b = tunnel
    await a.wg.set_peers([b.as_peer(IPv4Network("10.99.0.0/24"))])
    assert await send_over_tcp(a, b, echo_server, size=1000) == "intact"

    await a.wg.set_peers([])

    assert await a.wg.stats() == []
    assert await static_routes(a) == set()
    unreachable = await send_over_tcp(a, b, echo_server, size=1000, timeout_s=0.5)
    assert unreachable.startswith("unreachable")


async def test_only_changed_peers_are_set_and_only_changes_are_logged(
    tunnel: tuple[Host, Host],
) -> None:
    a, b = tunnel
    before = await handshake(a.wg, b.wg.public_key)
    newcomer = WireGuardPeer(
        public_key=generate_private_key(), allowed_ips=(IPv4Network("100.64.0.9/32"),)
    )

    with capture_logs() as logs:
        await a.wg.set_peers([b.as_peer(), newcomer])
        await a.wg.set_peers([b.as_peer(), newcomer])  # nothing to do, nothing to say
        await a.wg.set_peers([b.as_peer(), dataclasses.replace(newcomer, persistent_keepalive=7)])

    changes = [
        (line["added"], line["updated"], line["removed"])
        for line in logs
        if line["event"] == "wireguard peers changed"
    ]
    assert changes == [(1, 0, 0), (0, 1, 0)]
    stats = {peer.public_key: peer for peer in await a.wg.stats()}
    assert stats[b.wg.public_key].latest_handshake == before.latest_handshake
    assert stats[newcomer.public_key].persistent_keepalive == 7
    assert stats[newcomer.public_key].endpoint is None


async def test_down_leaves_no_link_no_process_and_no_socket(hosts: tuple[Host, Host]) -> None:
    a, _ = hosts
    pid = a.wg.pid
    assert pid is not None and a.wg.name in await links(a.netns)

    await a.wg.down()
    await a.wg.down()  # idempotent

    assert a.wg.name not in await links(a.netns)
    with pytest.raises(ProcessLookupError):  # exited and reaped
        os.kill(pid, 0)
    assert not a.wg.socket_path.exists()
    assert a.wg.pid is None and a.wg.listen_port is None
    assert not await a.wg.healthy()
    await asyncio.wait_for(a.wg.wait_closed(), 1)
    with pytest.raises(WireGuardError, match="is down, not up"):
        await a.wg.stats()


async def test_a_name_in_use_on_the_host_is_refused_even_from_another_namespace(
    hosts: tuple[Host, Host],
) -> None:
    a, b = hosts
    clash = WireGuardInterface(
        a.wg.name, generate_private_key(), listen_port=None, address=b.overlay, netns=b.netns.name
    )

    with pytest.raises(WireGuardError, match=rf"{a.wg.name!r} is already in use: .*sock"):
        await clash.up()

    assert await a.wg.healthy()  # the refused one broke nothing
    assert a.wg.name not in await links(b.netns)


async def test_a_name_taken_by_another_link_in_the_namespace_is_refused(
    namespaces: tuple[Namespace, Namespace],
) -> None:
    a, _ = namespaces
    [taken] = [name for name in await links(a) if name.startswith("va")]  # the veth's end
    wg = interface(a, "100.64.0.1/10", listen_port=None, name=taken)

    with pytest.raises(WireGuardError, match=rf"interface named {taken!r} already exists"):
        await wg.up()

    assert not wg.socket_path.exists()
    assert taken in await links(a)


async def test_a_dead_wireguard_go_is_reported_and_can_be_restarted(
    tunnel: tuple[Host, Host], echo_server: int
) -> None:
    a, b = tunnel
    assert a.wg.pid is not None

    os.kill(a.wg.pid, signal.SIGKILL)

    with pytest.raises(
        WireGuardExitedError, match=rf"wireguard-go for {a.wg.name!r} exited with -9"
    ):
        await asyncio.wait_for(a.wg.wait_closed(), 5)
    assert not await a.wg.healthy()
    with pytest.raises(WireGuardError, match="is exited, not up"):
        await a.wg.set_peers([])

    await a.wg.down()  # what the agent does before starting it again
    assert not a.wg.socket_path.exists()
    await a.wg.up()
    await a.wg.set_peers([b.as_peer()])
    await handshake(a.wg, b.wg.public_key)
    assert await send_over_tcp(a, b, echo_server, size=1000) == "intact"


async def test_a_wireguard_go_that_exits_at_start_is_reported_with_its_output(
    namespaces: tuple[Namespace, Namespace], tmp_path: Path
) -> None:
    a, _ = namespaces
    fake = tmp_path / "wireguard-go"
    fake.write_text("#!/bin/sh\necho 'ERROR: cannot create TUN: no luck' >&2\nexit 3\n")
    fake.chmod(0o755)
    wg = interface(
        a, "100.64.0.1/10", listen_port=None, backend=Backend.USERSPACE, wireguard_go=str(fake)
    )

    with pytest.raises(
        WireGuardError, match=r"exited with 3 while starting: ERROR: cannot create TUN"
    ):
        await wg.up()

    assert wg.pid is None and not await wg.healthy()


async def test_a_wireguard_go_that_never_answers_is_stopped_after_the_timeout(
    namespaces: tuple[Namespace, Namespace], tmp_path: Path
) -> None:
    a, _ = namespaces
    fake = tmp_path / "wireguard-go"
    fake.write_text("#!/bin/sh\necho starting\nexec sleep 30\n")
    fake.chmod(0o755)
    wg = interface(
        a, "100.64.0.1/10", listen_port=None, backend=Backend.USERSPACE,
        wireguard_go=str(fake), startup_timeout_s=0.5,
    )  # fmt: skip

    with pytest.raises(WireGuardError, match=r"did not answer on .* within 0.5s: starting"):
        await wg.up()

    assert await a.pids() == []


def test_invalid_names_and_ports_are_refused_at_construction() -> None:
    key, address = generate_private_key(), IPv4Interface("100.64.0.1/10")
    for name in ("", "a" * 16, "wg 0", "wg/0", ".."):
        with pytest.raises(ValueError, match="interface name"):
            WireGuardInterface(name, key, listen_port=None, address=address)
    with pytest.raises(ValueError, match="listen port"):
        WireGuardInterface("wg0", key, listen_port=70000, address=address)
    with pytest.raises(ValueError, match="not a WireGuard key"):
        WireGuardInterface("wg0", "secret", listen_port=None, address=address)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"public_key": "nope"}, "not a WireGuard key"),
        ({"endpoint": "10.0.0.1"}, "must be host:port"),
        ({"endpoint": "10.0.0.1:0"}, "must be host:port"),
        ({"endpoint": "10.0.0.1:51820\nPrivateKey = x"}, "must be host:port"),
        ({"endpoint": "[fd00:::1]:51820"}, "invalid IPv6"),
        ({"persistent_keepalive": 0}, "persistent keepalive"),
        ({"allowed_ips": (IPv4Network("0.0.0.0/0"),)}, "every packet"),
    ],
)
def test_malformed_peers_are_refused(changes: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {
        "public_key": generate_private_key(),
        "allowed_ips": (IPv4Network("100.64.0.2/32"),),
        "endpoint": "[fd00::1]:51820",
        **changes,
    }
    with pytest.raises(ValueError, match=message):
        WireGuardPeer(**fields)


async def test_a_peer_listed_twice_is_refused(hosts: tuple[Host, Host]) -> None:
    a, b = hosts

    with pytest.raises(ValueError, match="listed twice"):
        await a.wg.set_peers([b.as_peer(), b.as_peer()])


def test_parse_dump_reads_peers_and_skips_the_interface_line() -> None:
    dump = (
        "cHJpdmF0ZQ==\tcHVibGlj\t51820\toff\n"
        "A=\t(none)\t10.0.0.2:51820\t100.64.0.2/32,fd00::/64\t1700000000\t10\t20\t25\n"
        "B=\t(none)\t(none)\t(none)\t0\t0\t0\toff\n"
    )

    assert parse_dump(dump) == [
        PeerStats(
            public_key="A=", endpoint="10.0.0.2:51820",
            allowed_ips=(IPv4Network("100.64.0.2/32"), IPv6Network("fd00::/64")),
            latest_handshake=datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
            rx_bytes=10, tx_bytes=20, persistent_keepalive=25,
        ),
        PeerStats(
            public_key="B=", endpoint=None, allowed_ips=(), latest_handshake=None,
            rx_bytes=0, tx_bytes=0, persistent_keepalive=None,
        ),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="3 fields, expected 8"):
        parse_dump("interface\na\tb\tc\n")


#: brings an interface up in namespace argv[1], prints wireguard-go's pid, and crashes
CRASHING_OWNER = """
import asyncio, os, sys
from ipaddress import IPv4Interface
from heron_tunnel._socket_buffers import WIREGUARD_GO_SOCKET_BUFFER
from heron_tunnel.keys import generate_private_key
from heron_tunnel.wireguard import WireGuardInterface

async def main() -> None:
    wg = WireGuardInterface(
        sys.argv[2], generate_private_key(), listen_port=None,
        address=IPv4Interface("100.64.0.1/10"), netns=sys.argv[1],
    )
    await wg.up()
    print(wg.pid, flush=True)
    os._exit(9)

asyncio.run(main())
"""


async def test_wireguard_go_does_not_outlive_a_crashed_owner(
    namespaces: tuple[Namespace, Namespace],
) -> None:
    a, _ = namespaces
    name = unique_name("hwg")
    owner = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_OWNER, a.name, name, stdout=subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(owner.communicate(), 10)
    assert owner.returncode == 9
    assert int(stdout.splitlines()[-1])  # it had started wireguard-go (after its log lines)

    deadline = asyncio.get_running_loop().time() + 5
    while await a.pids() or name in await links(a):
        assert asyncio.get_running_loop().time() < deadline, "wireguard-go outlived its owner"
        await asyncio.sleep(0.05)
    assert not (SOCKET_DIR / f"{name}.sock").exists()  # SIGTERM, not SIGKILL: it cleaned up
