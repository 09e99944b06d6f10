"""Throughput and connection setup through Heron's tunnel, against the bare WireGuard interface.

Two network namespaces, an *edge* host and a *peer* host, joined by a veth (underlay
10.233.0.0/24) and a WireGuard tunnel between them (overlay 100.64.0.1 and 100.64.0.2; the
kernel module where there is one, wireguard-go otherwise). In the same run, interleaved round by
round, in both directions (iperf3 plain, and ``-R``: the peer sends):

- **bare**: iperf3 (one TCP stream) from the edge to an iperf3 server on the peer's overlay
  address: what the WireGuard interface alone carries.
- **relay**: the same iperf3 client through Heron's path: a listener in the edge namespace that
  calls ``open_stream`` for each connection and ``relay``s it to the agent's ``Forwarder`` on
  the peer's overlay address, which dials the iperf3 server on the peer's ``127.0.0.1`` and
  relays again (splice, as the services run it; with ``--copy`` also **relay-copy**: both relays
  with ``force_copy``).
- **veth** (once, for context): iperf3 over the underlay, no WireGuard.

Then **connection setup**: sequential connections, each timed up to a one-byte echo, alternating
a plain TCP connect to an echo server on the peer's overlay address and ``open_stream`` through
the forwarder to an echo server on the peer's ``127.0.0.1``.

Needs root, iperf3, wireguard-go, wireguard-tools and iproute2. Run from the repository root::

    uv run python bench/tunnel.py [--duration 8] [--rounds 3] [--connections 200] [--copy]

Prints a table, then as its last line ``RESULT name=value …`` (bench/README.md lists the names).
Everything it creates — namespaces, interfaces, processes — is removed at the end, on error and
on Ctrl-C.
"""

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from _netlab import Cpu, machine_jiffies, process_cpu_s  # bench/'s own shared helpers

from heron_core.logging import configure_logging
from heron_core.settings import LogFormat
from heron_core.tasks import spawn
from heron_tunnel._socket_buffers import WIREGUARD_GO_SOCKET_BUFFER, set_udp_buffers
from heron_tunnel.keys import generate_private_key
from heron_tunnel.netns import Namespace, cleanup_stale, unique_name, veth
from heron_tunnel.relay import DEFAULT_BUFFER_BYTES
from heron_tunnel.wireguard import Backend, WireGuardInterface, WireGuardPeer

SIDES = Path(__file__).with_name("_tunnel_sides.py")
EDGE_PREFIX, PEER_PREFIX, WG_PREFIX = "hbte", "hbtp", "hbtw"
UNDERLAY_EDGE, UNDERLAY_PEER = IPv4Interface("10.233.0.1/24"), IPv4Interface("10.233.0.2/24")
OVERLAY_EDGE, OVERLAY_PEER = IPv4Interface("100.64.0.1/10"), IPv4Interface("100.64.0.2/10")
LOCALHOST = "127.0.0.1"
WG_PORT = 51820
#: the agents' forwarders on the peer's overlay address: relaying by splice, and by copying
FORWARDER_PORT, FORWARDER_COPY_PORT = 51821, 51822
#: the edge's listeners on its 127.0.0.1, one per agent
EDGE_PORT, EDGE_COPY_PORT = 15201, 15202
#: iperf3 servers on the peer: overlay (bare), 127.0.0.1 (the relay's target), underlay (veth)
IPERF_BARE_PORT, IPERF_TARGET_PORT, IPERF_VETH_PORT = 5201, 5202, 5203
#: echo servers on the peer, on the overlay address and on 127.0.0.1
ECHO_PORT = 7001
#: iperf3's first second (slow start) is left out of its figures
IPERF_OMIT_S = 1
#: iperf3's own deadline for its control connection
IPERF_CONNECT_TIMEOUT_MS = 5000
#: how long a process may take to say it serves, and a WireGuard handshake to happen
READY_TIMEOUT_S = 10.0
#: the whole run may not take longer than this (ARCHITECTURE.md: under 5 minutes)
RUN_LIMIT_S = 290.0
#: besides the iperf3 runs: namespaces, wireguard-go, processes, teardown
FIXED_COST_S = 10.0
#: how long the relay's per-connection stats may trail iperf3's exit
RELAY_STATS_WAIT_S = 2.0
#: issue 3: the relay carries at least this share of what the bare WireGuard interface does
TARGET_RATIO = 0.8
#: what wireguard-go since 2023 asks for its UDP sockets (``conn.socketBufferSize``, 7 MiB)
UPSTREAM_WG_SOCKET_BUFFER = WIREGUARD_GO_SOCKET_BUFFER

FORWARD, REVERSE = "edge->peer", "peer->edge"


class BenchError(Exception):
    """The bench cannot run or a step of it failed; the message says which and why."""


# -- options -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Options:
    duration_s: int
    rounds: int
    connections: int
    directions: tuple[str, ...]
    copy: bool
    veth: bool
    buffer_size: int
    instrument: bool
    wg_socket_buffer: int

    @property
    def paths(self) -> list[str]:
        """The relayed or not paths each round measures, in order."""
        return ["bare", "relay", *(["relay-copy"] if self.copy else [])]

    def estimate_s(self) -> float:
        per_run = self.duration_s + IPERF_OMIT_S + 0.5  # iperf3's start and end, the counters
        runs = self.rounds * len(self.paths) * len(self.directions)
        veth = (max(2, self.duration_s // 2) + IPERF_OMIT_S + 0.5) if self.veth else 0
        return FIXED_COST_S + veth + runs * per_run + self.connections * 2 * 0.005


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        description="Heron tunnel bench: relay vs bare WireGuard throughput, connection setup."
    )
    parser.add_argument("--duration", type=int, default=8, help="seconds per iperf3 run (8)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument(
        "--connections", type=int, default=200, help="timed connections of each kind (200)"
    )
    parser.add_argument(
        "--direction",
        choices=["both", "forward", "reverse"],
        default="both",
        help="forward: the edge sends (iperf3), reverse: the peer sends (iperf3 -R); both",
    )
    parser.add_argument("--copy", action="store_true", help="also relay with recv/send (no splice)")
    parser.add_argument("--no-veth", action="store_true", help="skip the veth reference run")
    parser.add_argument(
        "--buffer-size",
        type=int,
        default=DEFAULT_BUFFER_BYTES,
        help=f"relay buffer/pipe bytes on both sides (library default {DEFAULT_BUFFER_BYTES})",
    )
    parser.add_argument(
        "--instrument",
        action="store_true",
        help="count the relays' reads, waits and writes (costs a Python call per move)",
    )
    parser.add_argument(
        "--wg-socket-buffer",
        type=int,
        default=0,
        metavar="BYTES",
        help="give wireguard-go's UDP sockets this buffer size instead of the "
        f"{UPSTREAM_WG_SOCKET_BUFFER} bytes heron_tunnel already sets (as wireguard-go since 2023 "
        "does itself); default: keep heron_tunnel's",
    )
    args = parser.parse_args(argv)
    if not 2 <= args.duration <= 30:
        parser.error("--duration must be 2-30 seconds")
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds must be 1-10")
    if not 10 <= args.connections <= 2000:
        parser.error("--connections must be 10-2000")
    if args.buffer_size < 4096:
        parser.error("--buffer-size must be at least 4096")
    if args.wg_socket_buffer < 0:
        parser.error("--wg-socket-buffer must not be negative")
    options = Options(
        duration_s=args.duration,
        rounds=args.rounds,
        connections=args.connections,
        directions={
            "both": (FORWARD, REVERSE),
            "forward": (FORWARD,),
            "reverse": (REVERSE,),
        }[args.direction],
        copy=args.copy,
        veth=not args.no_veth,
        buffer_size=args.buffer_size,
        instrument=args.instrument,
        wg_socket_buffer=args.wg_socket_buffer,
    )
    if options.estimate_s() > RUN_LIMIT_S:
        parser.error(
            f"these options would take about {options.estimate_s():.0f} s; "
            f"the bench stays under {RUN_LIMIT_S:.0f} s: fewer rounds or shorter runs"
        )
    return options


# -- processes ---------------------------------------------------------------------------------


class Child:
    """A long-running process in a namespace; its stdout lines are kept, stderr goes to a file."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path
        self.lines: list[str] = []
        self._reader = spawn(self._read(), name=f"stdout of {name}")

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _read(self) -> None:
        if self.process.stdout is None:
            return
        while raw := await self.process.stdout.readline():
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def messages(self, kind: str, start: int = 0) -> list[dict[str, Any]]:
        """The payloads of ``KIND {json}`` lines from line ``start`` on."""
        prefix = kind + " "
        return [
            json.loads(line[len(prefix) :])
            for line in self.lines[start:]
            if line.startswith(prefix)
        ]

    async def ready(self, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """Wait for the ``READY`` line; ``BenchError`` with the process's stderr if it never comes."""
        deadline = time.monotonic() + timeout_s
        while not (found := self.messages("READY")):
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not start: {self.stderr_tail()}")
            await asyncio.sleep(0.02)
        return found[0]

    def stderr_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except OSError:
            text = ""
        return " | ".join(text.splitlines()[-lines:]) or "(no output on stderr)"

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 3.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reader, 1.0)


class Children:
    """Starts processes in namespaces and stops them all on exit, error or not."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._children: list[Child] = []
        self._logs: list[IO[bytes]] = []

    async def start(self, name: str, netns: Namespace, *argv: str) -> Child:
        log_file = (self._log_dir / f"{name}.stderr").open("wb")
        self._logs.append(log_file)
        process = await netns.spawn(*argv, stdout=subprocess.PIPE, stderr=log_file)
        child = Child(name, process, self._log_dir / f"{name}.stderr")
        self._children.append(child)
        return child

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.gather(*(child.stop() for child in reversed(self._children)))
        for log_file in self._logs:
            log_file.close()


async def wait_listening(netns: Namespace, host: str, port: int) -> None:
    """Wait until something listens on ``host:port`` in ``netns`` (for servers that cannot say)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        done = await netns.run("ss", "-Hltn", f"sport = :{port}", check=False)
        if f"{host}:{port}" in done.stdout.decode():
            return
        if time.monotonic() > deadline:
            raise BenchError(f"nothing listens on {host}:{port} in {netns.name}")
        await asyncio.sleep(0.05)


# -- wireguard-go's UDP sockets ----------------------------------------------------------------


async def udp_receive_buffer(netns: Namespace, port: int) -> int | None:
    """The receive buffer (bytes) of the IPv4 UDP socket on ``port`` in ``netns``, per ``ss``."""
    done = await netns.run("ss", "-H4uamn", f"sport = :{port}", check=False)
    found = re.search(r"\brb(\d+)", done.stdout.decode())
    return int(found[1]) if found else None


# -- CPU accounting ----------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds of named groups of processes, and the machine's busy share, over a span."""

    def __init__(self, groups: dict[str, list[int | None]]) -> None:
        self._groups = groups
        self._start: dict[str, tuple[float, float]] = {}
        self._machine: tuple[int, int] = (0, 0)

    def start(self) -> None:
        self._start = self._sample()
        self._machine = machine_jiffies()[::2]  # (busy, total)

    def stop(self) -> tuple[dict[str, Cpu], float]:
        """CPU per group, and the machine's busy fraction (all CPUs), since ``start``."""
        now = self._sample()
        busy, _, total = machine_jiffies()
        span = total - self._machine[1]
        machine = (busy - self._machine[0]) / span if span else 0.0
        return {
            name: Cpu(now[name][0] - self._start[name][0], now[name][1] - self._start[name][1])
            for name in now
        }, machine

    def _sample(self) -> dict[str, tuple[float, float]]:
        sampled = {}
        for name, pids in self._groups.items():
            times = [process_cpu_s(pid) for pid in pids if pid is not None]
            sampled[name] = (sum(t[0] for t in times), sum(t[1] for t in times))
        return sampled


# -- measurements ------------------------------------------------------------------------------


async def net_counters(netns: Namespace, interface: str) -> dict[str, int]:
    """Where a namespace loses packets: TCP segments retransmitted, UDP datagrams dropped for a
    full socket buffer (wireguard-go reading too slowly), and the WireGuard link's drops."""
    snmp = (await netns.run("cat", "/proc/net/snmp")).stdout.decode().splitlines()
    table: dict[str, dict[str, int]] = {}
    for names, values in zip(snmp[::2], snmp[1::2], strict=True):
        proto = names.split(":")[0]
        table[proto] = dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=True))
    [link] = json.loads((await netns.run("ip", "-s", "-j", "link", "show", interface)).stdout)
    stats = link["stats64"]
    return {
        "tcp_retrans": table["Tcp"]["RetransSegs"],
        "udp_drops": table["Udp"]["RcvbufErrors"] + table["Udp"]["SndbufErrors"],
        "wg_drops": stats["rx"]["dropped"] + stats["tx"]["dropped"],
    }


@dataclasses.dataclass(frozen=True)
class Moves:
    """One relay's main direction (``--instrument``): how it moved the bytes."""

    reads: int  # reads that got bytes
    waits: int  # reads that found none: the relay waited for the socket
    writes: int
    full_writes: int  # writes the socket refused: the relay waited for room
    bytes: int


@dataclasses.dataclass
class Run:
    round: int
    path: str
    direction: str
    gbps: float
    seconds: float
    cpu: dict[str, Cpu]
    machine_busy: float
    tcp_retrans: int  # both namespaces: the tunnel's retransmitted segments, and loopback's
    udp_drops: int  # both namespaces: datagrams lost to full UDP socket buffers
    wg_drops: int  # both namespaces: packets the WireGuard links dropped
    zero_copy: dict[str, bool] = dataclasses.field(default_factory=dict)  # per relay side
    moves: dict[str, Moves] = dataclasses.field(default_factory=dict)  # per relay side

    @property
    def gigabytes(self) -> float:
        return self.gbps * self.seconds / 8

    @property
    def cpu_total_s(self) -> float:
        return sum(cpu.total_s for cpu in self.cpu.values())


async def iperf3(
    netns: Namespace, host: str, port: int, seconds: int, *, reverse: bool
) -> tuple[float, float, Cpu]:
    """One iperf3 client run: (Gbit/s received, seconds, the client's CPU)."""
    argv = [
        "iperf3", "-c", host, "-p", str(port), "-t", str(seconds), "-O", str(IPERF_OMIT_S),
        "-J", "--connect-timeout", str(IPERF_CONNECT_TIMEOUT_MS), *(["-R"] if reverse else []),
    ]  # fmt: skip
    done = await netns.run(*argv, check=False, timeout_s=seconds + IPERF_OMIT_S + 30)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise BenchError(
            f"iperf3 to {host}:{port} exited with {done.returncode}: "
            f"{done.stderr.decode(errors='replace').strip() or done.stdout[:500]!r}"
        ) from None
    if "error" in report:
        raise BenchError(f"iperf3 to {host}:{port}: {report['error']}")
    end = report["end"]
    received = end["sum_received"]
    usage = end["cpu_utilization_percent"]  # of the test's wall time, this host's process
    wall = float(received["seconds"])
    client = Cpu(usage["host_user"] / 100 * wall, usage["host_system"] / 100 * wall)
    return received["bits_per_second"] / 1e9, wall, client


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``fraction`` of them at or below."""
    ordered = sorted(values)
    rank = max(1, -(-round(fraction * len(ordered) * 1e6) // 1_000_000))  # ceil, float-safe
    return ordered[min(rank, len(ordered)) - 1]


@dataclasses.dataclass(frozen=True)
class Setup:
    kind: str
    count: int
    median_ms: float
    p90_ms: float
    min_ms: float


# -- the bench ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Bench:
    options: Options
    edge: Namespace
    peer: Namespace
    wg_edge: WireGuardInterface
    wg_peer: WireGuardInterface
    children: Children
    backend: str = ""
    wg_receive_buffer: int | None = None
    runs: list[Run] = dataclasses.field(default_factory=list)
    setup: list[Setup] = dataclasses.field(default_factory=list)
    #: per relay path, its edge and agent processes
    sides: dict[str, dict[str, Child]] = dataclasses.field(default_factory=dict)
    meter: CpuMeter | None = None

    async def start_processes(self) -> None:
        py, sides, opts = sys.executable, str(SIDES), self.options
        start = self.children.start
        servers = [
            (str(OVERLAY_PEER.ip), IPERF_BARE_PORT),
            (LOCALHOST, IPERF_TARGET_PORT),
            (str(UNDERLAY_PEER.ip), IPERF_VETH_PORT),
        ]
        iperf_servers = [
            await start(
                f"iperf3-server-{port}", self.peer, "iperf3", "-s", "-B", host, "-p", str(port)
            )
            for host, port in servers
        ]
        echo = await start(
            "echo", self.peer, py, sides, "echo", "--listen", str(OVERLAY_PEER.ip),
            "--listen", LOCALHOST, "--port", str(ECHO_PORT),
        )  # fmt: skip
        relay_args = [
            "--buffer-size", str(opts.buffer_size), *(["--instrument"] if opts.instrument else []),
        ]  # fmt: skip
        variants: list[tuple[str, int, int, list[str]]] = [("relay", FORWARDER_PORT, EDGE_PORT, [])]
        if opts.copy:
            variants.append(("relay-copy", FORWARDER_COPY_PORT, EDGE_COPY_PORT, ["--copy"]))
        for path, forwarder_port, edge_port, extra in variants:
            agent = await start(
                f"agent-{path}", self.peer, py, sides, "agent", "--listen", str(OVERLAY_PEER.ip),
                "--port", str(forwarder_port), "--allow", str(IPERF_TARGET_PORT),
                "--allow", str(ECHO_PORT), *relay_args, *extra,
            )  # fmt: skip
            edge = await start(
                f"edge-{path}", self.edge, py, sides, "edge", "--listen", LOCALHOST,
                "--port", str(edge_port), "--peer", str(OVERLAY_PEER.ip),
                "--forwarder-port", str(forwarder_port), "--target-port", str(IPERF_TARGET_PORT),
                *relay_args, *extra,
            )  # fmt: skip
            self.sides[path] = {"edge": edge, "agent": agent}
        for child in [echo, *(c for pair in self.sides.values() for c in pair.values())]:
            await child.ready()
        for host, port in servers:
            await wait_listening(self.peer, host, port)
        self.meter = CpuMeter(
            {
                "wg-edge": [self.wg_edge.pid],
                "wg-peer": [self.wg_peer.pid],
                "edge-py": [pair["edge"].pid for pair in self.sides.values()],
                "agent-py": [pair["agent"].pid for pair in self.sides.values()],
                "iperf3-srv": [child.pid for child in iperf_servers],
            }
        )

    async def counters(self) -> dict[str, int]:
        edge = await net_counters(self.edge, self.wg_edge.name)
        peer = await net_counters(self.peer, self.wg_peer.name)
        return {name: edge[name] + peer[name] for name in edge}

    async def throughput(self, round_: int, path: str, direction: str, seconds: int) -> Run:
        assert self.meter is not None
        sides = self.sides.get(path, {})
        host, port = {
            "veth": (str(UNDERLAY_PEER.ip), IPERF_VETH_PORT),
            "bare": (str(OVERLAY_PEER.ip), IPERF_BARE_PORT),
            "relay": (LOCALHOST, EDGE_PORT),
            "relay-copy": (LOCALHOST, EDGE_COPY_PORT),
        }[path]
        seen = {side: len(child.lines) for side, child in sides.items()}
        before = await self.counters()
        self.meter.start()
        gbps, wall, client_cpu = await iperf3(
            self.edge, host, port, seconds, reverse=direction == REVERSE
        )
        cpu, busy = self.meter.stop()
        after = await self.counters()
        cpu["iperf3-cli"] = client_cpu
        run = Run(
            round_, path, direction, gbps, wall, cpu, busy,
            tcp_retrans=after["tcp_retrans"] - before["tcp_retrans"],
            udp_drops=after["udp_drops"] - before["udp_drops"],
            wg_drops=after["wg_drops"] - before["wg_drops"],
        )  # fmt: skip
        for side, child in sides.items():
            self._add_relay(run, side, await self._relays(child, seen[side], expected=2))
        self.runs.append(run)
        say(
            f"  round {round_} {path:<10} {direction} {gbps:6.3f} Gbit/s  busy {busy:4.0%}  "
            f"retransmits {run.tcp_retrans}  drops: udp {run.udp_drops} wg {run.wg_drops}"
        )
        return run

    async def _relays(self, side: Child, start: int, expected: int) -> list[dict[str, Any]]:
        """The ``RELAY`` lines of one iperf3 run: its control and data connections."""
        deadline = time.monotonic() + RELAY_STATS_WAIT_S
        while len(found := side.messages("RELAY", start)) < expected:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        if not found:
            raise BenchError(f"{side.name} reported no relay: {side.stderr_tail()}")
        if errors := [entry["error"] for entry in found if "a_to_b_bytes" not in entry]:
            raise BenchError(f"{side.name} could not open a stream: {errors[0]}")
        return found

    def _add_relay(self, run: Run, side: str, relays: list[dict[str, Any]]) -> None:
        data = max(relays, key=lambda entry: entry["a_to_b_bytes"] + entry["b_to_a_bytes"])
        run.zero_copy[side] = bool(data["zero_copy"])
        if data["moves"]:  # a → b is towards the peer on both sides
            counts = data["moves"][1 if run.direction == REVERSE else 0]
            run.moves[side] = Moves(
                counts["reads"], counts["empty_reads"], counts["writes"],
                counts["full_writes"], counts["bytes"],
            )  # fmt: skip

    async def connection_setup(self) -> None:
        opts = self.options
        time_limit = max(10.0, opts.connections * 2 * 0.05)
        done = await self.edge.run(
            sys.executable, str(SIDES), "setup", "--peer", str(OVERLAY_PEER.ip),
            "--plain-port", str(ECHO_PORT), "--forwarder-port", str(FORWARDER_PORT),
            "--stream-port", str(ECHO_PORT), "--count", str(opts.connections),
            "--time-limit", str(time_limit), check=False, timeout_s=time_limit + 20,
        )  # fmt: skip
        lines = [line for line in done.stdout.decode().splitlines() if line.startswith("SETUP ")]
        if done.returncode != 0 or not lines:
            raise BenchError(
                f"connection setup exited with {done.returncode}: "
                f"{done.stderr.decode(errors='replace').strip()[-1500:]}"
            )
        timings: dict[str, list[float]] = json.loads(lines[-1].removeprefix("SETUP "))
        for kind in ("plain", "stream"):
            values = timings[kind]
            if not values:
                raise BenchError(f"connection setup timed no {kind} connection")
            self.setup.append(
                Setup(
                    kind,
                    len(values),
                    statistics.median(values),
                    percentile(values, 0.9),
                    min(values),
                )
            )
            say(f"  setup {kind:<6} median {self.setup[-1].median_ms:.3f} ms over {len(values)}")


async def wait_for_handshake(wg: WireGuardInterface, public_key: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if any(p.public_key == public_key and p.latest_handshake for p in await wg.stats()):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"no WireGuard handshake on {wg.name} within {READY_TIMEOUT_S:g} s")
        await asyncio.sleep(0.05)


async def bench(options: Options) -> Bench:
    for prefix in (EDGE_PREFIX, PEER_PREFIX):
        await cleanup_stale(prefix)  # what a run killed with SIGKILL left behind
    async with contextlib.AsyncExitStack() as stack:
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="heron-bench-")))
        edge = await stack.enter_async_context(Namespace.unique(EDGE_PREFIX))
        peer = await stack.enter_async_context(Namespace.unique(PEER_PREFIX))
        await veth(edge, peer, UNDERLAY_EDGE, UNDERLAY_PEER)
        wg_edge = WireGuardInterface(
            unique_name(WG_PREFIX), generate_private_key(), listen_port=WG_PORT,
            address=OVERLAY_EDGE, netns=edge.name,
        )  # fmt: skip
        wg_peer = WireGuardInterface(
            unique_name(WG_PREFIX), generate_private_key(), listen_port=WG_PORT,
            address=OVERLAY_PEER, netns=peer.name,
        )  # fmt: skip
        await stack.enter_async_context(wg_edge)
        await stack.enter_async_context(wg_peer)
        say(
            f"WireGuard ({wg_edge.backend}): {wg_edge.name} in {edge.name}, {wg_peer.name} in {peer.name}"
        )
        # as in Heron: the agent dials the edge and keeps the tunnel up; the edge learns its endpoint
        await wg_edge.set_peers(
            [WireGuardPeer(wg_peer.public_key, (IPv4Network(f"{OVERLAY_PEER.ip}/32"),))]
        )
        await wg_peer.set_peers(
            [
                WireGuardPeer(
                    wg_edge.public_key,
                    (IPv4Network(f"{OVERLAY_EDGE.ip}/32"),),
                    endpoint=f"{UNDERLAY_EDGE.ip}:{WG_PORT}",
                    persistent_keepalive=25,
                )
            ]
        )
        await wait_for_handshake(wg_edge, wg_peer.public_key)
        if options.wg_socket_buffer:
            if wg_edge.backend is not Backend.USERSPACE:
                raise BenchError("--wg-socket-buffer applies to wireguard-go only")
            for wg in (wg_edge, wg_peer):
                assert wg.pid is not None
                if not set_udp_buffers(wg.pid, WG_PORT, options.wg_socket_buffer):
                    raise BenchError(f"found no UDP socket of wireguard-go {wg.pid}")
        children = await stack.enter_async_context(Children(log_dir))
        run = Bench(options, edge, peer, wg_edge, wg_peer, children, str(wg_edge.backend))
        if wg_edge.backend is Backend.USERSPACE:
            run.wg_receive_buffer = await udp_receive_buffer(peer, WG_PORT)
        await run.start_processes()
        if options.veth:
            await run.throughput(0, "veth", options.directions[0], max(2, options.duration_s // 2))
        for round_ in range(1, options.rounds + 1):
            order = [(d, p) for d in options.directions for p in options.paths]
            for direction, path in order if round_ % 2 else reversed(order):
                await run.throughput(round_, path, direction, options.duration_s)
        await run.connection_setup()
        return run
    raise AssertionError("unreachable")  # the exit stack does not swallow exceptions


# -- report ------------------------------------------------------------------------------------

CPU_GROUPS = ("wg-edge", "wg-peer", "edge-py", "agent-py", "iperf3-cli", "iperf3-srv")


def report(run: Bench) -> list[str]:
    opts = run.options
    summary = summarize(run)
    wg_buffer = (
        f", wireguard-go UDP receive buffer {run.wg_receive_buffer // 1024} KiB"
        if run.wg_receive_buffer
        else ""
    )
    lines = [
        f"Heron tunnel bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"WireGuard {run.backend}{wg_buffer}",
        f"iperf3, 1 TCP stream, {opts.duration_s} s x {opts.rounds} interleaved rounds; relay "
        f"buffer {opts.buffer_size} B; throughput figures are medians over the rounds",
        "",
        "Each run: Gbit/s; in both namespaces, TCP segments retransmitted, datagrams dropped by full",
        "UDP buffers and packets dropped by the WireGuard links; CPU seconds by process; the",
        "machine's busy share (all CPUs); whether the data connection's relays spliced (edge/agent)",
        f"{'round':>5} {'path':<10} {'direction':<10} {'Gbit/s':>7} {'retr':>6} {'udp-dr':>6} "
        f"{'wg-dr':>6} " + " ".join(f"{g:>10}" for g in CPU_GROUPS) + f" {'busy':>5} {'splice':>7}",
    ]
    for r in run.runs:
        splice = "/".join(
            "yes" if r.zero_copy[side] else "no"
            for side in ("edge", "agent")
            if side in r.zero_copy
        )
        lines.append(
            f"{r.round:>5} {r.path:<10} {r.direction:<10} {r.gbps:7.3f} {r.tcp_retrans:6d} "
            f"{r.udp_drops:6d} {r.wg_drops:6d} "
            + " ".join(f"{r.cpu[g].total_s if g in r.cpu else 0.0:10.2f}" for g in CPU_GROUPS)
            + f" {r.machine_busy:5.0%} {splice:>7}"
        )
    lines += [
        "",
        "CPU seconds per GB carried, by process, and the share of it in the kernel (medians)",
        f"{'path':<10} {'direction':<10} "
        + " ".join(f"{g:>10}" for g in CPU_GROUPS)
        + f" {'total':>7}",
    ]
    for path, direction in _series(run):
        runs = [r for r in run.runs if r.path == path and r.direction == direction]
        cells = []
        for group in CPU_GROUPS:
            per_gb = statistics.median(r.cpu[group].total_s / r.gigabytes for r in runs)
            used = sum(r.cpu[group].total_s for r in runs)
            kernel = sum(r.cpu[group].sys_s for r in runs) / used if used > 0.05 else None
            cells.append(f"{per_gb:5.2f}" + (f" {kernel:3.0%}" if kernel is not None else " " * 4))
        total = statistics.median(r.cpu_total_s / r.gigabytes for r in runs)
        lines.append(
            f"{path:<10} {direction:<10} " + " ".join(f"{c:>10}" for c in cells) + f" {total:7.2f}"
        )
    if opts.instrument:
        lines += [
            "",
            "Relay moves on the data connection, in the direction of the data (--instrument)",
            f"{'round':>5} {'path':<10} {'direction':<10} {'side':<6} {'reads/s':>8} "
            f"{'KiB/read':>9} {'waits/s':>8} {'writes/read':>11} {'full/s':>7}",
        ]
        for r in run.runs:
            for side, m in r.moves.items():
                lines.append(
                    f"{r.round:>5} {r.path:<10} {r.direction:<10} {side:<6} "
                    f"{m.reads / r.seconds:8.0f} {m.bytes / max(m.reads, 1) / 1024:9.1f} "
                    f"{m.waits / r.seconds:8.0f} {m.writes / max(m.reads, 1):11.2f} "
                    f"{m.full_writes / r.seconds:7.0f}"
                )
    lines += [
        "",
        f"{'path':<10} {'direction':<10} {'median':>7} {'best':>7} {'vs bare':>8}  "
        "(Gbit/s; vs bare: ratio of the medians)",
    ]
    for path, direction in _series(run):
        values = [r.gbps for r in run.runs if r.path == path and r.direction == direction]
        bare = _gbps(run, "bare", direction)
        lines.append(
            f"{path:<10} {direction:<10} {statistics.median(values):7.3f} {max(values):7.3f} "
            f"{statistics.median(values) / bare:7.2f}x"
        )
    lines += [
        "",
        f"Connection setup to a 1-byte echo ({run.setup[0].count} of each, sequential, alternating)",
        f"{'kind':<12} {'median ms':>10} {'p90 ms':>8} {'min ms':>8}",
    ]
    for s in run.setup:
        label = "plain TCP" if s.kind == "plain" else "open_stream"
        lines.append(f"{label:<12} {s.median_ms:10.3f} {s.p90_ms:8.3f} {s.min_ms:8.3f}")
    ratios = ", ".join(
        f"{direction} {_gbps(run, 'relay', direction) / _gbps(run, 'bare', direction):.3f}"
        for direction in opts.directions
    )
    met = "met" if summary["ratio_throughput"] >= TARGET_RATIO else "NOT met"
    lines += [
        "",
        f"relay/bare throughput (medians): {ratios}; target >= {TARGET_RATIO} in every "
        f"direction: {met}",
        f"open_stream/plain connection setup (medians): {summary['ratio_setup']:.2f}",
        "RESULT " + " ".join(f"{name}={format_value(value)}" for name, value in summary.items()),
    ]
    return lines


def _series(run: Bench) -> list[tuple[str, str]]:
    """(path, direction) in the report's order: each direction's paths, then the veth run."""
    series = [(p, d) for d in run.options.directions for p in run.options.paths]
    return series + [(r.path, r.direction) for r in run.runs if r.path == "veth"]


def _gbps(run: Bench, path: str, direction: str, pick: str = "median") -> float:
    values = [r.gbps for r in run.runs if r.path == path and r.direction == direction]
    return max(values) if pick == "best" else statistics.median(values)


def summarize(run: Bench) -> dict[str, float | int]:
    """The RESULT line: medians over the rounds unless a name says ``best``.

    ``ratio_throughput`` is relay/bare in the worse of the measured directions (edge → peer and
    peer → edge), so that the target holds only if it holds both ways; ``_fwd``/``_rev`` give each.
    """
    opts = run.options
    setup = {s.kind: s for s in run.setup}
    out: dict[str, float | int] = {}
    ratios = []
    for direction in opts.directions:
        tag = "" if direction == FORWARD else "_rev"
        bare, relay = _gbps(run, "bare", direction), _gbps(run, "relay", direction)
        ratios.append(relay / bare)
        out |= {
            f"bare{tag}_gbps": bare,
            f"relay{tag}_gbps": relay,
            f"bare{tag}_best_gbps": _gbps(run, "bare", direction, "best"),
            f"relay{tag}_best_gbps": _gbps(run, "relay", direction, "best"),
        }
        if opts.copy:
            out[f"relay_copy{tag}_gbps"] = _gbps(run, "relay-copy", direction)
    out["ratio_throughput"] = min(ratios)
    for direction in opts.directions:
        tag = "_fwd" if direction == FORWARD else "_rev"
        out[f"ratio_throughput{tag}"] = _gbps(run, "relay", direction) / _gbps(
            run, "bare", direction
        )
        if opts.copy:
            out[f"ratio_throughput_copy{tag}"] = _gbps(run, "relay-copy", direction) / _gbps(
                run, "bare", direction
            )
    if opts.veth:
        out["veth_gbps"] = statistics.median(r.gbps for r in run.runs if r.path == "veth")
    for path in ("bare", "relay"):
        out[f"cpu_s_per_gb_{path}"] = statistics.median(
            r.cpu_total_s / r.gigabytes for r in run.runs if r.path == path
        )
        out[f"busy_{path}"] = statistics.median(r.machine_busy for r in run.runs if r.path == path)
    out |= {
        "setup_plain_ms": setup["plain"].median_ms,
        "setup_plain_p90_ms": setup["plain"].p90_ms,
        "setup_stream_ms": setup["stream"].median_ms,
        "setup_stream_p90_ms": setup["stream"].p90_ms,
        "ratio_setup": setup["stream"].median_ms / setup["plain"].median_ms,
        "rounds": opts.rounds,
        "duration_s": opts.duration_s,
        "connections": setup["plain"].count,
    }
    return out


def format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"


# -- main --------------------------------------------------------------------------------------


def say(message: str) -> None:
    """Progress, on stderr: stdout holds the table and the RESULT line only."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def preflight() -> None:
    if os.geteuid() != 0:
        raise BenchError(
            "bench/tunnel.py must run as root: it creates network namespaces, veth pairs and "
            "WireGuard interfaces (try: sudo uv run python bench/tunnel.py)"
        )
    missing = [
        tool for tool in ("ip", "ss", "iperf3", "wg", "wireguard-go") if not shutil.which(tool)
    ]
    if missing:
        raise BenchError(
            f"missing: {', '.join(missing)} (Debian: apt-get install iproute2 iperf3 "
            "wireguard-tools wireguard-go)"
        )


async def amain(options: Options) -> Bench:
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    say(f"Heron tunnel bench: about {options.estimate_s():.0f} s")
    started = time.monotonic()
    async with asyncio.timeout(RUN_LIMIT_S):
        result = await bench(options)
    say(f"done in {time.monotonic() - started:.0f} s; namespaces and interfaces removed")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(sys.argv[1:] if argv is None else argv)
    configure_logging("bench-tunnel", level="warning", fmt=LogFormat.CONSOLE)
    try:
        preflight()
        result = asyncio.run(amain(options))
    except BenchError as exc:
        say(f"bench/tunnel.py: {exc}")
        return 1
    except TimeoutError:
        say(f"bench/tunnel.py: the run took longer than {RUN_LIMIT_S:.0f} s and was stopped")
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError) as exc:
        say("bench/tunnel.py: interrupted; namespaces, interfaces and processes removed")
        return 130 if isinstance(exc, KeyboardInterrupt) else 128 + signal.SIGTERM
    sys.stdout.write("\n".join(report(result)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
