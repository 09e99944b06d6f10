"""``heron-edge``: the control process, and the data-plane workers it starts.

The control process holds what is shared and slow: the config stream from management, the
WireGuard interface, the certificates (files, local CA, and with ``HERON_NATS_URL`` the
certmanager's from NATS, with its ACME challenge answers) and the status reports. The data
plane — the public ports — runs in ``HERON_PROXY_WORKERS`` worker processes
(``heron_edge.worker``), each told every new routing table, certificate snapshot and set of
challenge answers.
"""

import asyncio
import signal
import sys
from typing import Any, Protocol

import structlog
import uvloop
from pydantic import ValidationError

from heron_core.errors import ConfigError
from heron_core.logging import configure_logging
from heron_core.tasks import spawn
from heron_core.types import ServiceMode
from heron_edge.address import Address
from heron_edge.auth_keys import AuthKeyBook
from heron_edge.bucket_sync import BucketSync
from heron_edge.certs.store import CertificateStore
from heron_edge.challenges import ChallengeBook
from heron_edge.dataplane import DataPlane, check_free
from heron_edge.health import HealthServer
from heron_edge.http.proxy import ProxyContext
from heron_edge.l4.context import L4Context
from heron_edge.management import EdgeRefusedError, Identity, ManagementLink
from heron_edge.routes import RouteTable, RoutingTable
from heron_edge.settings import EdgeSettings
from heron_edge.status import StatusReporter
from heron_edge.tunnel import EdgeTunnel
from heron_edge.workers import WorkerPool
from heron_tunnel.keys import load_or_create_private_key, public_key_of

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE_S = 5.0


class Plane(Protocol):
    """Where routing tables and certificates go: worker processes, or this process."""

    @property
    def listening(self) -> bool: ...
    @property
    def problems(self) -> list[str]: ...
    def publish(self, kind: str, payload: Any) -> None: ...
    async def applied(self) -> bool: ...
    async def stop(self, grace_s: float) -> None: ...


class LocalPlane:
    """The data plane in this process (``HERON_PROXY_WORKERS=1`` is still a worker: this is
    for tests and debugging, chosen with ``in_process=True``)."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane
        self.listening = False
        self.problems: list[str] = []

    async def start(self) -> None:
        await self._plane.start()
        self.listening = True

    def publish(self, kind: str, payload: Any) -> None:
        self._plane.apply(kind, payload)

    async def applied(self) -> bool:
        return True  # ``publish`` applies at once

    async def stop(self, grace_s: float) -> None:
        await self._plane.stop(grace_s)


def certificate_store(settings: EdgeSettings) -> CertificateStore:
    return CertificateStore(
        certificate_directory=settings.proxy_certificate_directory,
        certificate_file=settings.proxy_certificate_file,
        certificate_key_file=settings.proxy_certificate_key_file,
        wildcard_directory=settings.proxy_wildcard_cert_dir,
        local_ca_directory=settings.local_ca_dir if settings.proxy_local_ca else None,
    )


def listen_addresses(settings: EdgeSettings) -> tuple[Address, Address | None]:
    """The main and port-80 addresses, refused now if something else holds them."""
    main_address = Address.parse(settings.proxy_address)
    http_address = (
        Address.parse(settings.proxy_http_address) if settings.proxy_http_address else None
    )
    for address in (main_address, http_address):
        if address is not None:
            try:
                check_free(address)
            except OSError as exc:
                raise ConfigError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    return main_address, http_address


async def start_plane(
    settings: EdgeSettings, main: Address, http: Address | None, *, in_process: bool
) -> Plane:
    if not in_process:
        pool = WorkerPool(settings.worker_count)
        pool.start()
        return pool
    ctx = ProxyContext(limits=settings.http_limits(), auth=settings.edge_auth())
    plane = DataPlane(
        ctx, main=main, http=http, reuse_port=False,
        l4=L4Context(limits=settings.l4_limits()), health_port=settings.health_port,
    )  # fmt: skip
    local = LocalPlane(plane)
    await local.start()
    return local


def terminated_domains(settings: EdgeSettings, table: RoutingTable) -> list[str]:
    """The domains the edge terminates TLS for: HTTP services' and the auth domain."""
    domains = [r.domain for r in table.routes.values() if r.mode is ServiceMode.HTTP]
    if settings.auth_domain:
        domains.append(settings.auth_domain)  # the gateway's, served like a service's
    return domains


def bucket_sync(
    settings: EdgeSettings,
    url: str,
    certificates: CertificateStore,
    challenges: ChallengeBook,
    plane: Plane,
) -> BucketSync:
    """What the edge follows in NATS KV: certificates, challenge answers, session keys."""
    auth_keys = AuthKeyBook(on_change=lambda records: plane.publish("auth_keys", records))
    return BucketSync(
        url,
        certificates=certificates.external,
        challenges=challenges,
        auth_keys=auth_keys.apply,
        client_name=f"heron-edge {settings.proxy_instance_id}",
    )


async def serve(settings: EdgeSettings, *, in_process: bool = False) -> None:
    main_address, http_address = listen_addresses(settings)
    settings.key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_key = load_or_create_private_key(settings.key_file)
    tunnel = EdgeTunnel(
        settings.proxy_wireguard_interface,
        private_key,
        settings.proxy_wireguard_port,
        endpoints_file=settings.key_file.parent / "endpoints.json",
    )
    certificates = certificate_store(settings)
    await certificates.start()

    plane = await start_plane(settings, main_address, http_address, in_process=in_process)
    plane.publish("certificates", certificates.snapshot)
    challenges = ChallengeBook(on_change=lambda answers: plane.publish("challenges", answers))

    routes = RouteTable()

    def has_certificate(domain: str) -> bool:
        snapshot = certificates.snapshot
        if settings.proxy_acme_certificates:
            return snapshot.covered(domain)  # the CA's or a file's, not the local CA's stand-in
        return snapshot.lookup(domain) is not None

    def resend_statuses() -> None:
        reporter.resend()

    def on_table(table: RoutingTable) -> None:
        certificates.ensure_local(terminated_domains(settings, table))
        plane.publish("table", table)
        reporter.update_table(table)

    identity = Identity(
        instance_id=settings.proxy_instance_id,
        proxy_domain=settings.proxy_domain,
        public_key=public_key_of(private_key),
        endpoint=settings.wireguard_endpoint,
        supports_custom_ports=settings.proxy_supports_custom_ports,
        require_subdomain=settings.proxy_require_subdomain,
    )
    link = ManagementLink(
        settings.proxy_management_url,
        settings.proxy_token.get_secret_value(),
        identity,
        tunnel,
        routes,
        on_table=on_table,
        on_synced=resend_statuses,
    )
    reporter = StatusReporter(tunnel, has_certificate, link.send_status, plane.applied)

    def problems() -> list[str]:
        found = list(plane.problems)
        if not routes.ready:
            found.append("no config snapshot from management yet")
        if not plane.listening:
            found.append("the data plane is not listening yet")
        return found

    health_address = Address.parse(settings.proxy_health_address, default_host="127.0.0.1")
    health = HealthServer(health_address.host, health_address.port, problems)
    await health.start()

    async def push_certificates() -> None:
        async for snapshot in certificates.changes():
            plane.publish("certificates", snapshot)
            reporter.poke()

    tasks = [
        spawn(push_certificates(), name="certificates to the data plane"),
        spawn(reporter.run(), name="service status"),
    ]
    if settings.nats_url:
        sync = bucket_sync(settings, settings.nats_url, certificates, challenges, plane)
        tasks.append(spawn(sync.run(), name="certificates, challenges and auth keys from NATS"))
    log.info(
        "edge starting",
        main=str(main_address),
        http=str(http_address) if http_address else None,
        health=str(health_address),
        workers=0 if in_process else settings.worker_count,
        local_ca=str(settings.local_ca_dir / "root.crt") if settings.proxy_local_ca else None,
        certificates_from_nats=bool(settings.nats_url),
    )
    try:
        await link.run()
    finally:
        for task in tasks:
            task.cancel()
        # awaited, so the NATS connection closes; a task that had died says why once
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, Exception):
                log.error("background task had failed", error=repr(outcome))
        await plane.stop(SHUTDOWN_GRACE_S)
        await health.stop()
        await certificates.close()
        await tunnel.down()


def main() -> None:
    try:
        settings = EdgeSettings()
    except (ConfigError, ValidationError) as exc:
        print(f"heron-edge: {exc}", file=sys.stderr)  # noqa: T201  (logging is not set up yet)
        sys.exit(2)
    configure_logging("edge", level=settings.log_level, fmt=settings.log_format)

    async def run() -> int:
        task = spawn(serve(settings), name="edge")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            log.info("edge stopped")
            return 0
        except EdgeRefusedError as exc:
            log.error("edge stopped", reason=str(exc))
            return 1
        except ConfigError as exc:
            log.error("edge cannot start", reason=str(exc))
            return 2
        return 0

    sys.exit(uvloop.run(run()))


if __name__ == "__main__":
    main()
