"""What ``bench/http.py`` and ``bench/l4.py`` share: three hosts and Heron running on them.

- ``open_hosts``: three network namespaces, each a host — *client*, *edge* and *peer* — joined by
  veths (client-edge ``FRONT_*``, edge-peer ``UNDERLAY_*``), a work directory, the client's own
  ``/etc/hosts`` and ``Children``; all of it removed when the caller's exit stack closes, error
  or not, and the leftovers of a run killed with SIGKILL removed first.
- ``Lab``: Heron on those hosts as a user runs it — management (SQLite, embedded NATS) and
  ``heron-edge`` on the edge host, ``heron up`` on the peer — driven through the REST API with
  ``curl`` in the edge namespace; plus nginx processes, the checks that everything still runs,
  the error lines Heron logged, and the counters each run records.
- ``Meter`` and the ``/proc`` readers: CPU seconds, peak RSS/PSS and the machine's busy share.
- ``preflight`` (root, the Debian packages) and ``run_main`` (signals, the time limit, the exit
  codes) for the scripts' ``main``.

Run nothing from here: the benches import it (helper modules in bench/ start with ``_``).
"""

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any, Protocol, TypeVar

import trustme

from heron_bus.embedded import nats_server_args
from heron_core.logging import configure_logging
from heron_core.settings import LogFormat
from heron_core.tasks import spawn
from heron_tunnel.netns import NETNS_DIR, Namespace, cleanup_stale, unique_name, veth

UNDERLAY_EDGE, UNDERLAY_PEER = IPv4Interface("10.234.0.1/24"), IPv4Interface("10.234.0.2/24")
FRONT_EDGE, FRONT_CLIENT = IPv4Interface("10.234.1.1/24"), IPv4Interface("10.234.1.2/24")
LOCALHOST = "127.0.0.1"
ALL_ADDRESSES = "0.0.0.0"  # noqa: S104  (management's gRPC: the agent on the peer host dials it)
PROXY_DOMAIN = "bench.heron.test"
#: edge host: management's REST (127.0.0.1) and gRPC (all addresses), NATS, the edge's health
MANAGEMENT_PORT, GRPC_PORT, NATS_PORT, HEALTH_PORT = 8080, 50051, 4222, 9100
WG_PORT = 51820
ADMIN_TOKEN = "hrn_" + secrets.token_urlsafe(30)
#: how long management, the edge, the agent's login and the first routed request may take
READY_TIMEOUT_S = 45.0
#: how often RSS is sampled during a run
SAMPLE_INTERVAL_S = 0.25
#: the whole run may not take longer than this (ARCHITECTURE.md: under 5 minutes)
RUN_LIMIT_S = 290.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_HOSTS_DIR = Path("/etc/netns")

#: the start of an nginx configuration of the bench's own: root, files in its work directory
NGINX_MAIN = """
user root;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
"""


class BenchError(Exception):
    """The bench cannot run or a step of it failed; the message says which and why."""


def say(message: str) -> None:
    """Progress, on stderr: stdout holds the table and the RESULT line only."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"


def result_line(summary: Mapping[str, float]) -> str:
    return "RESULT " + " ".join(f"{name}={format_value(value)}" for name, value in summary.items())


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

    async def stop_all(self) -> None:
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


def children_cpu_since(before: resource.struct_rusage) -> Cpu:
    """CPU the bench's waited-for children (a load generator) used since ``before``."""
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Cpu(after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime)


#: the rest of the machine's busy time: softirq (the network), and "other": every process that is
#: in no measured group nor the bench itself (another program running beside the bench shows here)
REST = ("softirq", "other")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Measured:
    """What every run records besides its own figures (a bench's run adds those)."""

    cpu: dict[str, Cpu]  # CPU seconds by process group, with REST's
    busy: float  # the machine's busy share of all CPUs
    rss_kib: dict[str, int]  # peak, by group
    pss_kib: dict[str, int]
    wg_packets: int  # through the edge's WireGuard interface, both ways
    opened: int  # TCP connections the edge host opened (to the peer: streams, upstream)
    retransmits: int  # TCP segments retransmitted on the edge and the peer hosts


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


async def tcp_counters(netns: Namespace) -> dict[str, int]:
    """The ``Tcp:`` line of the namespace's ``/proc/net/snmp``, by name."""
    snmp = (await netns.run("cat", "/proc/net/snmp")).stdout.decode().splitlines()
    names, values = (line.split()[1:] for line in snmp if line.startswith("Tcp:"))
    return dict(zip(names, map(int, values), strict=True))


# -- the hosts ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Names:
    """What a bench names its things by: namespace and interface prefixes, files' prefixes."""

    bench: str  # "http": the work directory is <tmp>/heron-bench-http-<pid>-<random>
    client: str
    edge: str
    peer: str
    edge_wg: str
    agent_wg: str

    @property
    def work_prefix(self) -> str:
        return f"heron-bench-{self.bench}-"


@dataclasses.dataclass(frozen=True)
class Hosts:
    """The three hosts, the work directory, the processes' logs and their supervisor."""

    work: Path
    logs: Path
    client: Namespace
    edge: Namespace
    peer: Namespace
    children: Children
    edge_interface: str
    agent_interface: str

    def describe(self) -> str:
        return (
            f"client {self.client.name}, edge {self.edge.name}, peer {self.peer.name}; "
            f"logs in {self.logs}"
        )


async def open_hosts(
    stack: contextlib.AsyncExitStack, names: Names, client_hosts: Sequence[str] = ()
) -> Hosts:
    """Create the hosts, each to be removed when ``stack`` closes; ``client_hosts`` are names
    the client resolves to the edge host (its own ``/etc/hosts``, which ``ip netns exec``
    mounts)."""
    for prefix in (names.client, names.edge, names.peer):
        await cleanup_stale(prefix)  # what a run killed with SIGKILL left behind
    remove_stale_files(names)
    work = Path(
        stack.enter_context(
            tempfile.TemporaryDirectory(prefix=f"{names.work_prefix}{os.getpid()}-")
        )
    )
    client = await stack.enter_async_context(Namespace.unique(names.client))
    edge = await stack.enter_async_context(Namespace.unique(names.edge))
    peer = await stack.enter_async_context(Namespace.unique(names.peer))
    await veth(edge, peer, UNDERLAY_EDGE, UNDERLAY_PEER)
    await veth(edge, client, FRONT_EDGE, FRONT_CLIENT)
    hosts_dir = _HOSTS_DIR / client.name
    hosts_dir.mkdir(parents=True, exist_ok=True)
    stack.callback(shutil.rmtree, hosts_dir, ignore_errors=True)
    (hosts_dir / "hosts").write_text(
        "127.0.0.1 localhost\n" + "".join(f"{FRONT_EDGE.ip} {name}\n" for name in client_hosts)
    )
    logs = work / "logs"
    logs.mkdir()
    stack.push(keep_logs_on_error(logs, names.bench))
    children = Children(logs)
    stack.push_async_callback(children.stop_all)
    hosts = Hosts(
        work=work, logs=logs, client=client, edge=edge, peer=peer, children=children,
        edge_interface=unique_name(names.edge_wg), agent_interface=unique_name(names.agent_wg),
    )  # fmt: skip
    say(f"namespaces: {hosts.describe()}")
    return hosts


def remove_stale_files(names: Names) -> None:
    """What a run killed with SIGKILL left besides namespaces: its ``/etc/netns/<ns>`` directory
    (the namespace is gone) and its work directory (the pid in its name is gone)."""
    if _HOSTS_DIR.is_dir():
        for entry in _HOSTS_DIR.iterdir():
            if entry.name.startswith(names.client) and not (NETNS_DIR / entry.name).exists():
                shutil.rmtree(entry, ignore_errors=True)
    for entry in Path(tempfile.gettempdir()).glob(f"{names.work_prefix}*-*"):
        pid = entry.name.removeprefix(names.work_prefix).split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(entry, ignore_errors=True)


def keep_logs_on_error(logs: Path, bench: str) -> Callable[..., None]:
    """An exit callback: on failure, copy the processes' logs out of the work directory.

    A timeout (``RUN_LIMIT_S``) arrives here as a cancellation too: its logs are not kept."""

    def keep(exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None or issubclass(exc_type, (asyncio.CancelledError, KeyboardInterrupt)):
            return  # done, or interrupted: nothing to look into
        target = (
            Path(tempfile.gettempdir()) / f"heron-bench-{bench}-logs-{datetime.now():%Y%m%d-%H%M%S}"
        )
        with contextlib.suppress(OSError):
            shutil.copytree(logs, target)
            say(f"logs kept in {target}")

    return keep


def make_certificate(directory: Path, *names: str) -> Path:
    """A CA and a certificate for ``names``, as ``tls.crt``/``tls.key``; the CA's file."""
    ca = trustme.CA()
    issued = ca.issue_cert(*names)
    directory.mkdir(mode=0o700)
    (directory / "tls.crt").write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    (directory / "tls.key").write_bytes(issued.private_key_pem.bytes())
    (directory / "tls.key").chmod(0o600)
    ca_file = directory.parent / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ca_file


# -- Heron on the hosts ------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class Lab:
    """The hosts, Heron's processes and what the setup learned; a bench adds its own fields."""

    hosts: Hosts
    proxy_token: str = ""
    setup_key: str = ""
    peer_id: str = ""
    peer_overlay: str = ""
    route_dev: str = ""
    procs: dict[str, Child] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

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
        done = await self.hosts.edge.run(*argv, check=False, stdin=stdin, timeout_s=15)
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
        nats = await self.hosts.children.start(
            "nats",
            self.hosts.edge,
            *nats_server_args(store_dir=self.hosts.work / "nats", port=NATS_PORT),
        )
        await wait_listening(self.hosts.edge, NATS_PORT, nats)
        management = await self.hosts.children.start(
            "management", self.hosts.edge, sys.executable, "-m", "heron_management",
            env={
                "HERON_MODE": "development", "HERON_LOG_FORMAT": "json",
                "HERON_DATA_DIR": str(self.hosts.work / "management"), "HERON_ADMIN_TOKEN": ADMIN_TOKEN,
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

    async def start_nginx(self, name: str, netns: Namespace, config: str) -> Child:
        """nginx as a process of the bench's own (``{prefix}`` in ``config``: its directory)."""
        prefix = self.hosts.work / name
        prefix.mkdir()
        conf = prefix / "nginx.conf"
        conf.write_text(config.replace("{prefix}", str(prefix)))
        return await self.hosts.children.start(
            name, netns, "nginx", "-p", str(prefix), "-c", str(conf),
            "-e", str(prefix / "error.log"), "-g", "daemon off;",
        )  # fmt: skip

    async def start_edge(
        self, name: str, *, log_level: str, workers: int, env: dict[str, str]
    ) -> None:
        """``python -m heron_edge`` on the edge host, ``env`` on top of the bench's settings;
        returns once its ``/healthz/ready`` answers 200."""
        edge = await self.hosts.children.start(
            name, self.hosts.edge, sys.executable, "-m", "heron_edge",
            env={
                "HERON_MODE": "development", "HERON_LOG_FORMAT": "json",
                "HERON_LOG_LEVEL": log_level, "HERON_DATA_DIR": str(self.hosts.work / "edge"),
                "HERON_PROXY_DOMAIN": PROXY_DOMAIN, "HERON_PROXY_TOKEN": self.proxy_token,
                "HERON_PROXY_MANAGEMENT_URL": f"http://{LOCALHOST}:{GRPC_PORT}",
                "HERON_PROXY_HTTP_ADDRESS": "",
                "HERON_PROXY_HEALTH_ADDRESS": f"{LOCALHOST}:{HEALTH_PORT}",
                "HERON_PROXY_WORKERS": str(workers),
                "HERON_PROXY_WIREGUARD_ENDPOINT": f"{UNDERLAY_EDGE.ip}:{WG_PORT}",
                "HERON_PROXY_WG_PORT": str(WG_PORT),
                "HERON_PROXY_WIREGUARD_INTERFACE": self.hosts.edge_interface,
                "HERON_PROXY_INSTANCE_ID": "bench-edge",
            } | env,
        )  # fmt: skip
        self.procs["edge"] = edge

        async def ready() -> bool:
            if not edge.running:
                raise BenchError(
                    f"heron-edge exited with {edge.process.returncode}:\n{edge.log_tail()}"
                )
            done = await self.hosts.edge.run(
                "curl", "-s", "--noproxy", "*", "--max-time", "2", "-o", "/dev/null",
                "-w", "%{http_code}", f"http://{LOCALHOST}:{HEALTH_PORT}/healthz/ready",
                check=False,
            )  # fmt: skip
            return done.stdout == b"200"

        await eventually("the edge's /healthz/ready", ready, why=lambda: "\n" + edge.log_tail())

    async def start_agent(self, *, first: bool = True, log_level: str | None = None) -> Child:
        """``heron up`` on the peer: with the setup key the first time, from its state after;
        ``log_level``: its HERON_LOG_LEVEL (None: its default, info)."""
        login = ["--setup-key", self.setup_key] if first else []
        level = {} if log_level is None else {"HERON_LOG_LEVEL": log_level}
        agent = await self.hosts.children.start(
            "agent" if first else "agent-restarted", self.hosts.peer,
            sys.executable, "-m", "heron_agent", "up", "--state-dir", str(self.hosts.work / "agent"),
            "--interface", self.hosts.agent_interface,
            "--management", f"http://{UNDERLAY_EDGE.ip}:{GRPC_PORT}", *login,
            env={"HERON_MODE": "development", "HERON_LOG_FORMAT": "json"} | level,
        )  # fmt: skip
        self.procs["agent"] = agent
        return agent

    async def wait_for_peer(self) -> None:
        """Wait for the agent's login: its peer connected, with an overlay address."""
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
        self.peer_id, self.peer_overlay = peer["id"], peer["overlay_address"]

    async def check_route(self) -> None:
        """The edge host must reach the peer's overlay address through the edge's interface."""
        route = json.loads(
            (await self.hosts.edge.run("ip", "-j", "route", "get", self.peer_overlay)).stdout
        )
        self.route_dev = route[0].get("dev", "?")
        if self.route_dev != self.hosts.edge_interface:
            raise BenchError(
                f"the edge host routes {self.peer_overlay} through {self.route_dev}, not the "
                f"edge's WireGuard interface {self.hosts.edge_interface}"
            )

    # -- measuring

    def process_groups(self, *others: str) -> dict[str, list[int]]:
        """The pids of the edge, agent, both wireguard-go and of each of ``others`` (names in
        ``procs``, with what they started), for a ``Meter``."""
        table = process_table()

        def split(root: str) -> tuple[list[int], list[int]]:
            pids = descendants(self.procs[root].pid, table) if root in self.procs else []
            wg = [pid for pid in pids if table[pid][1] == "wireguard-go"]
            return [pid for pid in pids if pid not in wg], wg

        edge, wg_edge = split("edge")
        agent, wg_peer = split("agent")
        groups = {"edge": edge, "wg-edge": wg_edge, "agent": agent, "wg-peer": wg_peer}
        return groups | {name: split(name)[0] for name in others}

    async def counters(self) -> dict[str, int]:
        """The edge's WireGuard packets, TCP connections the edge host opened, retransmissions."""
        edge, peer = await tcp_counters(self.hosts.edge), await tcp_counters(self.hosts.peer)
        done = await self.hosts.edge.run(
            "ip", "-s", "-j", "link", "show", self.hosts.edge_interface
        )
        [link] = json.loads(done.stdout)
        stats = link["stats64"]
        return {
            "wg_packets": stats["rx"]["packets"] + stats["tx"]["packets"],
            "active_opens": edge["ActiveOpens"],
            "retransmits": edge["RetransSegs"] + peer["RetransSegs"],
        }

    def log_offsets(self) -> dict[str, int]:
        return {name: child.log_size() for name, child in self.procs.items()}

    async def start_sampling(self, *groups: str) -> "Sampling":
        """Start measuring a run: the edge, the agent, both wireguard-go and ``groups``."""
        meter = Meter(self.process_groups(*groups))
        sampling = Sampling(
            lab=self, meter=meter, log_offsets=self.log_offsets(), counters=await self.counters(),
            rusage=resource.getrusage(resource.RUSAGE_CHILDREN),
        )  # fmt: skip
        meter.start()
        return sampling

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


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sampling:
    """A run being measured (``Lab.start_sampling``)."""

    lab: Lab
    meter: Meter
    log_offsets: dict[str, int]  # where the processes' logs stood: their errors since
    counters: dict[str, int]
    rusage: resource.struct_rusage

    async def finish(self, load_group: str) -> dict[str, Any]:
        """``Measured``'s fields; the CPU the bench's children (the load generator, which have
        ended) used goes to ``load_group``."""
        cpu, busy = await self.meter.stop({load_group: children_cpu_since(self.rusage)})
        now = await self.lab.counters()
        return {
            "cpu": cpu, "busy": busy,
            "rss_kib": self.meter.peak_rss_kib, "pss_kib": self.meter.peak_pss_kib,
            "wg_packets": now["wg_packets"] - self.counters["wg_packets"],
            "opened": now["active_opens"] - self.counters["active_opens"],
            "retransmits": now["retransmits"] - self.counters["retransmits"],
        }  # fmt: skip


# -- main --------------------------------------------------------------------------------------


def common_options(
    parser: argparse.ArgumentParser, *, duration_s: int, run: str, log_level_help: str
) -> None:
    """--duration, --rounds, --workers, --log-level and --keep, as both benches take them."""
    parser.add_argument(
        "--duration", type=int, default=duration_s, help=f"seconds per {run} ({duration_s})"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument(
        "--workers", type=int, default=1, help="Heron edge workers = nginx worker_processes (1)"
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help=log_level_help,
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="after the report, leave everything up until Ctrl-C (for debugging)",
    )


def check_ranges(
    parser: argparse.ArgumentParser, args: argparse.Namespace, ranges: dict[str, tuple[int, int]]
) -> None:
    """``parser.error`` unless each option named in ``ranges`` (or common) is within its range."""
    for name, (low, high) in ({"rounds": (1, 10), "workers": (1, 16)} | ranges).items():
        if not low <= getattr(args, name) <= high:
            parser.error(f"--{name} must be {low}-{high}")


def refuse_long(parser: argparse.ArgumentParser, estimate_s: float, instead: str) -> None:
    if estimate_s > RUN_LIMIT_S:
        parser.error(
            f"these options would take about {estimate_s:.0f} s; the bench stays under "
            f"{RUN_LIMIT_S:.0f} s: {instead}"
        )


def install(packages: Sequence[str]) -> None:
    """``apt-get install`` without letting a package start a system service (policy-rc.d)."""
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text(
            "#!/bin/sh\n# a Heron bench: no service starts while it installs\nexit 101\n"
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


#: the Debian packages of the tools every bench runs (the benches add theirs)
BASE_PACKAGES = {"ip": "iproute2", "ss": "iproute2", "curl": "curl", "wg": "wireguard-tools"}


def preflight(
    script: str, packages: Mapping[str, str], fallbacks: Mapping[str, str] | None = None
) -> None:
    """Refuse to run unless root; install the Debian packages of what is missing.

    ``packages``: a tool on PATH, or an absolute path, → the package that provides it; with
    ``BASE_PACKAGES`` and WireGuard (wireguard-go, unless the kernel has the module). ``fallbacks``: a package to try
    instead of another when installing that one fails (nginx-light → nginx)."""
    if os.geteuid() != 0:
        raise BenchError(
            f"{script} must run as root: it creates network namespaces, veth pairs and a "
            f"WireGuard interface (try: sudo uv run python {script})"
        )
    packages = BASE_PACKAGES | dict(packages)
    wireguard = shutil.which("wireguard-go") or Path("/sys/module/wireguard").exists()
    needed = [*packages, *([] if wireguard else ["wireguard-go"])]

    def missing() -> list[str]:
        return [
            need
            for need in needed
            if not (Path(need).exists() if need.startswith("/") else shutil.which(need))
        ]

    if lacking := missing():
        wanted = sorted({packages.get(need, need) for need in lacking})
        say(f"installing {' '.join(wanted)} (apt-get, --no-install-recommends)")
        try:
            install(wanted)
        except BenchError:
            if not set(fallbacks or {}) & set(wanted):
                raise
            install([(fallbacks or {}).get(package, package) for package in wanted])
    if lacking := missing():
        raise BenchError(f"still missing: {', '.join(lacking)}")


LabT = TypeVar("LabT", bound=Lab)


async def keep_up(lab: Lab, hint: str) -> None:
    """``--keep``: everything stays up until Ctrl-C."""
    say(
        f"--keep: everything stays up until Ctrl-C. Namespaces: {lab.hosts.describe()}; e.g.\n  {hint}"
    )
    await asyncio.Event().wait()


class BenchOptions(Protocol):
    @property
    def keep(self) -> bool: ...

    def estimate_s(self) -> float: ...


OptionsT = TypeVar("OptionsT", bound=BenchOptions)


def run_main(
    script: str,
    title: str,
    options: OptionsT,
    *,
    packages: Mapping[str, str],
    bench: Callable[[OptionsT, Callable[[LabT], None]], Awaitable[LabT]],
    report: Callable[[LabT], list[str]],
    fallbacks: Mapping[str, str] | None = None,
) -> int:
    """Check the machine (``preflight``), then run ``bench`` (given the function that prints its
    report) under the time limit, with SIGTERM and Ctrl-C tearing everything down; the
    process's exit code."""
    configure_logging(f"bench-{Path(script).stem}", level="warning", fmt=LogFormat.CONSOLE)
    printed: list[bool] = []

    def print_report(lab: LabT) -> None:
        sys.stdout.write("\n".join(report(lab)) + "\n")
        sys.stdout.flush()
        printed.append(True)

    async def amain() -> LabT:
        main_task = asyncio.current_task()
        assert main_task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
        say(f"{title}: about {options.estimate_s():.0f} s")
        started = time.monotonic()
        if options.keep:
            result = await bench(options, print_report)
        else:
            async with asyncio.timeout(RUN_LIMIT_S):
                result = await bench(options, print_report)
        say(
            f"done in {time.monotonic() - started:.0f} s; namespaces, interfaces and processes "
            "removed"
        )
        return result

    try:
        preflight(script, packages, fallbacks)
        result = asyncio.run(amain())
    except BenchError as exc:
        say(f"{script}: {exc}")
        return 1
    except TimeoutError:
        say(f"{script}: the run took longer than {RUN_LIMIT_S:.0f} s and was stopped")
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError) as exc:
        say(f"{script}: interrupted; namespaces, interfaces and processes removed")
        return 130 if isinstance(exc, KeyboardInterrupt) else 128 + signal.SIGTERM
    if not printed:
        print_report(result)
    return 1 if result.problems else 0
