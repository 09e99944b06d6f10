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
  peer's overlay address, through the WireGuard interface the edge created;
- **heron-auth**: the same through a second service, ``locked.bench.heron.test``, that requires
  a password login: the bench logs in once at the auth gateway (``/.heron/auth/login``) and wrk
  sends the session cookie with every request, which the edge verifies (``ratio_auth_rps`` =
  heron-auth / heron).

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
sys.path.append(str(_BENCH_DIR))  # last, after the standard library: for ``_netlab``

import argparse
import contextlib
import dataclasses
import json
import os
import re
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from _netlab import (
    LOCALHOST,
    NATS_PORT,
    NGINX_MAIN,
    PROXY_DOMAIN,
    READY_TIMEOUT_S,
    REST,
    BenchError,
    Hosts,
    Lab,
    Measured,
    Names,
    check_ranges,
    common_options,
    eventually,
    keep_up,
    make_certificate,
    open_hosts,
    refuse_long,
    result_line,
    run_main,
    say,
    wait_listening,
)

NAMES = Names(
    bench="http", client="hbhc", edge="hbhe", peer="hbhp", edge_wg="hbhw", agent_wg="hbha"
)
APP_DOMAIN = f"app.{PROXY_DOMAIN}"
#: the session-protected service (password login at the auth gateway)
LOCKED_DOMAIN = f"locked.{PROXY_DOMAIN}"
LOCKED_PASSWORD = "bench-password-1"  # noqa: S105  (the bench's own throw-away service)
#: edge host, 127.0.0.1: the auth gateway
GATEWAY_PORT = 8081
#: edge host, all addresses: the Heron edge's TLS port and the reference nginx's
HERON_PORT, NGINX_PORT = 8443, 9443
#: peer host, 0.0.0.0: the backend nginx
BACKEND_PORT = 8080
BODY = "hello world\n"
HERON, NGINX, HERON_INFO, HERON_AUTH = "heron", "nginx", "heron-info", "heron-auth"
#: wrk runs before the measured ones, per system, not counted
WARMUP_S = 3
#: wrk's own deadline per request: slower ones count as timeouts (errors)
WRK_TIMEOUT_S = 5
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
#: the auth issue's target: a session-protected service >= 0.9x the rps of an open one
TARGET_AUTH_RATIO = 0.9

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

BACKEND_CONF = (
    NGINX_MAIN
    + """
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
)

REFERENCE_CONF = (
    NGINX_MAIN
    + """
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
)


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
        total = FIXED_COST_S + 3 * (WARMUP_S + 1) + 3 * self.rounds * per_run
        if self.info_row:
            total += RESTART_COST_S + WARMUP_S + 1 + self.rounds * per_run
        return total


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        description="Heron HTTP bench: wrk through the Heron edge vs nginx doing the same job."
    )
    common_options(
        parser,
        duration_s=10,
        run="wrk run",
        log_level_help="the edge's HERON_LOG_LEVEL for the main rows (warning: no access log "
        "lines)",
    )
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument(
        "--no-info-row",
        action="store_true",
        help="skip the extra row: the edge restarted with HERON_LOG_LEVEL=info (access log on)",
    )
    args = parser.parse_args(argv)
    check_ranges(parser, args, {"duration": (2, 60), "connections": (1, 10000)})
    if not 1 <= args.threads <= args.connections:
        parser.error("--threads must be 1 to --connections")
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
    refuse_long(parser, options.estimate_s(), "fewer rounds, shorter runs or --no-info-row")
    return options


#: the process groups whose CPU and memory each run records
GROUPS = ("edge", "wg-edge", "agent", "wg-peer", "backend", "nginx", "wrk")


# -- wrk ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Run(Measured):
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


@dataclasses.dataclass(kw_only=True)
class HttpBench(Lab):
    """The lab, the bench's options and certificate; ``runs`` holds the measurements."""

    options: Options
    ca_file: Path
    cert_dir: Path
    tls: dict[str, str] = dataclasses.field(default_factory=dict)
    runs: list[Run] = dataclasses.field(default_factory=list)
    wrk_script: Path = Path()
    #: ``heron_session=<token>``, from the bench's login to the protected service
    session_cookie: str = ""

    # -- starting things

    async def start_backend(self) -> None:
        self.procs["backend"] = await self.start_nginx(
            "backend", self.hosts.peer, BACKEND_CONF.format(
                prefix="{prefix}", workers=1, port=BACKEND_PORT, body=BODY.replace("\n", "\\n")
            ),
        )  # fmt: skip
        await wait_listening(self.hosts.peer, BACKEND_PORT, self.procs["backend"])

    async def start_heron_edge(self, log_level: str) -> None:
        await self.start_edge(
            "edge" if log_level == self.options.log_level else f"edge-{log_level}",
            log_level=log_level, workers=self.options.workers,
            env={
                "HERON_PROXY_ADDRESS": f":{HERON_PORT}",
                "HERON_PROXY_CERTIFICATE_DIRECTORY": str(self.cert_dir),
                # the session keys (auth_keys) and the gateway for /.heron/auth/
                "HERON_NATS_URL": f"nats://{LOCALHOST}:{NATS_PORT}",
                "HERON_PROXY_AUTHGATEWAY_URL": f"http://{LOCALHOST}:{GATEWAY_PORT}",
            },
        )  # fmt: skip

    async def start_gateway(self) -> None:
        """The auth gateway on the edge host's 127.0.0.1, as the stack runs it."""
        gateway = await self.hosts.children.start(
            "authgateway", self.hosts.edge, sys.executable, "-m", "heron_authgateway",
            env={
                "HERON_MODE": "development", "HERON_LOG_FORMAT": "json",
                "HERON_DATA_DIR": str(self.hosts.work / "authgateway"),
                "HERON_NATS_URL": f"nats://{LOCALHOST}:{NATS_PORT}",
                "HERON_AUTHGATEWAY_HOST": LOCALHOST,
                "HERON_AUTHGATEWAY_PORT": str(GATEWAY_PORT),
            },
        )  # fmt: skip
        self.procs["authgateway"] = gateway

        async def ready() -> bool:
            if not gateway.running:
                raise BenchError(f"the auth gateway exited:\n{gateway.log_tail()}")
            done = await self.hosts.edge.run(
                "curl", "-s", "--noproxy", "*", "--max-time", "2", "-o", "/dev/null",
                "-w", "%{http_code}", f"http://{LOCALHOST}:{GATEWAY_PORT}/healthz/ready",
                check=False,
            )  # fmt: skip
            return done.stdout == b"200"

        await eventually("the auth gateway's /healthz/ready", ready)

    async def start_service(self) -> None:
        """Wait for the agent's login, then make the HTTP service on its peer."""
        await self.wait_for_peer()
        await self.api_ok(
            "POST", "/api/services",
            {"name": "bench", "domain": APP_DOMAIN, "targets": [
                {"target_type": "peer", "target_id": self.peer_id, "port": BACKEND_PORT,
                 "protocol": "http"},
            ]},
        )  # fmt: skip
        await self.api_ok(
            "POST", "/api/services",
            {"name": "bench-locked", "domain": LOCKED_DOMAIN, "targets": [
                {"target_type": "peer", "target_id": self.peer_id, "port": BACKEND_PORT,
                 "protocol": "http"},
            ], "auth": {"password_auth": {"enabled": True, "password": LOCKED_PASSWORD}}},
        )  # fmt: skip

    async def log_in(self) -> None:
        """Log in to the protected service as a browser would (the login form), keep the cookie;
        first check that it refuses a request without one."""

        async def refused() -> bool:
            status, _, _ = await self.fetch(HERON_AUTH, cookie=False)
            return status == 401

        await eventually(f"{LOCKED_DOMAIN} refusing a request without a session", refused)

        async def logged_in() -> str | None:
            done = await self.hosts.client.run(
                "curl", "-sS", "--noproxy", "*", "--max-time", "10", "--cacert", str(self.ca_file),
                "-o", "/dev/null", "-D", "-", "--data-urlencode", "method=password",
                "--data-urlencode", f"password={LOCKED_PASSWORD}", "--data-urlencode", "rd=/",
                f"https://{LOCKED_DOMAIN}:{HERON_PORT}/.heron/auth/login",
                check=False, timeout_s=15,
            )  # fmt: skip
            found = re.search(
                r"^set-cookie:\s*(heron_session=[^;\s]+)", done.stdout.decode(errors="replace"),
                re.IGNORECASE | re.MULTILINE,
            )  # fmt: skip
            return found[1] if found else None

        self.session_cookie = await eventually("a session cookie from the login form", logged_in)

    async def start_reference(self) -> None:
        config = REFERENCE_CONF.format(
            prefix="{prefix}", workers=self.options.workers, port=NGINX_PORT, domain=APP_DOMAIN,
            cert=self.cert_dir / "tls.crt", key=self.cert_dir / "tls.key",
            upstream=f"{self.peer_overlay}:{BACKEND_PORT}",
        )  # fmt: skip
        self.procs["nginx"] = await self.start_nginx("nginx", self.hosts.edge, config)
        await wait_listening(self.hosts.edge, NGINX_PORT, self.procs["nginx"])
        await self.check_route()

    # -- checking and measuring

    def url(self, system: str) -> str:
        if system == NGINX:
            return f"https://{APP_DOMAIN}:{NGINX_PORT}/"
        return f"https://{LOCKED_DOMAIN if system == HERON_AUTH else APP_DOMAIN}:{HERON_PORT}/"

    def headers(self, system: str) -> list[str]:
        """curl's and wrk's ``-H`` arguments for ``system``: the session cookie for heron-auth.
        No ``Accept: text/html``: a refused session is then a 401, which wrk counts as an error,
        not a browser's 302 to the login page, which it would count as an answer."""
        return ["-H", f"Cookie: {self.session_cookie}"] if system == HERON_AUTH else []

    async def fetch(self, system: str, *, cookie: bool = True) -> tuple[int, str, str]:
        """One request from the client host: (status or 0, body or curl's error, "TLS cipher")."""
        done = await self.hosts.client.run(
            "curl", "-sS", "-v", "--noproxy", "*", "--max-time", "5", "--cacert", str(self.ca_file),
            *(self.headers(system) if cookie else []),
            "-w", "\n%{http_code}", self.url(system), check=False, timeout_s=10,
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

    async def wrk(self, round_: int, system: str, seconds: int) -> Run:
        opts = self.options
        sampling = await self.start_sampling("backend", "nginx")
        done = await self.hosts.client.run(
            "wrk", f"-t{opts.threads}", f"-c{opts.connections}", f"-d{seconds}s",
            "--timeout", f"{WRK_TIMEOUT_S}s", "-s", str(self.wrk_script), *self.headers(system),
            self.url(system), check=False, timeout_s=seconds + 30,
        )  # fmt: skip
        measured = await sampling.finish("wrk")  # wrk was our child: its CPU is here
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
            non_2xx=report["status"], **measured,
        )  # fmt: skip
        errors = ""
        if run.errors:
            errors = (
                f"  ERRORS: connect {report['connect']} read {report['read']} write "
                f"{report['write']} timeout {report['timeout']} non-2xx/3xx {report['status']}"
            )
        say(
            f"  {'warm-up' if round_ == 0 else f'round {round_}'} {system:<10} {run.rps:9.0f} rps"
            f"  p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms  busy {run.busy:4.0%}{errors}"
        )
        if system != NGINX and (logged := self.heron_errors(sampling.log_offsets)):
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

    async def set_up(self) -> None:
        """Start everything and check one request through each path."""
        started = time.monotonic()
        await self.start_management()
        await self.start_gateway()
        await self.start_backend()
        await self.start_heron_edge(self.options.log_level)
        await self.start_agent()
        await self.start_service()
        await self.start_reference()
        await self.verify(NGINX)
        await self.verify(HERON)
        await self.log_in()
        await self.verify(HERON_AUTH)
        say(
            f"up in {time.monotonic() - started:.1f} s: peer {self.peer_overlay} via "
            f"{self.route_dev}; TLS heron {self.tls[HERON]}, nginx {self.tls[NGINX]}"
        )

    async def measure(self) -> None:
        """Warm-up, the interleaved rounds, then the info-level row."""
        measured = (HERON, NGINX, HERON_AUTH)
        for system in measured:
            await self.wrk(0, system, WARMUP_S)
        for round_ in range(1, self.options.rounds + 1):
            shift = round_ % len(measured)  # each system takes each place in turn
            for system in measured[shift:] + measured[:shift]:
                await self.wrk(round_, system, self.options.duration_s)
        for system in measured:  # still serving the right answer after the load
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
        await self.hosts.children.stop(self.procs.pop("edge"))
        started = time.monotonic()
        await self.start_heron_edge(log_level)
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
            await self.hosts.children.stop(self.procs.pop("agent"))
            await self.start_agent(first=False)
            await self.verify(HERON)
        else:
            self.notes.append(
                f"the edge served again {time.monotonic() - started:.1f} s after its restart"
            )


async def bench(options: Options, print_report: Callable[[HttpBench], None]) -> HttpBench:
    async with contextlib.AsyncExitStack() as stack:
        hosts: Hosts = await open_hosts(stack, NAMES, client_hosts=[APP_DOMAIN, LOCKED_DOMAIN])
        cert_dir = hosts.work / "certs"
        run = HttpBench(
            hosts=hosts, options=options, cert_dir=cert_dir,
            ca_file=make_certificate(cert_dir, APP_DOMAIN, f"*.{PROXY_DOMAIN}"),
        )  # fmt: skip
        run.wrk_script = hosts.work / "report.lua"
        run.wrk_script.write_text(WRK_SCRIPT)

        await run.set_up()
        await run.measure()

        if options.keep:
            print_report(run)
            await keep_up(
                run,
                f"ip netns exec {hosts.client.name} curl --cacert {run.ca_file} "
                f"https://{APP_DOMAIN}:{HERON_PORT}/",
            )
        return run
    raise AssertionError("unreachable")  # the exit stack does not swallow exceptions


# -- report ------------------------------------------------------------------------------------


def median(run: HttpBench, system: str, value: Callable[[Run], float]) -> float:
    return statistics.median(value(r) for r in run.runs if r.system == system)


def runs_of(run: HttpBench, system: str) -> list[Run]:
    return [r for r in run.runs if r.system == system]


def systems(run: HttpBench) -> list[str]:
    return [
        s for s in (HERON, NGINX, HERON_INFO, HERON_AUTH) if any(r.system == s for r in run.runs)
    ]


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
            + f" {r.busy:5.0%} {r.packets_per_request:10.2f} {r.opened:6d} "
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
    if HERON_AUTH in systems(run):
        auth_met = (
            summary["ratio_auth_rps"] >= TARGET_AUTH_RATIO
            and summary["heron_auth_errors"] == 0
            and not run.problems
        )
        lines.append(
            f"session-protected/open service (heron-auth/heron): rps "
            f"{summary['ratio_auth_rps']:.3f}; target >= {TARGET_AUTH_RATIO}, no errors: "
            f"{'met' if auth_met else 'NOT met'}"
        )
    if HERON_INFO in systems(run):
        lines.append(
            f"with the access log on (HERON_LOG_LEVEL=info, after the nginx rounds): rps "
            f"{summary['ratio_rps_info']:.3f}, p99 {summary['ratio_p99_info']:.3f} of nginx"
        )
    lines += [f"NOTE: {note}" for note in run.notes]
    lines += [f"PROBLEM: {problem}" for problem in run.problems]
    lines.append(result_line(summary))
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
    if any(r.system == HERON_AUTH for r in run.runs):
        out["heron_auth_rps"] = median(run, HERON_AUTH, lambda r: r.rps)
        out["heron_auth_p99_ms"] = median(run, HERON_AUTH, lambda r: r.p99_ms)
        out["ratio_auth_rps"] = out["heron_auth_rps"] / out["heron_rps"]
        out["heron_auth_errors"] = sum(r.errors for r in run.runs if r.system == HERON_AUTH)
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


# -- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(
        "bench/http.py", "Heron HTTP bench", parse_options(sys.argv[1:] if argv is None else argv),
        packages={"nginx": "nginx-light", "wrk": "wrk"}, fallbacks={"nginx-light": "nginx"},
        bench=bench, report=report,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
