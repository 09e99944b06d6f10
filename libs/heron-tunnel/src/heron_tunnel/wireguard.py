"""A WireGuard interface owned by one long-running process: the edge's or an agent's.

``WireGuardInterface`` brings the interface up with the kernel module where there is one and as a
supervised ``wireguard-go`` child otherwise, configures it with wireguard-tools (``wg``) and
iproute2 (``ip``), reconciles its peers and the routes to their allowed IPs, reads per-peer
statistics and takes it down again. ``WireGuardPeer`` is what a peer should be, ``PeerStats``
what it is.

wireguard-go's control socket lives in ``/var/run/wireguard/<name>.sock``, one directory per host
that network namespaces do not separate: interface names must be unique on the host, and ``up``
refuses a name whose socket answers. The private key travels on stdin, never on a command line.
"""

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import os
import re
import shlex
import socket
import subprocess
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from ipaddress import IPv4Interface, IPv4Network, IPv6Network
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog

from heron_core.errors import HeronError
from heron_core.process import dying_with_parent
from heron_core.tasks import spawn
from heron_tunnel._commands import describe_failure, run_command
from heron_tunnel._socket_buffers import set_udp_buffers
from heron_tunnel.keys import parse_key, public_key_of

log = structlog.get_logger(__name__)

IPNetwork = IPv4Network | IPv6Network

#: where wireguard-go puts its control sockets (one per interface, shared by all namespaces)
SOCKET_DIR = Path("/var/run/wireguard")
#: wireguard-go refuses to start on a kernel with WireGuard support unless this is set
USERSPACE_ENV = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
#: wireguard-go answers on its socket within tens of milliseconds; the margin is for a busy host
STARTUP_TIMEOUT_S = 5.0
#: after SIGTERM wireguard-go closes its TUN and socket at once; past this it is killed
STOP_TIMEOUT_S = 3.0
#: every ``ip``/``wg`` call and endpoint lookup; all are local and quick unless something hangs
COMMAND_TIMEOUT_S = 10.0
#: keeps one ``wg set`` well under the kernel's argv limit (ARG_MAX) with thousands of peers
MAX_PEERS_PER_COMMAND = 500
#: between two probes of a starting wireguard-go
_PROBE_INTERVAL_S = 0.02
#: one probe of a control socket; a live wireguard-go accepts at once
_SOCKET_PROBE_TIMEOUT_S = 0.5
#: reading what an exited wireguard-go left in its pipe takes no time; this bounds it anyway
_DRAIN_TIMEOUT_S = 1.0
#: how much of wireguard-go's output an error message quotes
_OUTPUT_TAIL_LINES = 20
#: Linux interface names: at most IFNAMSIZ - 1 bytes; wg-quick's character set
_INTERFACE_NAME = re.compile(r"[a-zA-Z0-9_=+.-]{1,15}")
_ENDPOINT = re.compile(
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>\d{1,5})"
)
#: wireguard-go's boxed notice that the kernel could do its job; kept out of error messages
_BANNER = ("┌", "│", "└")


class WireGuardError(HeronError):
    """A WireGuard interface could not be brought up, configured, read or taken down."""


class WireGuardExitedError(WireGuardError):
    """wireguard-go exited while the interface was up; ``down`` then ``up`` starts it again."""


class Backend(StrEnum):
    KERNEL = "kernel"  # the kernel module (``ip link add … type wireguard``)
    USERSPACE = "userspace"  # a wireguard-go child process


@dataclasses.dataclass(frozen=True, slots=True)
class WireGuardPeer:
    """A peer as it should be: its key, the prefixes it may send from and is routed, how to reach it.

    ``endpoint`` is ``"host:port"`` (IPv6 in brackets); None leaves the endpoint to roaming (the
    edge learns agents' addresses from their handshakes). ``persistent_keepalive`` is in seconds.
    """

    public_key: str
    allowed_ips: tuple[IPNetwork, ...]
    endpoint: str | None = None
    persistent_keepalive: int | None = None

    def __post_init__(self) -> None:
        if parse_key(self.public_key) != self.public_key:
            raise ValueError("peer public key has surrounding whitespace")
        if self.endpoint is not None:
            split_endpoint(self.endpoint)
        if self.persistent_keepalive is not None and not 0 < self.persistent_keepalive < 65536:
            raise ValueError(
                f"persistent keepalive of peer {self.public_key!r} must be 1-65535 seconds or "
                f"None, got {self.persistent_keepalive!r}"
            )
        for prefix in self.allowed_ips:
            if prefix.prefixlen == 0:
                raise ValueError(
                    f"allowed IP {str(prefix)!r} of peer {self.public_key!r} would route every "
                    "packet into the tunnel, its own included: list narrower prefixes"
                )


@dataclasses.dataclass(frozen=True, slots=True)
class PeerStats:
    """A peer as the interface reports it (``wg show <name> dump``)."""

    public_key: str
    endpoint: str | None
    allowed_ips: tuple[IPNetwork, ...]
    latest_handshake: datetime | None
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int | None


class _State(StrEnum):
    DOWN = "down"
    STARTING = "starting"
    UP = "up"
    EXITED = "exited"  # wireguard-go died while up
    STOPPING = "stopping"


class WireGuardInterface:
    """One WireGuard interface, from ``up`` to ``down``; also an async context manager.

    ``netns`` runs every command through ``ip netns exec`` so one process can own interfaces in
    several namespaces (tests, benchmarks). ``backend`` None tries the kernel module, then
    wireguard-go. If wireguard-go dies, ``wait_closed`` raises ``WireGuardExitedError``.
    """

    def __init__(
        self,
        name: str,
        private_key: str,
        *,
        listen_port: int | None,
        address: IPv4Interface,
        mtu: int = 1420,
        netns: str | None = None,
        backend: Backend | None = None,
        wireguard_go: str = "wireguard-go",
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
    ) -> None:
        validate_interface_name(name)
        if listen_port is not None and not 0 < listen_port < 65536:
            raise ValueError(
                f"listen port of {name!r} must be 1-65535 or None, got {listen_port!r}"
            )
        self._name = name
        self._private_key = parse_key(private_key)
        self._public_key = public_key_of(self._private_key)
        self._requested_port = listen_port
        self._address = address
        self._mtu = mtu
        self._netns = netns
        self._wanted_backend = backend
        self._wireguard_go = wireguard_go
        self._startup_timeout_s = startup_timeout_s
        self._state = _State.DOWN
        self._backend: Backend | None = None
        self._listen_port: int | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._output: deque[str] = deque(maxlen=_OUTPUT_TAIL_LINES)
        self._exit_error: WireGuardExitedError | None = None
        self._closed = asyncio.Event()
        self._closed.set()
        self._reconciling = asyncio.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def public_key(self) -> str:
        return self._public_key

    @property
    def address(self) -> IPv4Interface:
        return self._address

    @property
    def netns(self) -> str | None:
        return self._netns

    @property
    def socket_path(self) -> Path:
        return SOCKET_DIR / f"{self._name}.sock"

    @property
    def backend(self) -> Backend | None:
        """How the interface runs; None until ``up``."""
        return self._backend

    @property
    def listen_port(self) -> int | None:
        """The UDP port bound (picked at random when none was asked for); None while down."""
        return self._listen_port

    @property
    def pid(self) -> int | None:
        """wireguard-go's process id while it runs (userspace backend only)."""
        return self._process.pid if self._process is not None else None

    async def up(self) -> None:
        """Create and configure the interface; on any error, undo what was done and raise."""
        if self._state is not _State.DOWN:
            raise WireGuardError(f"wireguard interface {self._name!r} is {self._state}, not down")
        self._state = _State.STARTING
        self._closed.clear()
        try:
            await self._refuse_clash()
            self._backend = await self._create_link()
            await self._configure()
            self._enlarge_socket_buffers()
        except BaseException:
            await self._teardown()
            raise
        self._state = _State.UP
        log.info(
            "wireguard interface up", interface=self._name, backend=self._backend,
            netns=self._netns, listen_port=self._listen_port, address=str(self._address),
            public_key=self._public_key,
        )  # fmt: skip

    def _enlarge_socket_buffers(self) -> None:
        """wireguard-go only: the UDP buffers its newer releases set themselves (best effort)."""
        if self._backend is not Backend.USERSPACE or self.pid is None or not self._listen_port:
            return
        try:
            changed = set_udp_buffers(self.pid, self._listen_port)
        except OSError as exc:
            log.warning(
                "cannot enlarge wireguard-go's socket buffers; expect drops under load",
                interface=self._name, error=str(exc),
            )  # fmt: skip
            return
        if not changed:
            log.warning("found no UDP socket of wireguard-go to enlarge", interface=self._name)

    async def down(self) -> None:
        """Delete the link or stop wireguard-go (SIGTERM, SIGKILL after a grace period); idempotent."""
        if self._state is _State.DOWN:
            return
        self._state = _State.STOPPING
        await self._teardown()
        log.info("wireguard interface down", interface=self._name)

    async def wait_closed(self) -> None:
        """Return once the interface is down; raise ``WireGuardExitedError`` if wireguard-go died."""
        await self._closed.wait()
        if self._exit_error is not None:
            raise self._exit_error

    async def healthy(self) -> bool:
        """True while up and answering ``wg show`` (wireguard-go alive, kernel link present)."""
        return self._state is _State.UP and await self._answers()

    async def set_peers(self, peers: Sequence[WireGuardPeer]) -> None:
        """Make the interface's peers and their routes exactly ``peers``.

        Reads the live peers, then sends one ``wg set`` with only the differences: unchanged peers
        are not touched, so their sessions and counters carry on. Each allowed IP outside the
        interface's own network gets a route into the interface; routes no longer wanted go.
        """
        self._require_up()
        wanted = await _resolved(_by_key(peers))
        routes = _routes_for(wanted.values(), self._address)
        async with self._reconciling:
            live = await self._live_peers()
            plan = _plan(live, wanted)
            for start in range(0, len(plan.commands), MAX_PEERS_PER_COMMAND):
                chunk = plan.commands[start : start + MAX_PEERS_PER_COMMAND]
                await self._command(
                    "wg", "set", self._name, *(arg for peer in chunk for arg in peer)
                )
            added, removed = await self._reconcile_routes(routes)
        if plan.commands or added or removed:
            log.info(
                "wireguard peers changed", interface=self._name, peers=len(wanted),
                added=plan.added, updated=plan.updated, removed=plan.removed,
                routes_added=added, routes_removed=removed,
            )  # fmt: skip

    async def stats(self) -> list[PeerStats]:
        """Every peer with its endpoint, latest handshake, byte counters and keepalive."""
        self._require_up()
        return await self._live_peers()

    async def __aenter__(self) -> Self:
        await self.up()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.down()

    # -- bringing up -------------------------------------------------------------------------

    async def _refuse_clash(self) -> None:
        if await _socket_answers(self.socket_path):
            raise WireGuardError(
                f"wireguard interface {self._name!r} is already in use: {str(self.socket_path)!r} "
                "answers (another wireguard-go on this host, perhaps in another network "
                "namespace; their sockets share one directory, so names must be unique per host)"
            )
        links = json.loads(await self._command("ip", "-j", "link", "show"))
        if any(link.get("ifname") == self._name for link in links):
            raise WireGuardError(
                f"a network interface named {self._name!r} already exists in "
                f"{_describe_netns(self._netns)}"
            )

    async def _create_link(self) -> Backend:
        if self._wanted_backend is not Backend.USERSPACE:
            try:
                await self._command("ip", "link", "add", self._name, "type", "wireguard")
            except WireGuardError as exc:
                if self._wanted_backend is Backend.KERNEL:
                    raise
                log.debug(
                    "wireguard kernel module unavailable", interface=self._name, error=str(exc)
                )
            else:
                return Backend.KERNEL
        await self._start_wireguard_go()
        return Backend.USERSPACE

    async def _start_wireguard_go(self) -> None:
        try:
            self._process = await asyncio.create_subprocess_exec(
                # dies with us: a crashed owner must not leave the interface name taken
                *self._argv(*dying_with_parent([self._wireguard_go, "-f", self._name])),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, **USERSPACE_ENV},
                start_new_session=True,  # a Ctrl-C meant for us must not kill it before ``down``
            )
        except OSError as exc:
            raise WireGuardError(f"wireguard-go for {self._name!r}: {exc}") from exc
        self._supervisor = spawn(self._supervise(self._process), name=f"wireguard-go {self._name}")
        await self._wait_until_ready(self._process)

    async def _wait_until_ready(self, process: asyncio.subprocess.Process) -> None:
        deadline = asyncio.get_running_loop().time() + self._startup_timeout_s
        while True:
            if process.returncode is not None:
                raise WireGuardError(
                    f"wireguard-go for {self._name!r} exited with {process.returncode} while "
                    f"starting: {await self._output_tail()}"
                )
            if self.socket_path.exists() and await self._answers():
                return
            if asyncio.get_running_loop().time() > deadline:
                raise WireGuardError(
                    f"wireguard-go for {self._name!r} did not answer on "
                    f"{str(self.socket_path)!r} within {self._startup_timeout_s}s: "
                    f"{await self._output_tail()}"
                )
            await asyncio.sleep(_PROBE_INTERVAL_S)

    async def _configure(self) -> None:
        port = [] if self._requested_port is None else ["listen-port", str(self._requested_port)]
        await self._command(
            "wg", "set", self._name, "private-key", "/dev/stdin", *port,
            stdin=f"{self._private_key}\n".encode(),
        )  # fmt: skip
        await self._command("ip", "address", "add", str(self._address), "dev", self._name)
        await self._command("ip", "link", "set", "dev", self._name, "mtu", str(self._mtu), "up")
        self._listen_port = int(await self._command("wg", "show", self._name, "listen-port"))

    async def _supervise(self, process: asyncio.subprocess.Process) -> None:
        """Log wireguard-go's output and notice when it exits."""
        assert process.stdout is not None
        while True:
            try:
                raw = await process.stdout.readline()
            except ValueError:  # a line over the reader's limit; the rest of it follows
                continue
            if not raw:
                break
            line = raw.decode(errors="replace").rstrip()
            if not line or line.startswith(_BANNER):
                continue
            self._output.append(line)
            if line.startswith("ERROR"):
                log.info("wireguard-go", interface=self._name, line=line)
            else:
                log.debug("wireguard-go", interface=self._name, line=line)
        returncode = await process.wait()
        if self._state is _State.UP and self._process is process:
            self._state = _State.EXITED
            tail = " | ".join(self._output) or "(no output)"
            self._exit_error = WireGuardExitedError(
                f"wireguard-go for {self._name!r} exited with {returncode}: {tail}"
            )
            log.warning(
                "wireguard-go exited", interface=self._name, returncode=returncode, output=tail
            )
            self._closed.set()

    async def _output_tail(self) -> str:
        process, supervisor = self._process, self._supervisor
        if process and process.returncode is not None and supervisor:
            # an exited process's last words are in the pipe already: let the supervisor read them
            await asyncio.wait([supervisor], timeout=_DRAIN_TIMEOUT_S)
        return " | ".join(self._output) or "(no output)"

    # -- taking down -------------------------------------------------------------------------

    async def _teardown(self) -> None:
        """Undo whatever exists of the interface, whatever state it got to."""
        try:
            if self._backend is Backend.KERNEL:
                await self._delete_kernel_link()
            await self._stop_wireguard_go()
        finally:
            self._state = _State.DOWN
            self._backend = None
            self._listen_port = None
            self._exit_error = None
            self._closed.set()

    async def _delete_kernel_link(self) -> None:
        try:
            await self._command("ip", "link", "delete", "dev", self._name)
        except WireGuardError:
            links = json.loads(await self._command("ip", "-j", "link", "show"))
            if any(link.get("ifname") == self._name for link in links):
                raise

    async def _stop_wireguard_go(self) -> None:
        process, supervisor = self._process, self._supervisor
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if supervisor is not None:  # it ends at the pipe's end, which the exit closed
            _, pending = await asyncio.wait([supervisor], timeout=_DRAIN_TIMEOUT_S)
            for task in pending:
                task.cancel()
        self._process = self._supervisor = None
        self._output.clear()
        # SIGTERM removes the socket; a killed wireguard-go leaves it, and only ours may go
        if self.socket_path.exists() and not await _socket_answers(self.socket_path):
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()

    # -- peers and routes --------------------------------------------------------------------

    async def _live_peers(self) -> list[PeerStats]:
        dump = await self._command("wg", "show", self._name, "dump")
        try:
            return parse_dump(dump)
        except ValueError as exc:
            raise WireGuardError(f"`wg show {self._name} dump`: {exc}") from exc

    async def _reconcile_routes(self, wanted: set[IPNetwork]) -> tuple[int, int]:
        """Routes into the interface for ``wanted`` only; returns (added, removed)."""
        present = await self._routes()
        for prefix in sorted(wanted - present, key=_network_order):
            await self._command(
                "ip", "route", "replace", str(prefix), "dev", self._name, "proto", "static"
            )
        for prefix in sorted(present - wanted, key=_network_order):
            await self._command(
                "ip", "route", "delete", str(prefix), "dev", self._name, "proto", "static"
            )
        return len(wanted - present), len(present - wanted)

    async def _routes(self) -> set[IPNetwork]:
        """The routes this class manages: ``proto static`` on this interface, main table."""
        found: set[IPNetwork] = set()
        for family, default in (("-4", "0.0.0.0/0"), ("-6", "::/0")):
            listed = await self._command(
                "ip", "-j", family, "route", "show", "dev", self._name, "proto", "static"
            )
            for route in json.loads(listed or "[]"):
                dst = str(route["dst"])
                found.add(ipaddress.ip_network(default if dst == "default" else dst))
        return found

    # -- commands ----------------------------------------------------------------------------

    async def _answers(self) -> bool:
        try:
            await self._command("wg", "show", self._name)
        except WireGuardError:
            return False
        return True

    def _require_up(self) -> None:
        if self._state is not _State.UP:
            raise WireGuardError(f"wireguard interface {self._name!r} is {self._state}, not up")

    def _argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self._netns, *argv] if self._netns else list(argv)

    async def _command(self, *argv: str, stdin: bytes | None = None) -> str:
        """Run ``argv`` (in the namespace) and return its stdout; ``WireGuardError`` otherwise.

        Error messages quote stderr only: stdout may hold the private key (``wg show dump``).
        """
        try:
            done = await run_command(self._argv(*argv), stdin=stdin, timeout_s=COMMAND_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise WireGuardError(f"`{shlex.join(argv)}` for {self._name!r}: {exc}") from exc
        if done.returncode != 0:
            raise WireGuardError(describe_failure(done))
        return done.stdout.decode()


def validate_interface_name(name: str) -> None:
    """``ValueError`` unless ``name`` is a valid Linux interface name for WireGuard."""
    if not _INTERFACE_NAME.fullmatch(name) or name in {".", ".."}:
        raise ValueError(
            f"interface name {name!r} must be 1-15 characters of letters, digits and _=+.-"
        )


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``"host:port"`` (IPv6 in brackets) as ``(host, port)``; ``ValueError`` if malformed."""
    match = _ENDPOINT.fullmatch(endpoint)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ValueError(
            f"endpoint {endpoint!r} must be host:port (IPv6 in brackets, port 1-65535)"
        )
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            raise ValueError(f"endpoint {endpoint!r} has an invalid IPv6 address") from None
        return match["ipv6"], int(match["port"])
    return match["host"], int(match["port"])


def parse_dump(text: str) -> list[PeerStats]:
    """The peers in ``wg show <name> dump`` output.

    Its first line describes the interface (private key included) and is skipped; each peer line
    is: public key, preshared key, endpoint, allowed IPs, latest handshake (Unix time, 0 for
    never), rx bytes, tx bytes, persistent keepalive (seconds or ``off``), tab-separated.
    """
    peers = []
    for line in text.splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) != 8:
            raise ValueError(f"peer line has {len(fields)} fields, expected 8")
        key, _, endpoint, allowed_ips, handshake, rx, tx, keepalive = fields
        peers.append(
            PeerStats(
                public_key=key,
                endpoint=None if endpoint == "(none)" else endpoint,
                allowed_ips=()
                if allowed_ips == "(none)"
                else tuple(ipaddress.ip_network(prefix) for prefix in allowed_ips.split(",")),
                latest_handshake=None
                if handshake == "0"
                else datetime.fromtimestamp(int(handshake), UTC),
                rx_bytes=int(rx),
                tx_bytes=int(tx),
                persistent_keepalive=None if keepalive == "off" else int(keepalive),
            )
        )
    return peers


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    """The ``wg set`` arguments, one list per peer, that turn the live peers into the wanted."""

    commands: list[list[str]]
    added: int
    updated: int
    removed: int


def _plan(live: Sequence[PeerStats], wanted: Mapping[str, WireGuardPeer]) -> _Plan:
    present = {peer.public_key: peer for peer in live}
    removals = [["peer", key, "remove"] for key in present if key not in wanted]
    new = [peer for key, peer in wanted.items() if key not in present]
    changed = [
        peer for key, peer in wanted.items() if key in present and _differs(present[key], peer)
    ]
    # removals first: a prefix that moves from a removed peer to a new one ends on the new one
    commands = removals + [_peer_args(peer) for peer in new + changed]
    return _Plan(commands, added=len(new), updated=len(changed), removed=len(removals))


def _differs(live: PeerStats, peer: WireGuardPeer) -> bool:
    return (
        set(live.allowed_ips) != set(peer.allowed_ips)
        or live.persistent_keepalive != peer.persistent_keepalive
        or (peer.endpoint is not None and live.endpoint != peer.endpoint)
    )


def _peer_args(peer: WireGuardPeer) -> list[str]:
    args = ["peer", peer.public_key, "allowed-ips", ",".join(map(str, peer.allowed_ips))]
    if peer.endpoint is not None:
        args += ["endpoint", peer.endpoint]
    return [*args, "persistent-keepalive", str(peer.persistent_keepalive or "off")]


def _by_key(peers: Sequence[WireGuardPeer]) -> dict[str, WireGuardPeer]:
    by_key: dict[str, WireGuardPeer] = {}
    for peer in peers:
        if peer.public_key in by_key:
            raise ValueError(f"peer {peer.public_key!r} is listed twice")
        by_key[peer.public_key] = peer
    return by_key


async def _resolved(peers: dict[str, WireGuardPeer]) -> dict[str, WireGuardPeer]:
    """``peers`` with host names in endpoints replaced by addresses.

    Resolving here, not in ``wg``, lets the plan compare endpoints with the live ones (which
    ``wg`` reports as addresses) and bounds the lookup by our timeout, not wg's retry loop.
    """
    resolved = {}
    for key, peer in peers.items():
        endpoint = peer.endpoint and await _resolve_endpoint(peer.endpoint)
        resolved[key] = dataclasses.replace(peer, endpoint=endpoint)
    return resolved


async def _resolve_endpoint(endpoint: str) -> str:
    host, port = split_endpoint(endpoint)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                found = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_DGRAM
                )
        except (OSError, TimeoutError) as exc:
            raise WireGuardError(
                f"endpoint {endpoint!r}: {host!r} does not resolve: {exc}"
            ) from exc
        address = ipaddress.ip_address(found[0][4][0])
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def _routes_for(peers: Iterable[WireGuardPeer], address: IPv4Interface) -> set[IPNetwork]:
    """Allowed IPs that the interface's own connected route does not already cover."""
    return {
        prefix
        for peer in peers
        for prefix in peer.allowed_ips
        if not (isinstance(prefix, IPv4Network) and prefix.subnet_of(address.network))
    }


def _network_order(network: IPNetwork) -> tuple[int, IPNetwork]:
    return network.version, network


async def _socket_answers(path: Path) -> bool:
    """True if something accepts connections on the Unix socket ``path``."""
    try:
        async with asyncio.timeout(_SOCKET_PROBE_TIMEOUT_S):
            _, writer = await asyncio.open_unix_connection(path)
    except (OSError, TimeoutError):
        return False
    writer.close()
    await writer.wait_closed()
    return True


def _describe_netns(netns: str | None) -> str:
    return "this network namespace" if netns is None else f"network namespace {netns!r}"
