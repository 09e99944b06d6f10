"""TCP through the Heron edge (an L4 ``tcp`` service) against nginx ``stream`` doing the same job.

Three network namespaces, created and deleted by the bench: a *client* host, an *edge* host and
a *peer* host, joined by veths (client-edge 10.234.1.0/24, edge-peer 10.234.0.0/24). Heron runs
as a user runs it: management (SQLite, embedded NATS) and ``heron-edge`` on the edge host,
``heron up`` on the peer, two ``tcp`` services made through the REST API. On the peer: an
``iperf3 -s`` and a *hello* server (nginx ``stream`` with ``return``: it sends one line and
closes), both on all addresses. In the same run, interleaved round by round:

- **heron**: the client → the edge's listen port (its L4 listener: accept, a stream through the
  tunnel, relay) → WireGuard → the agent's forwarder → the backend on the peer's 127.0.0.1;
- **nginx**: the client → nginx ``stream`` on the edge host (as many workers) ``proxy_pass`` to
  the backend on the peer's overlay address, through the WireGuard interface the edge created.

Two measures: **throughput**, ``iperf3 -c`` from the client (one stream by default, both
directions: the client sends, and ``-R``: the backend sends); **connections/s**, ``--clients``
processes of ``bench/_l4_client.py`` keeping ``--concurrency`` connections going, each one
connect, read the hello line until the server closes, close.

Needs root, nginx with the stream module (libnginx-mod-stream), iperf3, curl, iproute2,
wireguard-tools and wireguard-go (or the kernel module); as root it installs the missing Debian
packages. Run from the repository root::

    uv run python bench/l4.py [--duration 6] [--rounds 3] [--concurrency 32] [--workers 1]

Prints a table, then as its last line ``RESULT name=value …`` (bench/README.md lists the names).
Everything it creates — namespaces, interfaces, processes — is removed at the end, on error, on
Ctrl-C and on SIGTERM.
"""

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _netlab as netlab

NAMES = netlab.Names(
    bench="l4", client="hblc", edge="hble", peer="hblp", edge_wg="hblw", agent_wg="hbla"
)
HERON, NGINX = "heron", "nginx"
IPERF, HELLO = "iperf", "hello"
#: edge host, all addresses: Heron's listen port and nginx's, per backend
PORTS = {(HERON, IPERF): 20001, (NGINX, IPERF): 20002, (HERON, HELLO): 20003,
         (NGINX, HELLO): 20004}  # fmt: skip
#: peer host, all addresses: iperf3 -s and the hello server
BACKEND_PORTS = {IPERF: 5201, HELLO: 7000}
#: the edge's main (TLS) port: HERON_PROXY_ADDRESS; the L4 listeners bind on its host
EDGE_TLS_PORT = 8443
HELLO_LINE = "hello from the peer\n"
FORWARD, REVERSE, CONNECTIONS = "fwd", "rev", "conn"
#: the Debian path of the stream module, which nginx loads
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
#: warm-up runs of each test and system, not counted
WARMUP_S = 2
#: iperf3's omitted first seconds (slow start), on top of --duration
OMIT_S = 1
#: a connection's deadline in the connection-rate runs: slower ones count as timeouts (errors)
CONNECTION_TIMEOUT_S = 5.0
#: the clients start together this long after the bench starts them (Python's start-up); the
#: run's measures start this much before them
CLIENT_START_S, SAMPLING_LEAD_S = 1.0, 0.1
CLIENT_SCRIPT = Path(__file__).with_name("_l4_client.py")
#: at most this many connections per client process and run
MAX_CONNECTIONS = 500_000
#: setup (namespaces, management, edge, agent, services) and teardown
FIXED_COST_S = 30.0
#: the issue's target: Heron >= 0.9x nginx's throughput and >= 0.5x its connections/s
TARGET_THROUGHPUT_RATIO, TARGET_CONN_RATIO = 0.9, 0.5

BACKEND_CONF = (
    f"load_module {STREAM_MODULE};"
    + netlab.NGINX_MAIN
    + """
stream {{
    server {{
        listen 0.0.0.0:{port} backlog=4096;
        return "{line}";
    }}
}}
"""
)

REFERENCE_CONF = (
    f"load_module {STREAM_MODULE};"
    + netlab.NGINX_MAIN
    + """
stream {{
    server {{
        listen {iperf_port} backlog=4096;
        proxy_pass {upstream}:{iperf_backend};
    }}
    server {{
        listen {hello_port} backlog=4096;
        proxy_pass {upstream}:{hello_backend};
    }}
}}
"""
)


# -- options -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Options:
    duration_s: int
    rounds: int
    directions: tuple[str, ...]
    streams: int
    concurrency: int
    clients: int
    workers: int
    systems: tuple[str, ...]
    log_level: str
    keep: bool

    def estimate_s(self) -> float:
        iperf = self.duration_s + OMIT_S + 1.5  # iperf3's start, the counters
        conn = self.duration_s + CLIENT_START_S + 0.5
        systems = len(self.systems)
        warmup = systems * (2 * WARMUP_S + CLIENT_START_S + 3)
        per_round = systems * (len(self.directions) * iperf + conn)
        return FIXED_COST_S + warmup + self.rounds * per_round


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        description="Heron L4 bench: TCP throughput and connections/s through the Heron edge vs "
        "nginx stream doing the same job."
    )
    netlab.common_options(
        parser,
        duration_s=6,
        run="measured run",
        log_level_help="HERON_LOG_LEVEL of the edge and the agent (warning: no line per "
        "connection)",
    )
    parser.add_argument(
        "--direction",
        default="both",
        choices=["forward", "reverse", "both"],
        help="throughput: forward (the client sends), reverse (iperf3 -R: the backend sends)",
    )
    parser.add_argument("--streams", type=int, default=1, help="iperf3 -P: parallel streams (1)")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="connections at once, all clients (32)"
    )
    parser.add_argument("--clients", type=int, default=2, help="connection client processes (2)")
    parser.add_argument(
        "--system",
        default="both",
        choices=["heron", "nginx", "both"],
        help="measure one side only (for debugging: no ratios then)",
    )
    args = parser.parse_args(argv)
    netlab.check_ranges(parser, args, {"duration": (2, 30), "streams": (1, 16), "clients": (1, 8)})
    if not args.clients <= args.concurrency <= 1024:
        parser.error("--concurrency must be --clients to 1024")
    directions = {"forward": (FORWARD,), "reverse": (REVERSE,), "both": (FORWARD, REVERSE)}
    options = Options(
        duration_s=args.duration,
        rounds=args.rounds,
        directions=directions[args.direction],
        streams=args.streams,
        concurrency=args.concurrency,
        clients=args.clients,
        workers=args.workers,
        systems=(HERON, NGINX) if args.system == "both" else (args.system,),
        log_level=args.log_level,
        keep=args.keep,
    )
    netlab.refuse_long(parser, options.estimate_s(), "fewer rounds, shorter runs or one direction")
    return options


#: the process groups whose CPU and memory each run records ("client": iperf3 -c or the
#: connection clients, from the bench's RUSAGE_CHILDREN)
GROUPS = ("edge", "wg-edge", "agent", "wg-peer", "iperf3", "hello", "nginx", "client")
#: the groups whose cost per GB or per connection the report shows
COST_GROUPS = ("edge", "agent", "nginx", "wg-edge", "wg-peer", "client")


# -- a run -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Run(netlab.Measured):
    round: int
    system: str
    test: str  # FORWARD, REVERSE (bytes) or CONNECTIONS
    amount: int  # bytes the receiver got, or connections that ended with the hello line
    seconds: float
    errors: int  # connections: timeouts, refused/reset, wrong bytes
    latency_ms: tuple[float, float, float, float]  # connections: p50, p90, p99, max

    @property
    def rate(self) -> float:
        """Bit/s or connections/s."""
        per_unit = 8 if self.test != CONNECTIONS else 1
        return self.amount * per_unit / self.seconds if self.seconds else 0.0

    @property
    def gbps(self) -> float:
        return self.rate / 1e9

    def per_unit(self, cpu_s: float) -> float:
        """``cpu_s`` per GB carried (s), or per connection (µs)."""
        if not self.amount:
            return 0.0
        if self.test == CONNECTIONS:
            return cpu_s / self.amount * 1e6
        return cpu_s / (self.amount / 1e9)

    def cost(self) -> float:
        """The proxy's CPU (Heron: edge + agent; nginx: its workers) per GB or connection."""
        names = ("nginx",) if self.system == NGINX else ("edge", "agent")
        return self.per_unit(sum(self.cpu[name].total_s for name in names))


def percentile(sorted_values: Sequence[int], share: float) -> float:
    """Nearest rank, in the values' unit; 0 for none."""
    if not sorted_values:
        return 0.0
    return float(sorted_values[max(1, math.ceil(share * len(sorted_values))) - 1])


def parse_iperf(stdout: str, what: str) -> tuple[int, float]:
    """(bytes the receiver got, seconds) from ``iperf3 -J``; ``netlab.BenchError`` with its error."""
    try:
        report: dict[str, Any] = json.loads(stdout)
    except ValueError:
        raise netlab.BenchError(
            f"iperf3 {what} printed no JSON report:\n{stdout[-1500:]}"
        ) from None
    if "error" in report:
        raise netlab.BenchError(f"iperf3 {what}: {report['error']}")
    received = report["end"]["sum_received"]
    return int(received["bytes"]), float(received["seconds"])


def parse_clients(outputs: Sequence[str]) -> dict[str, Any]:
    """The connection clients' ``CONN`` lines, added up; latencies sorted."""
    total: dict[str, Any] = {"ok": 0, "wrong": 0, "timeouts": 0, "errors": {}, "seconds": 0.0}
    latencies: list[int] = []
    for stdout in outputs:
        lines = [line for line in stdout.splitlines() if line.startswith("CONN ")]
        if not lines:
            raise netlab.BenchError(f"a connection client printed no report:\n{stdout[-1500:]}")
        one = json.loads(lines[-1].removeprefix("CONN "))
        for key in ("ok", "wrong", "timeouts"):
            total[key] += one[key]
        for name, count in one["errors"].items():
            total["errors"][name] = total["errors"].get(name, 0) + count
        total["seconds"] = max(total["seconds"], one["seconds"])
        for value, count in one["latency_counts"]:
            latencies += [value] * count
    total["latencies_us"] = sorted(latencies)
    total["amount"] = total["ok"]
    total["failed"] = total["wrong"] + total["timeouts"] + sum(total["errors"].values())
    return total


# -- the bench ---------------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class L4Bench(netlab.Lab):
    """The lab and the bench's options; ``runs`` holds the measurements."""

    options: Options
    cert_dir: Path
    runs: list[Run] = dataclasses.field(default_factory=list)

    # -- starting things

    async def start_backends(self) -> None:
        iperf = await self.hosts.children.start(
            "iperf3", self.hosts.peer, "iperf3", "-s", "-p", str(BACKEND_PORTS[IPERF])
        )
        self.procs["iperf3"] = iperf
        config = BACKEND_CONF.format(
            prefix="{prefix}", workers=1, port=BACKEND_PORTS[HELLO],
            line=HELLO_LINE.replace("\n", "\\n"),
        )  # fmt: skip
        self.procs["hello"] = await self.start_nginx("hello", self.hosts.peer, config)
        await netlab.wait_listening(self.hosts.peer, BACKEND_PORTS[IPERF], iperf)
        await netlab.wait_listening(self.hosts.peer, BACKEND_PORTS[HELLO], self.procs["hello"])

    async def start_services(self) -> None:
        """Wait for the agent's login, then make a ``tcp`` service per backend on its peer."""
        await self.wait_for_peer()
        for backend in (IPERF, HELLO):
            await self.api_ok(
                "POST", "/api/services",
                {"name": f"bench-{backend}", "domain": f"{backend}.{netlab.PROXY_DOMAIN}", "mode": "tcp",
                 "listen_port": PORTS[HERON, backend], "targets": [
                    {"target_type": "peer", "target_id": self.peer_id,
                     "port": BACKEND_PORTS[backend]},
                 ]},
            )  # fmt: skip

    async def start_reference(self) -> None:
        config = REFERENCE_CONF.format(
            prefix="{prefix}", workers=self.options.workers, upstream=self.peer_overlay,
            iperf_port=PORTS[NGINX, IPERF], iperf_backend=BACKEND_PORTS[IPERF],
            hello_port=PORTS[NGINX, HELLO], hello_backend=BACKEND_PORTS[HELLO],
        )  # fmt: skip
        self.procs["nginx"] = await self.start_nginx("nginx", self.hosts.edge, config)
        for backend in (IPERF, HELLO):
            await netlab.wait_listening(self.hosts.edge, PORTS[NGINX, backend], self.procs["nginx"])

    async def wait_heron_listening(self) -> None:
        """The edge binds a ``tcp`` service's port once management told it of the service."""

        async def listening() -> bool:
            self.check_alive()
            ports = [PORTS[HERON, backend] for backend in (IPERF, HELLO)]
            found = await self.hosts.edge.run("ss", "-Hltn", check=False)
            text = found.stdout.decode()
            return all(f":{port} " in text for port in ports)

        await netlab.eventually(
            f"the edge listening on the services' ports {PORTS[HERON, IPERF]} and "
            f"{PORTS[HERON, HELLO]}", listening,
            why=lambda: self.heron_errors() + "\n" + self.procs["edge"].log_tail(),
        )  # fmt: skip

    # -- checking and measuring

    async def connect(
        self,
        system: str,
        seconds: float,
        *,
        clients: int,
        concurrency: int,
        limit: int,
        start_at: float = 0.0,
    ) -> dict[str, Any]:
        """The connection clients against ``system``'s hello port, starting together at
        ``start_at`` (``time.time()``; 0: at once)."""
        shares = [concurrency // clients + (i < concurrency % clients) for i in range(clients)]
        deadline_s = max(0.0, start_at - time.time()) + seconds + CONNECTION_TIMEOUT_S + 10
        argv = [
            sys.executable, str(CLIENT_SCRIPT), str(netlab.FRONT_EDGE.ip),
            str(PORTS[system, HELLO]), "--seconds", str(seconds), "--max", str(limit),
            "--timeout", str(CONNECTION_TIMEOUT_S), "--expect", HELLO_LINE.encode().hex(),
            "--start-at", f"{start_at:.3f}",
        ]  # fmt: skip
        runs = [
            self.hosts.client.run(
                *argv, "--concurrency", str(share), check=False, timeout_s=deadline_s
            )
            for share in shares
        ]
        done = await asyncio.gather(*runs)
        for one in done:
            if one.returncode != 0:
                raise netlab.BenchError(
                    f"a connection client against {system} exited with {one.returncode}: "
                    f"{one.stderr.decode(errors='replace').strip()[-800:]}"
                )
        return parse_clients([one.stdout.decode(errors="replace") for one in done])

    async def verify(self, system: str, timeout_s: float = netlab.READY_TIMEOUT_S) -> None:
        """Wait for one connection through ``system`` to bring the hello line."""
        last: list[dict[str, Any]] = [{}]

        async def served() -> bool:
            self.check_alive()
            last[0] = await self.connect(system, 0.5, clients=1, concurrency=1, limit=1)
            return bool(last[0]["ok"])

        def why() -> str:
            found = {k: v for k, v in last[0].items() if k != "latencies_us" and v}
            return f"; last: {found}" + self.heron_errors()

        await netlab.eventually(f"the hello line through {system}", served, timeout_s, why=why)

    async def measure_run(self, round_: int, system: str, test: str, seconds: int) -> Run:
        """One iperf3 run or one connection-rate run, with the CPU, memory and counters."""
        groups = ("iperf3", "hello", "nginx")
        if test == CONNECTIONS:  # measured from when the clients, started beforehand, begin
            opts = self.options
            start_at = time.time() + CLIENT_START_S
            async with asyncio.TaskGroup() as group:
                clients = group.create_task(
                    self.connect(
                        system, seconds, clients=opts.clients, concurrency=opts.concurrency,
                        limit=MAX_CONNECTIONS, start_at=start_at,
                    )
                )  # fmt: skip
                await asyncio.sleep(max(0.0, start_at - time.time() - SAMPLING_LEAD_S))
                sampling = await self.start_sampling(*groups)
            found = clients.result()
        else:
            sampling = await self.start_sampling(*groups)
            found = await self.iperf(system, test, seconds)
        measured = await sampling.finish("client")
        latencies = found.get("latencies_us", [])
        p50, p90, p99, top = (percentile(latencies, share) / 1000 for share in (0.5, 0.9, 0.99, 1))
        run = Run(
            round=round_, system=system, test=test, amount=found["amount"],
            seconds=found["seconds"], errors=found.get("failed", 0), latency_ms=(p50, p90, p99, top),
            **measured,
        )  # fmt: skip
        self.note_run(run, found, sampling.log_offsets)
        if round_:
            self.runs.append(run)
        self.check_alive()
        return run

    async def iperf(self, system: str, test: str, seconds: int) -> dict[str, Any]:
        omit = OMIT_S if seconds > WARMUP_S else 0
        done = await self.hosts.client.run(
            "iperf3", "-c", str(netlab.FRONT_EDGE.ip), "-p", str(PORTS[system, IPERF]), "-J",
            "-t", str(seconds), "-O", str(omit), "-P", str(self.options.streams),
            "--connect-timeout", "5000", *(["-R"] if test == REVERSE else []),
            check=False, timeout_s=seconds + omit + 20,
        )  # fmt: skip
        what = f"against {system} ({test})"
        amount, elapsed = parse_iperf(done.stdout.decode(errors="replace"), what)
        if done.returncode != 0:
            raise netlab.BenchError(f"iperf3 {what} exited with {done.returncode}")
        return {"amount": amount, "seconds": elapsed}

    def note_run(self, run: Run, found: dict[str, Any], offsets: dict[str, int]) -> None:
        """Progress; Heron's logged errors as a NOTE; a run with errors as a PROBLEM."""
        label = "warm-up" if run.round == 0 else f"round {run.round}"
        if run.test == CONNECTIONS:
            p50, _, p99, _ = run.latency_ms
            figures = f"{run.rate:9.0f} conn/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
        else:
            figures = f"{run.gbps:9.3f} Gbit/s"
        errors = ""
        if run.errors:
            errors = (
                f"  ERRORS: timeouts {found['timeouts']} wrong {found['wrong']} "
                f"{' '.join(f'{k} {v}' for k, v in found['errors'].items())}"
            )
        netlab.say(
            f"  {label:<8} {run.system:<6} {run.test:<5} {figures}  busy {run.busy:4.0%}{errors}"
        )
        if run.system == HERON and (logged := self.heron_errors(offsets)):
            netlab.say(logged.strip("\n"))
            self.notes.append(f"{run.system} {run.test} {label}: {logged.strip()}")
        if run.round and run.errors:
            self.problems.append(
                f"{run.system} {run.test} round {run.round}: {run.errors} failed connections "
                f"({errors.strip().removeprefix('ERRORS: ')}) of {run.amount + run.errors}"
            )

    async def set_up(self) -> None:
        """Start everything and check one connection through each path."""
        started = time.monotonic()
        await self.start_management()
        await self.start_backends()
        await self.start_edge(
            "edge", log_level=self.options.log_level, workers=self.options.workers,
            env={
                "HERON_PROXY_ADDRESS": f":{EDGE_TLS_PORT}",
                "HERON_PROXY_CERTIFICATE_DIRECTORY": str(self.cert_dir),
            },
        )  # fmt: skip
        await self.start_agent(log_level=self.options.log_level)
        await self.start_services()
        await self.check_route()
        if NGINX in self.options.systems:
            await self.start_reference()
            await self.verify(NGINX)
        if HERON in self.options.systems:
            await self.wait_heron_listening()
            await self.verify(HERON)
        netlab.say(
            f"up in {time.monotonic() - started:.1f} s: peer {self.peer_overlay} via {self.route_dev}"
        )

    async def measure(self) -> None:
        """Warm-up, then the interleaved rounds."""
        systems = self.options.systems
        for system in systems:
            await self.measure_run(0, system, FORWARD, WARMUP_S)
            await self.measure_run(0, system, CONNECTIONS, WARMUP_S)
        for round_ in range(1, self.options.rounds + 1):
            order = systems if round_ % 2 else systems[::-1]
            for test in (*self.options.directions, CONNECTIONS):
                for system in order:
                    await self.measure_run(round_, system, test, self.options.duration_s)
        for system in systems:  # still serving after the load
            try:
                await self.verify(system, timeout_s=5)
            except netlab.BenchError as exc:
                self.problems.append(f"after the rounds: {exc}")


async def bench(options: Options, print_report: Callable[[L4Bench], None]) -> L4Bench:
    async with contextlib.AsyncExitStack() as stack:
        hosts = await netlab.open_hosts(stack, NAMES)
        cert_dir = hosts.work / "certs"
        netlab.make_certificate(cert_dir, f"*.{netlab.PROXY_DOMAIN}")
        run = L4Bench(hosts=hosts, options=options, cert_dir=cert_dir)
        await run.set_up()
        await run.measure()
        if options.keep:
            print_report(run)
            await netlab.keep_up(
                run,
                f"ip netns exec {hosts.client.name} iperf3 -c {netlab.FRONT_EDGE.ip} "
                f"-p {PORTS[HERON, IPERF]}",
            )
        return run
    raise AssertionError("unreachable")  # the exit stack does not swallow exceptions


# -- report ------------------------------------------------------------------------------------


def runs_of(run: L4Bench, system: str, test: str) -> list[Run]:
    return [r for r in run.runs if r.system == system and r.test == test]


def median(run: L4Bench, system: str, test: str, value: Callable[[Run], float]) -> float:
    return statistics.median(value(r) for r in runs_of(run, system, test))


def paired_ratio(run: L4Bench, test: str, value: Callable[[Run], float]) -> float:
    """Heron's ``value`` over nginx's, run against run in the same round, and the median of
    those: a round's two runs are seconds apart, so a change of the shared machine's speed
    between rounds (these VMs have phases 30 % apart) cancels out, where a ratio of the two
    medians can pair one system's fast runs with the other's slow ones."""
    ratios = []
    for round_ in sorted({r.round for r in run.runs}):
        pair = {r.system: value(r) for r in run.runs if r.round == round_ and r.test == test}
        if pair.get(NGINX):
            ratios.append(pair[HERON] / pair[NGINX])
    return statistics.median(ratios)


def tests(run: L4Bench) -> tuple[str, ...]:
    return (*run.options.directions, CONNECTIONS)


def report(run: L4Bench) -> list[str]:
    opts = run.options
    lines = [
        f"Heron L4 bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs; "
        f"{opts.duration_s} s x {opts.rounds} interleaved rounds; iperf3 -P {opts.streams} "
        f"(+{OMIT_S} s omitted), {opts.concurrency} connections at once from {opts.clients} "
        f"clients; Heron edge {opts.workers} workers (log level {opts.log_level}), nginx stream "
        f"worker_processes {opts.workers}",
        f"tunnel: the edge's WireGuard interface {run.route_dev} to the peer {run.peer_overlay}",
        "",
        "Each run: Gbit/s (fwd: the client sends; rev: the backend sends) or connections/s with "
        "their time (ms), failed connections, CPU seconds by process group, the machine's busy "
        "share, packets through the edge's WireGuard interface, TCP connections the edge host "
        "opened, TCP retransmissions",
        f"{'round':>5} {'system':<6} {'test':<5} {'rate':>9} {'p50':>6} {'p99':>6} {'errors':>6} "
        + " ".join(f"{g:>7}" for g in (*GROUPS, *netlab.REST))
        + f" {'busy':>5} {'wg pkts':>8} {'opened':>6} {'retr':>5}",
    ]
    for r in run.runs:
        rate = f"{r.rate:9.0f}" if r.test == CONNECTIONS else f"{r.gbps:9.3f}"
        lines.append(
            f"{r.round:>5} {r.system:<6} {r.test:<5} {rate} {r.latency_ms[0]:6.2f} "
            f"{r.latency_ms[2]:6.2f} {r.errors:6d} "
            + " ".join(f"{r.cpu[g].total_s:7.2f}" for g in (*GROUPS, *netlab.REST))
            + f" {r.busy:5.0%} {r.wg_packets:8d} {r.opened:6d} {r.retransmits:5d}"
        )
    lines += [
        "",
        "CPU per GB carried (s; fwd, rev) or per connection (µs; conn) by process group, with "
        "the share of it in the kernel; proxy: Heron's edge + agent, or nginx (medians)",
        f"{'system':<6} {'test':<5} "
        + " ".join(f"{g:>12}" for g in COST_GROUPS)
        + f" {'proxy':>8}",
    ]
    for system in opts.systems:
        for test in tests(run):
            mine = runs_of(run, system, test)
            cells = []
            for group in COST_GROUPS:
                cost = statistics.median(r.per_unit(r.cpu[group].total_s) for r in mine)
                used = sum(r.cpu[group].total_s for r in mine)
                kernel = sum(r.cpu[group].sys_s for r in mine) / used if used > 0.05 else None
                cells.append(
                    f"{cost:7.1f}" + (f" {kernel:4.0%}" if kernel is not None else " " * 5)
                )
            proxy = median(run, system, test, Run.cost)
            lines.append(f"{system:<6} {test:<5} " + " ".join(cells) + f" {proxy:8.1f}")
    lines += [
        "",
        "Memory during the runs (peak RSS / PSS, MiB; medians)",
    ]
    for system, group, what in (
        (HERON, "edge", f"heron-edge control + {opts.workers} workers"),
        (HERON, "agent", "heron agent (heron up)"),
        (NGINX, "nginx", f"nginx master + {opts.workers} workers"),
    ):
        if system in opts.systems:
            mine = [r for r in run.runs if r.system == system]
            rss = statistics.median(r.rss_kib[group] for r in mine) / 1024
            pss = statistics.median(r.pss_kib[group] for r in mine) / 1024
            lines.append(f"{system:<6} {what:<34} {rss:7.1f} {pss:7.1f}")
    lines += [
        "",
        f"{'system':<6} "
        + " ".join(f"{t + ' Gbit/s':>11}" for t in opts.directions)
        + f" {'conn/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>7}  (medians; errors: total)",
    ]
    for system in opts.systems:
        lines.append(
            f"{system:<6} "
            + " ".join(f"{median(run, system, t, lambda r: r.gbps):11.3f}" for t in opts.directions)
            + f" {median(run, system, CONNECTIONS, lambda r: r.rate):8.0f}"
            f" {median(run, system, CONNECTIONS, lambda r: r.latency_ms[0]):7.2f}"
            f" {median(run, system, CONNECTIONS, lambda r: r.latency_ms[2]):7.2f}"
            f" {sum(r.errors for r in run.runs if r.system == system):7d}"
        )
    summary = summarize(run)
    if "ratio_conn_rate" in summary:
        met = (
            summary["ratio_throughput"] >= TARGET_THROUGHPUT_RATIO
            and summary["ratio_conn_rate"] >= TARGET_CONN_RATIO
            and not run.problems
        )
        per_direction = ", ".join(
            f"{t} {summary[f'ratio_throughput_{t}']:.3f}" for t in opts.directions
        )
        lines += [
            "",
            "heron/nginx, medians of the per-round ratios (ratios of the medians: throughput "
            f"{summary['ratio_throughput_of_medians']:.3f}, connections/s "
            f"{summary['ratio_conn_rate_of_medians']:.3f}):",
            f"throughput {summary['ratio_throughput']:.3f} (the worse direction; "
            f"{per_direction}), connections/s {summary['ratio_conn_rate']:.3f}; target "
            f"throughput >= {TARGET_THROUGHPUT_RATIO} and connections/s >= {TARGET_CONN_RATIO}, "
            f"no failed connections: {'met' if met else 'NOT met'}",
        ]
    lines += [f"NOTE: {note}" for note in run.notes]
    lines += [f"PROBLEM: {problem}" for problem in run.problems]
    lines.append(netlab.result_line(summary))
    return lines


def summarize(run: L4Bench) -> dict[str, float]:
    opts = run.options
    out: dict[str, float] = {}
    name = {FORWARD: "gbps", REVERSE: "rev_gbps"}
    for test in opts.directions:
        for system in opts.systems:
            out[f"{system}_{name[test]}"] = median(run, system, test, lambda r: r.gbps)
    for system in opts.systems:
        out[f"{system}_conn_s"] = median(run, system, CONNECTIONS, lambda r: r.rate)
    if len(opts.systems) == 2:
        ratios = {test: paired_ratio(run, test, lambda r: r.gbps) for test in opts.directions}
        out["ratio_throughput"] = min(ratios.values())
        out["ratio_conn_rate"] = paired_ratio(run, CONNECTIONS, lambda r: r.rate)
        out |= {f"ratio_throughput_{test}": ratio for test, ratio in ratios.items()}
        # the ratios of the medians, as this bench gave them before 2026-12-05
        out["ratio_throughput_of_medians"] = min(
            out[f"heron_{name[test]}"] / out[f"nginx_{name[test]}"] for test in opts.directions
        )
        out["ratio_conn_rate_of_medians"] = out["heron_conn_s"] / out["nginx_conn_s"]
    for system in opts.systems:
        out[f"{system}_conn_p50_ms"] = median(run, system, CONNECTIONS, lambda r: r.latency_ms[0])
        out[f"{system}_conn_p99_ms"] = median(run, system, CONNECTIONS, lambda r: r.latency_ms[2])
    for system, group in ((HERON, "edge"), (NGINX, "nginx"), (HERON, "agent")):
        if system in opts.systems:
            label = "agent" if group == "agent" else system
            mine = [r for r in run.runs if r.system == system]
            out[f"{label}_rss_mb"] = statistics.median(r.rss_kib[group] for r in mine) / 1024
    for system in opts.systems:
        out[f"{system}_cpu_s_per_gb"] = statistics.median(
            r.cost() for r in run.runs if r.system == system and r.test != CONNECTIONS
        )
        out[f"{system}_cpu_us_per_conn"] = median(run, system, CONNECTIONS, Run.cost)
        out[f"{system}_errors"] = sum(r.errors for r in run.runs if r.system == system)
    parameters = ("rounds", "duration_s", "workers", "streams", "concurrency", "clients")
    return (
        out | {name: getattr(opts, name) for name in parameters} | {"problems": len(run.problems)}
    )


# -- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    packages = {"iperf3": "iperf3", "nginx": "nginx", str(STREAM_MODULE): "libnginx-mod-stream"}
    options = parse_options(sys.argv[1:] if argv is None else argv)
    return netlab.run_main(
        "bench/l4.py", "Heron L4 bench", options, packages=packages, bench=bench, report=report
    )


if __name__ == "__main__":
    sys.exit(main())
