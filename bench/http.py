"""HTTPS requests through the Heron edge against nginx doing the same job, with wrk.

Three network namespaces, created and deleted by the bench: a *client* host (wrk), an *edge*
host and a *peer* host, joined by veths (client-edge 10.234.1.0/24, edge-peer 10.234.0.0/24).
Heron runs as a user runs it: management (SQLite, embedded NATS) and ``heron-edge`` on the edge
host, ``heron up`` on the peer, an HTTP service made through the REST API; the backend is an
nginx on the peer answering ``hello world``. In the same run, interleaved round by round:

- **heron**: ``wrk https://app.bench.heron.test:8443/`` → the edge's workers (SNI router, TLS
  termination, L7 proxy, kept-alive tunnel streams) → WireGuard → the agent's forwarder → the
  backend on the peer's 127.0.0.1;
- **nginx**: ``wrk https://app.bench.heron.test:9443/`` → nginx on the edge host with the same
  certificate and as many workers, ``proxy_pass`` with upstream keep-alive to the backend on the
  peer's overlay address, through the WireGuard interface the edge created.

The client resolves the name through an ``/etc/hosts`` of its own (``/etc/netns/<ns>/hosts``,
which ``ip netns exec`` mounts), so wrk sends SNI as a browser would. Then, unless
``--no-info-row``, the edge is restarted with ``HERON_LOG_LEVEL=info`` (one access-log line per
request) and measured again.

Needs root, wrk, nginx, curl, iproute2, wireguard-tools and wireguard-go (or the kernel module);
as root it installs the missing Debian packages. Run from the repository root::

    uv run python bench/http.py [--duration 10] [--rounds 3] [--connections 64] [--workers 2]

Prints a table, then as its last line ``RESULT name=value …`` (bench/README.md lists the names).
Everything it creates — namespaces, interfaces, processes, the hosts file — is removed at the
end, on error, on Ctrl-C and on SIGTERM.
"""

# ruff: noqa: E402  (the import path is fixed before anything else is imported)
import sys
from pathlib import Path

# This file is named like the standard library's ``http``: run as a script, its directory comes
# first on sys.path and ``import http.client`` (httpx, asyncio's helpers…) would find this file.
_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _BENCH_DIR]

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from ipaddress import IPv4Interface
from types import TracebackType
from typing import Any, Self

import trustme

from heron_bus.embedded import nats_server_args
from heron_core.logging import configure_logging
from heron_core.settings import LogFormat
from heron_core.tasks import spawn
from heron_tunnel.netns import NETNS_DIR, Namespace, cleanup_stale, unique_name, veth

CLIENT_PREFIX, EDGE_PREFIX, PEER_PREFIX = "hbhc", "hbhe", "hbhp"
EDGE_WG_PREFIX, AGENT_WG_PREFIX = "hbhw", "hbha"
UNDERLAY_EDGE, UNDERLAY_PEER = IPv4Interface("10.234.0.1/24"), IPv4Interface("10.234.0.2/24")
FRONT_EDGE, FRONT_CLIENT = IPv4Interface("10.234.1.1/24"), IPv4Interface("10.234.1.2/24")
LOCALHOST = "127.0.0.1"
ALL_ADDRESSES = "0.0.0.0"  # noqa: S104  (management's gRPC: the agent on the peer host dials it)
PROXY_DOMAIN = "bench.heron.test"
APP_DOMAIN = f"app.{PROXY_DOMAIN}"
#: edge host: management's REST (127.0.0.1) and gRPC (all addresses), NATS, the edge's health
MANAGEMENT_PORT, GRPC_PORT, NATS_PORT, HEALTH_PORT = 8080, 50051, 4222, 9100
WG_PORT = 51820
#: edge host, all addresses: the Heron edge's TLS port and the reference nginx's
HERON_PORT, NGINX_PORT = 8443, 9443
#: peer host, 0.0.0.0: the backend nginx
BACKEND_PORT = 8080
BODY = "hello world\n"
ADMIN_TOKEN = "hrn_" + secrets.token_urlsafe(30)
HERON, NGINX, HERON_INFO = "heron", "nginx", "heron-info"
#: how long management, the edge, the agent's login and the first routed request may take
READY_TIMEOUT_S = 45.0
#: wrk runs before the measured ones, per system, not counted
WARMUP_S = 3
#: wrk's own deadline per request: slower ones count as timeouts (errors)
WRK_TIMEOUT_S = 5
#: how often RSS is sampled during a run
SAMPLE_INTERVAL_S = 0.25
#: the whole run may not take longer than this (ARCHITECTURE.md: under 5 minutes)
RUN_LIMIT_S = 290.0
#: setup (namespaces, management, edge, agent, service) and teardown, measured: ~20 s
FIXED_COST_S = 30.0
#: restarting the edge for the info-level row: its start, the wait for the tunnel, the agent's
RESTART_COST_S = 30.0
#: after the edge's restart, how long the bench waits for requests to get through before it
#: restarts the agent too (a restarted edge starts the handshake itself, from the endpoints it
#: remembered; before that fix WireGuard took up to 2 minutes: bench/README.md, findings)
EDGE_RESTART_WAIT_S = 15.0
#: the issue's target: Heron >= 0.5x nginx rps with p99 <= 2x nginx
TARGET_RPS_RATIO, TARGET_P99_RATIO = 0.5, 2.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_HOSTS_DIR = Path("/etc/netns")
#: the work directory: ``<tmp>/heron-bench-http-<pid>-<random>``
WORK_PREFIX = "heron-bench-http-"

#: wrk's report, as one line it prints at the end (latencies in microseconds)
WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "status": %d, "timeout": %d, "mean_us": %.1f, "p50_us": %.1f, '
    .. '"p90_us": %.1f, "p99_us": %.1f, "p999_us": %.1f, "max_us": %.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""

BACKEND_CONF = """
user root;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen 0.0.0.0:{port};
        location / {{
            default_type text/plain;
            return 200 "{body}";
        }}
    }}
}}
"""

REFERENCE_CONF = """
user root;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    upstream backend {{
        server {upstream};
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }}
    server {{
        listen {port} ssl;
        server_name {domain};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header Forwarded "for=$remote_addr;host=$host;proto=https";
        }}
    }}
}}
"""


class BenchError(Exception):
    """The bench cannot run or a step of it failed; the message says which and why."""


# -- options -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Options:
    duration_s: int
    rounds: int
    connections: int
    threads: int
    workers: int
    log_level: str
    info_row: bool
    keep: bool

    def estimate_s(self) -> float:
        per_run = self.duration_s + 1.0  # wrk's start and end, the samplers
        total = FIXED_COST_S + 2 * (WARMUP_S + 1) + 2 * self.rounds * per_run
        if self.info_row:
            total += RESTART_COST_S + WARMUP_S + 1 + self.rounds * per_run
        return total


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        description="Heron HTTP bench: wrk through the Heron edge vs nginx doing the same job."
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument(
        "--workers", type=int, default=1, help="Heron edge workers = nginx worker_processes (1)"
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="the edge's HERON_LOG_LEVEL for the main rows (warning: no access log lines)",
    )
    parser.add_argument(
        "--no-info-row",
        action="store_true",
        help="skip the extra row: the edge restarted with HERON_LOG_LEVEL=info (access log on)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="after the report, leave everything up until Ctrl-C (for debugging)",
    )
    args = parser.parse_args(argv)
    if not 2 <= args.duration <= 60:
        parser.error("--duration must be 2-60 seconds")
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds must be 1-10")
    if not 1 <= args.connections <= 10000:
        parser.error("--connections must be 1-10000")
    if not 1 <= args.threads <= args.connections:
        parser.error("--threads must be 1 to --connections")
    if not 1 <= args.workers <= 16:
        parser.error("--workers must be 1-16")
    options = Options(
        duration_s=args.duration,
        rounds=args.rounds,
        connections=args.connections,
        threads=args.threads,
        workers=args.workers,
        log_level=args.log_level,
        info_row=not args.no_info_row and args.log_level != "info",
        keep=args.keep,
    )
    if options.estimate_s() > RUN_LIMIT_S:
        parser.error(
            f"these options would take about {options.estimate_s():.0f} s; the bench stays "
            f"under {RUN_LIMIT_S:.0f} s: fewer rounds, shorter runs or --no-info-row"
        )
    return options


# -- processes ---------------------------------------------------------------------------------


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    """Ours without any HERON_*/NB_* setting of the caller's shell, plus ``extra``."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("HERON_", "NB_")) and name.lower() not in PROXY_VARIABLES
    }
    return inherited | extra


PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy", "no_proxy", "grpc_proxy"})


class Child:
    """A long-running process in a namespace, in a session of its own; output to a log file."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except OSError:
            text = ""
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def logged_errors(self, since: int = 0) -> tuple[int, list[str]]:
        """Error lines a Heron process logged (JSON) after byte ``since``: their count, and
        each distinct one as "event | exception at file:line" with how often it came."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(since)
                data = log.read().decode(errors="replace")
        except OSError:
            return 0, []
        seen: dict[str, int] = {}
        for line in data.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                if line.startswith("Traceback"):
                    key = "a traceback on stderr (not JSON)"
                    seen[key] = seen.get(key, 0) + 1
                continue
            if not isinstance(entry, dict) or entry.get("level") not in ("error", "critical"):
                continue
            text = str(entry.get("event", "")).splitlines()[0][:160]
            for exc in entry.get("exception") or []:
                frames = exc.get("frames") or [{}]
                last = frames[-1]
                text += (
                    f" | {exc.get('exc_type')}: {str(exc.get('exc_value'))[:120]} at "
                    f"{Path(str(last.get('filename', '?'))).name}:{last.get('lineno')} "
                    f"({last.get('name')})"
                )
            seen[text] = seen.get(text, 0) + 1
        summary = [f"{count}x {text}" for text, count in seen.items()]
        return sum(seen.values()), summary

    async def stop(self, grace_s: float = 8.0) -> None:
        """SIGTERM (a graceful stop: the edge stops its workers and WireGuard), then SIGKILL."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                await self.process.wait()


class Children:
    """Starts processes in namespaces and stops them all, newest first, on exit, error or not."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._children: list[Child] = []

    async def start(
        self, name: str, netns: Namespace, *argv: str, env: dict[str, str] | None = None
    ) -> Child:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:  # the child keeps its own descriptor
            process = await asyncio.create_subprocess_exec(
                *netns.command(*argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env=child_environment(env or {}), start_new_session=True,
            )  # fmt: skip
        child = Child(name, process, log_path)
        self._children.append(child)
        return child

    async def stop(self, child: Child) -> None:
        await child.stop()
        self._children.remove(child)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for child in reversed(self._children):
            await child.stop()


async def eventually(
    what: str, check: Callable[[], Any], timeout_s: float = READY_TIMEOUT_S, *, why: Any = None
) -> Any:
    """Poll ``check`` (a coroutine function) until it returns something true."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    detail = why() if callable(why) else ""
    raise BenchError(f"{what} not within {timeout_s:g} s (last: {last!r}){detail}")


async def wait_listening(netns: Namespace, port: int, child: Child) -> None:
    async def listening() -> bool:
        if not child.running:
            raise BenchError(
                f"{child.name} exited with {child.process.returncode}:\n{child.log_tail()}"
            )
        done = await netns.run("ss", "-Hltn", f"sport = :{port}", check=False)
        return bool(done.stdout.strip())

    await eventually(f"{child.name} listening on port {port}", listening, 15.0)


# -- /proc accounting --------------------------------------------------------------------------


def process_table() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, command name) of every process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        table[int(entry.name)] = (int(stat[stat.rindex(")") + 2 :].split()[1]), comm)
    return table


def descendants(root: int, table: dict[int, tuple[int, str]]) -> list[int]:
    """``root`` and every process under it."""
    found, frontier = [root], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in table.items() if ppid == parent]
        found += children
        frontier += children
    return [pid for pid in found if pid in table]


def process_cpu_s(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid``, all its threads; zeros if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0, 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of ``pid`` in KiB; PSS shares pages among the processes that map them."""
    rss = pss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
                break
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
                break
    return rss, pss


def machine_jiffies() -> tuple[int, int, int]:
    """(busy, softirq, total) jiffies of all CPUs since boot; busy includes softirq."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, values[6], total


@dataclasses.dataclass(frozen=True)
class Cpu:
    user_s: float
    sys_s: float

    @property
    def total_s(self) -> float:
        return self.user_s + self.sys_s


#: the process groups whose CPU and memory each run records
GROUPS = ("edge", "wg-edge", "agent", "wg-peer", "backend", "nginx", "wrk")
#: the rest of the machine's busy time: softirq (the network), and "other": every process that is
#: none of the above nor the bench itself (another program running beside the bench shows here)
REST = ("softirq", "other")


class Meter:
    """CPU seconds of each group over a run, its peak RSS and PSS, and the machine's busy share."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self._cpu_start: dict[str, tuple[float, float]] = {}
        self._machine_start = (0, 0, 0)
        self._self_start = 0.0
        self.peak_rss_kib: dict[str, int] = dict.fromkeys(groups, 0)
        self.peak_pss_kib: dict[str, int] = dict.fromkeys(groups, 0)
        self._task: asyncio.Task[None] | None = None

    def _cpu(self) -> dict[str, tuple[float, float]]:
        out = {}
        for name, pids in self.groups.items():
            times = [process_cpu_s(pid) for pid in pids]
            out[name] = (sum(t[0] for t in times), sum(t[1] for t in times))
        return out

    def sample_memory(self) -> None:
        for name, pids in self.groups.items():
            sizes = [memory_kib(pid) for pid in pids]
            self.peak_rss_kib[name] = max(self.peak_rss_kib[name], sum(s[0] for s in sizes))
            self.peak_pss_kib[name] = max(self.peak_pss_kib[name], sum(s[1] for s in sizes))

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            self.sample_memory()

    def start(self) -> None:
        self._cpu_start = self._cpu()
        self._machine_start = machine_jiffies()
        self._self_start = own_cpu_s()
        self.sample_memory()
        self._task = spawn(self._sample(), name="rss sampler")

    async def stop(self, children_cpu: dict[str, Cpu]) -> tuple[dict[str, Cpu], float]:
        """CPU by group (``children_cpu``: groups measured by the caller, e.g. wrk), with
        ``REST``'s two, and the machine's busy share of all CPUs, since ``start``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        now = self._cpu()
        busy, softirq, total = (
            now - then for now, then in zip(machine_jiffies(), self._machine_start, strict=True)
        )
        cpu = {
            name: Cpu(
                now[name][0] - self._cpu_start[name][0], now[name][1] - self._cpu_start[name][1]
            )
            for name in now
        } | children_cpu
        ours = sum(c.total_s for c in cpu.values()) + own_cpu_s() - self._self_start
        cpu["softirq"] = Cpu(0.0, softirq / _CLOCK_TICKS)
        cpu["other"] = Cpu(max(0.0, (busy - softirq) / _CLOCK_TICKS - ours), 0.0)
        return cpu, busy / total if total else 0.0


def own_cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


# -- wrk ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
    round: int
    system: str
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    socket_errors: int  # connect, read, write, timeout
    non_2xx: int  # responses other than 2xx/3xx
    cpu: dict[str, Cpu]
    busy: float
    rss_kib: dict[str, int]
    pss_kib: dict[str, int]
    wg_packets: int  # through the edge's WireGuard interface, both ways
    upstream_opens: int  # TCP connections the edge host opened (to the peer: streams, upstream)
    retransmits: int  # TCP segments retransmitted on the edge and the peer hosts

    @property
    def packets_per_request(self) -> float:
        return self.wg_packets / self.requests if self.requests else 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.socket_errors + self.non_2xx

    def cpu_us_per_request(self, group: str) -> float:
        return self.cpu[group].total_s / self.requests * 1e6 if self.requests else 0.0


def parse_wrk(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.startswith("WRK ")]
    if not lines:
        raise BenchError(f"wrk printed no report:\n{stdout[-1500:]}")
    report: dict[str, Any] = json.loads(lines[-1].removeprefix("WRK "))
    return report


# -- the bench ---------------------------------------------------------------------------------


@dataclasses.dataclass
class HttpBench:
    """The hosts, the processes and what the setup learned; ``runs`` holds the measurements."""

    options: Options
    work: Path
    client: Namespace
    edge: Namespace
    peer: Namespace
    children: Children
    ca_file: Path
    cert_dir: Path
    edge_interface: str = dataclasses.field(default_factory=lambda: unique_name(EDGE_WG_PREFIX))
    agent_interface: str = dataclasses.field(default_factory=lambda: unique_name(AGENT_WG_PREFIX))
    proxy_token: str = ""
    setup_key: str = ""
    peer_overlay: str = ""
    route_dev: str = ""
    tls: dict[str, str] = dataclasses.field(default_factory=dict)
    procs: dict[str, Child] = dataclasses.field(default_factory=dict)
    runs: list[Run] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    wrk_script: Path = Path()

    # -- management's REST API, through curl in the edge namespace

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        argv = [
            "curl", "-sS", "--noproxy", "*", "--max-time", "10", "-X", method,
            "-H", f"Authorization: Token {ADMIN_TOKEN}", "-w", "\n%{http_code}",
            f"http://{LOCALHOST}:{MANAGEMENT_PORT}{path}",
        ]  # fmt: skip
        stdin = None
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
            stdin = json.dumps(body).encode()
        done = await self.edge.run(*argv, check=False, stdin=stdin, timeout_s=15)
        if done.returncode != 0:
            return 0, done.stderr.decode(errors="replace").strip()
        text, _, code = done.stdout.decode().rpartition("\n")
        try:
            return int(code), json.loads(text) if text.strip() else None
        except ValueError:
            return int(code) if code.isdigit() else 0, text

    async def api_ok(self, method: str, path: str, body: Any = None) -> Any:
        status, payload = await self.api(method, path, body)
        if status not in (200, 201):
            raise BenchError(f"{method} {path} answered {status}: {payload}")
        return payload

    # -- starting things

    async def start_management(self) -> None:
        nats = await self.children.start(
            "nats", self.edge, *nats_server_args(store_dir=self.work / "nats", port=NATS_PORT)
        )
        await wait_listening(self.edge, NATS_PORT, nats)
        management = await self.children.start(
            "management", self.edge, sys.executable, "-m", "heron_management",
            env={
                "HERON_MODE": "development", "HERON_LOG_FORMAT": "json",
                "HERON_DATA_DIR": str(self.work / "management"), "HERON_ADMIN_TOKEN": ADMIN_TOKEN,
                "HERON_MANAGEMENT_HOST": LOCALHOST, "HERON_MANAGEMENT_PORT": str(MANAGEMENT_PORT),
                "HERON_MANAGEMENT_GRPC_HOST": ALL_ADDRESSES, "HERON_MANAGEMENT_GRPC_PORT": str(GRPC_PORT),
                "HERON_NATS_URL": f"nats://{LOCALHOST}:{NATS_PORT}",
            },
        )  # fmt: skip
        self.procs["management"] = management

        async def api_up() -> bool:
            if not management.running:
                raise BenchError(f"management exited:\n{management.log_tail()}")
            return (await self.api("GET", "/api/services"))[0] == 200

        await eventually("management's REST API", api_up)
        proxy = await self.api_ok("POST", "/api/proxy-tokens", {"name": "bench-edge"})
        key = await self.api_ok("POST", "/api/setup-keys", {"name": "bench-peer"})
        self.proxy_token, self.setup_key = proxy["plain_token"], key["key"]

    async def start_backend(self) -> None:
        self.procs["backend"] = await self.start_nginx(
            "backend", self.peer, BACKEND_CONF.format(
                prefix="{prefix}", port=BACKEND_PORT, body=BODY.replace("\n", "\\n")
            ),
        )  # fmt: skip
        await wait_listening(self.peer, BACKEND_PORT, self.procs["backend"])

    async def start_nginx(self, name: str, netns: Namespace, config: str) -> Child:
        prefix = self.work / name
        prefix.mkdir()
        conf = prefix / "nginx.conf"
        conf.write_text(config.replace("{prefix}", str(prefix)))
        return await self.children.start(
            name, netns, "nginx", "-p", str(prefix), "-c", str(conf),
            "-e", str(prefix / "error.log"), "-g", "daemon off;",
        )  # fmt: skip

    async def start_edge(self, log_level: str) -> None:
        name = "edge" if log_level == self.options.log_level else f"edge-{log_level}"
        edge = await self.children.start(
            name, self.edge, sys.executable, "-m", "heron_edge",
            env={
                "HERON_MODE": "development", "HERON_LOG_FORMAT": "json",
                "HERON_LOG_LEVEL": log_level, "HERON_DATA_DIR": str(self.work / "edge"),
                "HERON_PROXY_DOMAIN": PROXY_DOMAIN, "HERON_PROXY_TOKEN": self.proxy_token,
                "HERON_PROXY_MANAGEMENT_URL": f"http://{LOCALHOST}:{GRPC_PORT}",
                "HERON_PROXY_ADDRESS": f":{HERON_PORT}", "HERON_PROXY_HTTP_ADDRESS": "",
                "HERON_PROXY_HEALTH_ADDRESS": f"{LOCALHOST}:{HEALTH_PORT}",
                "HERON_PROXY_WORKERS": str(self.options.workers),
                "HERON_PROXY_WIREGUARD_ENDPOINT": f"{UNDERLAY_EDGE.ip}:{WG_PORT}",
                "HERON_PROXY_WG_PORT": str(WG_PORT),
                "HERON_PROXY_WIREGUARD_INTERFACE": self.edge_interface,
                "HERON_PROXY_INSTANCE_ID": "bench-edge",
                "HERON_PROXY_CERTIFICATE_DIRECTORY": str(self.cert_dir),
            },
        )  # fmt: skip
        self.procs["edge"] = edge

        async def ready() -> bool:
            if not edge.running:
                raise BenchError(
                    f"heron-edge exited with {edge.process.returncode}:\n{edge.log_tail()}"
                )
            done = await self.edge.run(
                "curl", "-s", "--noproxy", "*", "--max-time", "2", "-o", "/dev/null",
                "-w", "%{http_code}", f"http://{LOCALHOST}:{HEALTH_PORT}/healthz/ready",
                check=False,
            )  # fmt: skip
            return done.stdout == b"200"

        await eventually("the edge's /healthz/ready", ready, why=lambda: "\n" + edge.log_tail())

    async def start_agent(self, *, first: bool = True) -> Child:
        """``heron up`` on the peer: with the setup key the first time, from its state after."""
        login = ["--setup-key", self.setup_key] if first else []
        agent = await self.children.start(
            "agent" if first else "agent-restarted", self.peer,
            sys.executable, "-m", "heron_agent", "up", "--state-dir", str(self.work / "agent"),
            "--interface", self.agent_interface,
            "--management", f"http://{UNDERLAY_EDGE.ip}:{GRPC_PORT}", *login,
            env={"HERON_MODE": "development", "HERON_LOG_FORMAT": "json"},
        )  # fmt: skip
        self.procs["agent"] = agent
        return agent

    async def start_service(self) -> None:
        """Wait for the agent's login, then make the HTTP service on its peer."""
        agent = self.procs["agent"]

        async def connected() -> dict[str, Any] | None:
            if not agent.running:
                raise BenchError(f"the agent exited:\n{agent.log_tail()}")
            status, peers = await self.api("GET", "/api/peers")
            if status != 200:
                return None
            found = [p for p in peers if p.get("connected") and p.get("overlay_address")]
            return found[0] if found else None

        peer = await eventually("the agent's login", connected, why=lambda: "\n" + agent.log_tail())
        self.peer_overlay = peer["overlay_address"]
        await self.api_ok(
            "POST", "/api/services",
            {"name": "bench", "domain": APP_DOMAIN, "targets": [
                {"target_type": "peer", "target_id": peer["id"], "port": BACKEND_PORT,
                 "protocol": "http"},
            ]},
        )  # fmt: skip

    async def start_reference(self) -> None:
        config = REFERENCE_CONF.format(
            prefix="{prefix}", workers=self.options.workers, port=NGINX_PORT, domain=APP_DOMAIN,
            cert=self.cert_dir / "tls.crt", key=self.cert_dir / "tls.key",
            upstream=f"{self.peer_overlay}:{BACKEND_PORT}",
        )  # fmt: skip
        self.procs["nginx"] = await self.start_nginx("nginx", self.edge, config)
        await wait_listening(self.edge, NGINX_PORT, self.procs["nginx"])
        route = json.loads(
            (await self.edge.run("ip", "-j", "route", "get", self.peer_overlay)).stdout
        )
        self.route_dev = route[0].get("dev", "?")
        if self.route_dev != self.edge_interface:
            raise BenchError(
                f"the edge host routes {self.peer_overlay} through {self.route_dev}, not the "
                f"edge's WireGuard interface {self.edge_interface}"
            )

    # -- checking and measuring

    async def fetch(self, system: str) -> tuple[int, str, str]:
        """One request from the client host: (status or 0, body or curl's error, "TLS cipher")."""
        port = NGINX_PORT if system == NGINX else HERON_PORT
        done = await self.client.run(
            "curl", "-sS", "-v", "--noproxy", "*", "--max-time", "5", "--cacert", str(self.ca_file),
            "-w", "\n%{http_code}", f"https://{APP_DOMAIN}:{port}/", check=False, timeout_s=10,
        )  # fmt: skip
        stderr = done.stderr.decode(errors="replace")
        found = re.search(r"SSL connection using (\S+) / (\S+)", stderr)
        tls = f"{found[1]} {found[2]}" if found else "?"
        if done.returncode != 0:
            errors = [line for line in stderr.splitlines() if line.startswith("curl:")]
            return 0, errors[-1] if errors else f"curl exited with {done.returncode}", tls
        text, _, code = done.stdout.decode(errors="replace").rpartition("\n")
        return int(code) if code.isdigit() else 0, text, tls

    async def verify(self, system: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait for a 200 with the backend's body through ``system``."""
        last: list[tuple[int, str, str]] = [(0, "", "")]

        async def served() -> tuple[int, str, str] | None:
            self.check_alive()
            last[0] = answer = await self.fetch(system)
            return answer if answer[0] == 200 and answer[1] == BODY else None

        answer = await eventually(
            f"a 200 with the backend's body through {system}", served, timeout_s,
            why=lambda: f"; last answer: {last[0][0]} {last[0][1][:300]!r}" + self.heron_errors(),
        )  # fmt: skip
        self.tls[system] = answer[2]

    def meter(self) -> Meter:
        table = process_table()

        def split(root: str) -> tuple[list[int], list[int]]:
            pids = descendants(self.procs[root].pid, table) if root in self.procs else []
            wg = [pid for pid in pids if table[pid][1] == "wireguard-go"]
            return [pid for pid in pids if pid not in wg], wg

        edge, wg_edge = split("edge")
        agent, wg_peer = split("agent")
        return Meter(
            {
                "edge": edge, "wg-edge": wg_edge, "agent": agent, "wg-peer": wg_peer,
                "backend": split("backend")[0], "nginx": split("nginx")[0],
            }
        )  # fmt: skip

    async def wrk(self, round_: int, system: str, seconds: int) -> Run:
        opts = self.options
        port = NGINX_PORT if system == NGINX else HERON_PORT
        meter = self.meter()
        offsets = {name: child.log_size() for name, child in self.procs.items()}
        before = await self.counters()
        rusage = resource.getrusage(resource.RUSAGE_CHILDREN)
        meter.start()
        done = await self.client.run(
            "wrk", f"-t{opts.threads}", f"-c{opts.connections}", f"-d{seconds}s",
            "--timeout", f"{WRK_TIMEOUT_S}s", "-s", str(self.wrk_script),
            f"https://{APP_DOMAIN}:{port}/", check=False, timeout_s=seconds + 30,
        )  # fmt: skip
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk was our child: its CPU is here
        wrk = Cpu(after.ru_utime - rusage.ru_utime, after.ru_stime - rusage.ru_stime)
        cpu, busy = await meter.stop({"wrk": wrk})
        counted = {name: value - before[name] for name, value in (await self.counters()).items()}
        if done.returncode != 0:
            raise BenchError(
                f"wrk against {system} exited with {done.returncode}: "
                f"{done.stderr.decode(errors='replace').strip()[-800:]}"
            )
        report = parse_wrk(done.stdout.decode(errors="replace"))
        run = Run(
            round=round_, system=system, requests=report["requests"],
            seconds=report["duration_us"] / 1e6,
            p50_ms=report["p50_us"] / 1000, p90_ms=report["p90_us"] / 1000,
            p99_ms=report["p99_us"] / 1000, p999_ms=report["p999_us"] / 1000,
            max_ms=report["max_us"] / 1000,
            socket_errors=sum(report[k] for k in ("connect", "read", "write", "timeout")),
            non_2xx=report["status"], cpu=cpu, busy=busy,
            rss_kib=meter.peak_rss_kib, pss_kib=meter.peak_pss_kib,
            wg_packets=counted["wg_packets"], upstream_opens=counted["active_opens"],
            retransmits=counted["retransmits"],
        )  # fmt: skip
        errors = ""
        if run.errors:
            errors = (
                f"  ERRORS: connect {report['connect']} read {report['read']} write "
                f"{report['write']} timeout {report['timeout']} non-2xx/3xx {report['status']}"
            )
        say(
            f"  {'warm-up' if round_ == 0 else f'round {round_}'} {system:<10} {run.rps:9.0f} rps"
            f"  p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms  busy {busy:4.0%}{errors}"
        )
        if system != NGINX and (logged := self.heron_errors(offsets)):
            say(logged.strip("\n"))
            self.notes.append(f"{system} round {round_}: {logged.strip()}")
        if round_ and run.errors:
            self.problems.append(
                f"{system} round {round_}: {run.socket_errors} socket errors, "
                f"{run.non_2xx} non-2xx/3xx responses of {run.requests}"
            )
        if round_:
            self.runs.append(run)
        self.check_alive()
        return run

    async def counters(self) -> dict[str, int]:
        """The edge's WireGuard packets, TCP connections the edge host opened, retransmissions."""
        edge, peer = await tcp_counters(self.edge), await tcp_counters(self.peer)
        done = await self.edge.run("ip", "-s", "-j", "link", "show", self.edge_interface)
        [link] = json.loads(done.stdout)
        stats = link["stats64"]
        return {
            "wg_packets": stats["rx"]["packets"] + stats["tx"]["packets"],
            "active_opens": edge["ActiveOpens"],
            "retransmits": edge["RetransSegs"] + peer["RetransSegs"],
        }

    def heron_errors(self, since: dict[str, int] | None = None) -> str:
        """What the Heron processes logged as errors (since the given log offsets), for messages."""
        lines = []
        for name in ("edge", "agent"):
            if name in self.procs:
                count, distinct = self.procs[name].logged_errors((since or {}).get(name, 0))
                if count:
                    lines.append(f"{name} logged {count} errors:")
                    lines += [f"  {text}" for text in distinct[:6]]
        return "".join(f"\n{line}" for line in lines)

    def check_alive(self) -> None:
        for name, child in self.procs.items():
            if not child.running:
                raise BenchError(
                    f"{name} exited with {child.process.returncode} during the run:\n"
                    f"{child.log_tail()}"
                )

    async def set_up(self) -> None:
        """Start everything and check one request through each path."""
        started = time.monotonic()
        await self.start_management()
        await self.start_backend()
        await self.start_edge(self.options.log_level)
        await self.start_agent()
        await self.start_service()
        await self.start_reference()
        await self.verify(NGINX)
        await self.verify(HERON)
        say(
            f"up in {time.monotonic() - started:.1f} s: peer {self.peer_overlay} via "
            f"{self.route_dev}; TLS heron {self.tls[HERON]}, nginx {self.tls[NGINX]}"
        )

    async def measure(self) -> None:
        """Warm-up, the interleaved rounds, then the info-level row."""
        for system in (HERON, NGINX):
            await self.wrk(0, system, WARMUP_S)
        for round_ in range(1, self.options.rounds + 1):
            order = (HERON, NGINX) if round_ % 2 else (NGINX, HERON)
            for system in order:
                await self.wrk(round_, system, self.options.duration_s)
        for system in (HERON, NGINX):  # still serving the right answer after the load
            try:
                await self.verify(system, timeout_s=5)
            except BenchError as exc:
                self.problems.append(f"after the rounds: {exc}")

        if self.options.info_row:
            say("restarting the edge with HERON_LOG_LEVEL=info (an access-log line per request)")
            try:
                await self.restart_edge("info")
                await self.wrk(0, HERON_INFO, WARMUP_S)
                for round_ in range(1, self.options.rounds + 1):
                    await self.wrk(round_, HERON_INFO, self.options.duration_s)
            except BenchError as exc:
                self.problems.append(f"the info-level row failed: {exc}")
                say(f"  the info-level row failed: {exc}")

    async def restart_edge(self, log_level: str) -> None:
        """Stop the edge and start it again; restart the agent too if the tunnel stays down."""
        await self.children.stop(self.procs.pop("edge"))
        started = time.monotonic()
        await self.start_edge(log_level)
        try:
            await self.verify(HERON, timeout_s=EDGE_RESTART_WAIT_S)
        except BenchError as exc:
            last = str(exc).splitlines()[0].partition("last answer: ")[2] or str(exc)
            note = (
                f"after the edge's restart no request got through for "
                f"{time.monotonic() - started:.0f} s (last: {last}); the agent was restarted to "
                "bring the tunnel back (bench/README.md, findings)"
            )
            say(f"  {note}")
            self.notes.append(note)
            await self.children.stop(self.procs.pop("agent"))
            await self.start_agent(first=False)
            await self.verify(HERON)
        else:
            self.notes.append(
                f"the edge served again {time.monotonic() - started:.1f} s after its restart"
            )


async def tcp_counters(netns: Namespace) -> dict[str, int]:
    """The ``Tcp:`` line of the namespace's ``/proc/net/snmp``, by name."""
    snmp = (await netns.run("cat", "/proc/net/snmp")).stdout.decode().splitlines()
    names, values = (line.split()[1:] for line in snmp if line.startswith("Tcp:"))
    return dict(zip(names, map(int, values), strict=True))


def make_certificate(directory: Path) -> Path:
    """A CA and a certificate for the app's domain, as ``tls.crt``/``tls.key``; the CA's file."""
    ca = trustme.CA()
    issued = ca.issue_cert(APP_DOMAIN, f"*.{PROXY_DOMAIN}")
    directory.mkdir(mode=0o700)
    (directory / "tls.crt").write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    (directory / "tls.key").write_bytes(issued.private_key_pem.bytes())
    (directory / "tls.key").chmod(0o600)
    ca_file = directory.parent / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ca_file


def remove_stale_files() -> None:
    """What a run killed with SIGKILL left besides namespaces: its ``/etc/netns/<ns>`` directory
    (the namespace is gone) and its work directory (the pid in its name is gone)."""
    if _HOSTS_DIR.is_dir():
        for entry in _HOSTS_DIR.iterdir():
            if entry.name.startswith(CLIENT_PREFIX) and not (NETNS_DIR / entry.name).exists():
                shutil.rmtree(entry, ignore_errors=True)
    for entry in Path(tempfile.gettempdir()).glob(f"{WORK_PREFIX}*-*"):
        pid = entry.name.removeprefix(WORK_PREFIX).split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(entry, ignore_errors=True)


async def bench(options: Options, print_report: Callable[["HttpBench"], None]) -> HttpBench:
    for prefix in (CLIENT_PREFIX, EDGE_PREFIX, PEER_PREFIX):
        await cleanup_stale(prefix)  # what a run killed with SIGKILL left behind
    remove_stale_files()
    async with contextlib.AsyncExitStack() as stack:
        work = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix=f"{WORK_PREFIX}{os.getpid()}-"))
        )
        client = await stack.enter_async_context(Namespace.unique(CLIENT_PREFIX))
        edge = await stack.enter_async_context(Namespace.unique(EDGE_PREFIX))
        peer = await stack.enter_async_context(Namespace.unique(PEER_PREFIX))
        await veth(edge, peer, UNDERLAY_EDGE, UNDERLAY_PEER)
        await veth(edge, client, FRONT_EDGE, FRONT_CLIENT)
        hosts_dir = _HOSTS_DIR / client.name
        hosts_dir.mkdir(parents=True, exist_ok=True)
        stack.callback(shutil.rmtree, hosts_dir, ignore_errors=True)
        (hosts_dir / "hosts").write_text(f"127.0.0.1 localhost\n{FRONT_EDGE.ip} {APP_DOMAIN}\n")
        logs = work / "logs"
        logs.mkdir()
        stack.push(keep_logs_on_error(logs))
        children = await stack.enter_async_context(Children(logs))
        cert_dir = work / "certs"
        run = HttpBench(
            options, work, client, edge, peer, children, make_certificate(cert_dir), cert_dir
        )
        run.wrk_script = work / "report.lua"
        run.wrk_script.write_text(WRK_SCRIPT)
        say(
            f"namespaces: client {client.name}, edge {edge.name}, peer {peer.name}; work dir {work}"
        )

        await run.set_up()
        await run.measure()

        if options.keep:
            print_report(run)
            say(
                f"--keep: everything stays up until Ctrl-C. Namespaces: client {client.name}, "
                f"edge {edge.name}, peer {peer.name}; logs in {logs}; e.g.\n"
                f"  ip netns exec {client.name} curl --cacert {run.ca_file} "
                f"https://{APP_DOMAIN}:{HERON_PORT}/"
            )
            await asyncio.Event().wait()
        return run
    raise AssertionError("unreachable")  # the exit stack does not swallow exceptions


def keep_logs_on_error(logs: Path) -> Callable[..., None]:
    """An exit callback: on failure, copy the processes' logs out of the work directory.

    A timeout (``RUN_LIMIT_S``) arrives here as a cancellation too: its logs are not kept."""

    def keep(exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None or issubclass(exc_type, (asyncio.CancelledError, KeyboardInterrupt)):
            return  # done, or interrupted: nothing to look into
        target = (
            Path(tempfile.gettempdir()) / f"heron-bench-http-logs-{datetime.now():%Y%m%d-%H%M%S}"
        )
        with contextlib.suppress(OSError):
            shutil.copytree(logs, target)
            say(f"logs kept in {target}")

    return keep


# -- report ------------------------------------------------------------------------------------


def median(run: HttpBench, system: str, value: Callable[[Run], float]) -> float:
    return statistics.median(value(r) for r in run.runs if r.system == system)


def runs_of(run: HttpBench, system: str) -> list[Run]:
    return [r for r in run.runs if r.system == system]


def systems(run: HttpBench) -> list[str]:
    return [s for s in (HERON, NGINX, HERON_INFO) if any(r.system == s for r in run.runs)]


def report(run: HttpBench) -> list[str]:
    opts = run.options
    summary = summarize(run)
    lines = [
        f"Heron HTTP bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs; "
        f"wrk -t{opts.threads} -c{opts.connections}, {opts.duration_s} s x {opts.rounds} "
        f"interleaved rounds; Heron edge {opts.workers} workers (log level {opts.log_level}), "
        f"nginx worker_processes {opts.workers} (access_log off)",
        f"TLS: heron {run.tls.get(HERON, '?')}, nginx {run.tls.get(NGINX, '?')}; tunnel: the "
        f"edge's WireGuard interface {run.route_dev} to the peer {run.peer_overlay}",
        "",
        "Each run: requests/s, latency (ms), errors (socket errors + non-2xx/3xx), CPU seconds by "
        "process group, the machine's busy share, packets through the edge's WireGuard interface "
        "per request, TCP connections the edge host opened (upstream), TCP retransmissions",
        f"{'round':>5} {'system':<10} {'rps':>8} {'p50':>6} {'p90':>6} {'p99':>6} {'p99.9':>6} "
        f"{'max':>6} {'errors':>6} "
        + " ".join(f"{g:>7}" for g in GROUPS)
        + f" {'busy':>5} {'wg pkt/req':>10} {'opened':>6} {'retr':>5}",
    ]
    for r in run.runs:
        lines.append(
            f"{r.round:>5} {r.system:<10} {r.rps:8.0f} {r.p50_ms:6.2f} {r.p90_ms:6.2f} "
            f"{r.p99_ms:6.2f} {r.p999_ms:6.2f} {r.max_ms:6.1f} {r.errors:6d} "
            + " ".join(f"{r.cpu[g].total_s:7.2f}" for g in (*GROUPS, *REST))
            + f" {r.busy:5.0%} {r.packets_per_request:10.2f} {r.upstream_opens:6d} "
            f"{r.retransmits:5d}"
        )
    lines += [
        "",
        "CPU microseconds per request by process group, and the share of it in the kernel "
        "(medians)",
        f"{'system':<10} " + " ".join(f"{g:>11}" for g in GROUPS) + f" {'total':>7}",
    ]
    for system in systems(run):
        cells = []
        for group in GROUPS:
            mine = runs_of(run, system)
            per_request = statistics.median(r.cpu_us_per_request(group) for r in mine)
            used = sum(r.cpu[group].total_s for r in mine)
            kernel = sum(r.cpu[group].sys_s for r in mine) / used if used > 0.05 else None
            cells.append(
                f"{per_request:6.1f}" + (f" {kernel:4.0%}" if kernel is not None else " " * 5)
            )
        total = median(run, system, lambda r: sum(r.cpu_us_per_request(g) for g in GROUPS))
        lines.append(f"{system:<10} " + " ".join(f"{c:>11}" for c in cells) + f" {total:7.1f}")
    lines += [
        "",
        "Memory during the runs (peak, MiB; RSS counts shared pages in every process, PSS splits "
        "them): the proxy's own processes",
        f"{'system':<10} {'processes':<34} {'RSS':>7} {'PSS':>7}",
    ]
    for system, group, what in (
        (HERON, "edge", f"heron-edge control + {opts.workers} workers"),
        (HERON, "agent", "heron agent (heron up)"),
        (HERON, "wg-edge", "wireguard-go, edge (nginx's too)"),
        (HERON, "wg-peer", "wireguard-go, peer"),
        (NGINX, "nginx", f"nginx master + {opts.workers} workers"),
        (NGINX, "backend", "backend nginx (both)"),
    ):
        rss = statistics.median(r.rss_kib[group] for r in runs_of(run, system)) / 1024
        pss = statistics.median(r.pss_kib[group] for r in runs_of(run, system)) / 1024
        lines.append(f"{system:<10} {what:<34} {rss:7.1f} {pss:7.1f}")
    lines += [
        "",
        f"{'system':<10} {'rps':>8} {'p50 ms':>7} {'p99 ms':>7} {'RSS MiB':>8} {'errors':>7}  "
        "(medians over the rounds; errors: total)",
    ]
    for system in systems(run):
        group = "nginx" if system == NGINX else "edge"
        rss = statistics.median(r.rss_kib[group] for r in runs_of(run, system)) / 1024
        lines.append(
            f"{system:<10} {median(run, system, lambda r: r.rps):8.0f} "
            f"{median(run, system, lambda r: r.p50_ms):7.2f} "
            f"{median(run, system, lambda r: r.p99_ms):7.2f} "
            f"{rss:8.1f} "
            f"{sum(r.errors for r in run.runs if r.system == system):7d}"
        )
    met = (
        summary["ratio_rps"] >= TARGET_RPS_RATIO
        and summary["ratio_p99"] <= TARGET_P99_RATIO
        and not run.problems
    )
    lines += [
        "",
        f"heron/nginx: rps {summary['ratio_rps']:.3f}, p99 {summary['ratio_p99']:.3f}; target "
        f"rps >= {TARGET_RPS_RATIO} and p99 <= {TARGET_P99_RATIO} at {opts.connections} "
        f"connections, no errors: {'met' if met else 'NOT met'}",
    ]
    if HERON_INFO in systems(run):
        lines.append(
            f"with the access log on (HERON_LOG_LEVEL=info, after the nginx rounds): rps "
            f"{summary['ratio_rps_info']:.3f}, p99 {summary['ratio_p99_info']:.3f} of nginx"
        )
    lines += [f"NOTE: {note}" for note in run.notes]
    lines += [f"PROBLEM: {problem}" for problem in run.problems]
    lines.append(
        "RESULT " + " ".join(f"{name}={format_value(value)}" for name, value in summary.items())
    )
    return lines


def summarize(run: HttpBench) -> dict[str, float | int]:
    opts = run.options
    out: dict[str, float | int] = {}
    for system in (HERON, NGINX):
        out[f"{system}_rps"] = median(run, system, lambda r: r.rps)
    for system in (HERON, NGINX):
        out[f"{system}_p50_ms"] = median(run, system, lambda r: r.p50_ms)
    for system in (HERON, NGINX):
        out[f"{system}_p99_ms"] = median(run, system, lambda r: r.p99_ms)
    out["heron_rss_mb"] = median(run, HERON, lambda r: r.rss_kib["edge"]) / 1024
    out["nginx_rss_mb"] = median(run, NGINX, lambda r: r.rss_kib["nginx"]) / 1024
    out["ratio_rps"] = out["heron_rps"] / out["nginx_rps"]
    out["ratio_p99"] = out["heron_p99_ms"] / out["nginx_p99_ms"]
    out["heron_pss_mb"] = median(run, HERON, lambda r: r.pss_kib["edge"]) / 1024
    out["nginx_pss_mb"] = median(run, NGINX, lambda r: r.pss_kib["nginx"]) / 1024
    out["agent_rss_mb"] = median(run, HERON, lambda r: r.rss_kib["agent"]) / 1024
    out["heron_errors"] = sum(r.errors for r in run.runs if r.system == HERON)
    out["nginx_errors"] = sum(r.errors for r in run.runs if r.system == NGINX)
    out["heron_cpu_us_per_req"] = median(
        run, HERON, lambda r: r.cpu_us_per_request("edge") + r.cpu_us_per_request("agent")
    )
    out["nginx_cpu_us_per_req"] = median(run, NGINX, lambda r: r.cpu_us_per_request("nginx"))
    out["heron_busy"] = median(run, HERON, lambda r: r.busy)
    out["nginx_busy"] = median(run, NGINX, lambda r: r.busy)
    if any(r.system == HERON_INFO for r in run.runs):
        out["heron_info_rps"] = median(run, HERON_INFO, lambda r: r.rps)
        out["heron_info_p99_ms"] = median(run, HERON_INFO, lambda r: r.p99_ms)
        out["ratio_rps_info"] = out["heron_info_rps"] / out["nginx_rps"]
        out["ratio_p99_info"] = out["heron_info_p99_ms"] / out["nginx_p99_ms"]
    out |= {
        "connections": opts.connections,
        "workers": opts.workers,
        "rounds": opts.rounds,
        "duration_s": opts.duration_s,
        "problems": len(run.problems),
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


#: the Debian packages that provide each tool the bench runs
PACKAGES = {
    "ip": "iproute2",
    "ss": "iproute2",
    "curl": "curl",
    "wg": "wireguard-tools",
    "nginx": "nginx-light",
    "wrk": "wrk",
}


def install(packages: Sequence[str]) -> None:
    """``apt-get install`` without letting a package start a system service (policy-rc.d)."""
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text(
            "#!/bin/sh\n# bench/http.py: no service starts while it installs\nexit 101\n"
        )
        policy.chmod(0o755)
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    try:
        for attempt in ("install", "update", "install"):
            argv = ["apt-get", "update"] if attempt == "update" else [
                "apt-get", "install", "-y", "--no-install-recommends", *packages,
            ]  # fmt: skip
            done = subprocess.run(argv, env=env, capture_output=True, check=False)  # noqa: S603
            if attempt == "install" and done.returncode == 0:
                return
        raise BenchError(
            f"apt-get install {' '.join(packages)} failed: "
            f"{done.stderr.decode(errors='replace').strip()[-500:]}"
        )
    finally:
        if ours:
            policy.unlink(missing_ok=True)


def preflight() -> None:
    if os.geteuid() != 0:
        raise BenchError(
            "bench/http.py must run as root: it creates network namespaces, veth pairs and a "
            "WireGuard interface (try: sudo uv run python bench/http.py)"
        )
    wireguard = shutil.which("wireguard-go") or Path("/sys/module/wireguard").exists()
    needed = [*PACKAGES, *([] if wireguard else ["wireguard-go"])]
    missing = [tool for tool in needed if not shutil.which(tool)]
    if missing:
        packages = sorted({PACKAGES.get(tool, tool) for tool in missing})
        say(f"installing {' '.join(packages)} (apt-get, --no-install-recommends)")
        try:
            install(packages)
        except BenchError:
            if "nginx-light" not in packages:
                raise
            install([("nginx" if p == "nginx-light" else p) for p in packages])
    if missing := [tool for tool in needed if not shutil.which(tool)]:
        raise BenchError(f"still missing: {', '.join(missing)}")


async def amain(options: Options, print_report: Callable[[HttpBench], None]) -> HttpBench:
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    say(f"Heron HTTP bench: about {options.estimate_s():.0f} s")
    started = time.monotonic()
    if options.keep:
        result = await bench(options, print_report)
    else:
        async with asyncio.timeout(RUN_LIMIT_S):
            result = await bench(options, print_report)
    say(f"done in {time.monotonic() - started:.0f} s; namespaces, interfaces and processes removed")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(sys.argv[1:] if argv is None else argv)
    configure_logging("bench-http", level="warning", fmt=LogFormat.CONSOLE)
    printed: list[bool] = []

    def print_report(run: HttpBench) -> None:
        sys.stdout.write("\n".join(report(run)) + "\n")
        sys.stdout.flush()
        printed.append(True)

    try:
        preflight()
        result = asyncio.run(amain(options, print_report))
    except BenchError as exc:
        say(f"bench/http.py: {exc}")
        return 1
    except TimeoutError:
        say(f"bench/http.py: the run took longer than {RUN_LIMIT_S:.0f} s and was stopped")
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError) as exc:
        say("bench/http.py: interrupted; namespaces, interfaces and processes removed")
        return 130 if isinstance(exc, KeyboardInterrupt) else 128 + signal.SIGTERM
    if not printed:
        print_report(result)
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
