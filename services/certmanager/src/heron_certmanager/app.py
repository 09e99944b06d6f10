"""The certmanager process, wired: the only module that knows every part.

``run(settings)`` connects to NATS, makes sure of the stream and the four buckets, and runs,
until cancelled: the mirrors of the records and certificates, the event intake, the
reconciler and the health server. ``Certmanager`` holds them so tests can start several
replicas in one process and look inside.
"""

import asyncio
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import structlog

from heron_bus.bucket import Bucket
from heron_bus.connection import Bus, connect
from heron_bus.errors import BusError
from heron_bus.kv import ACME_CHALLENGES, CERTIFICATES, LEASES
from heron_bus.streams import ensure_streams
from heron_certmanager.acme_client import AcmeAccount, load_or_create_account_key
from heron_certmanager.coverage import CoveringFiles
from heron_certmanager.health import HealthServer, Route
from heron_certmanager.intake import Intake
from heron_certmanager.leases import Leases
from heron_certmanager.mirror import Mirror
from heron_certmanager.ordering import Orderer
from heron_certmanager.policy import RetryPolicy, renewal_at
from heron_certmanager.reconciler import Reconciler, validity
from heron_certmanager.records import DOMAINS, DomainRecord
from heron_certmanager.settings import CertmanagerSettings
from heron_certmanager.state import State
from heron_core.certificates import StoredCertificate
from heron_core.events import Event

log = structlog.get_logger(__name__)

#: an event that could not be published is tried again this often before it is given up
PUBLISH_ATTEMPTS = 5
PUBLISH_RETRY_S = 1.0


@dataclass
class Certmanager:
    settings: CertmanagerSettings
    bus: Bus
    state: State
    records: Mirror[DomainRecord]
    certificates: Mirror[StoredCertificate]
    reconciler: Reconciler
    intake: Intake
    health: HealthServer = field(init=False)

    def __post_init__(self) -> None:
        routes: dict[str, Route] = {
            "/healthz/live": lambda: (HTTPStatus.OK, {"status": "live"}),
            "/healthz/ready": self.readiness,
            "/domains": self.domains,
        }
        self.health = HealthServer(
            self.settings.certmanager_host, self.settings.certmanager_port, routes
        )

    @classmethod
    async def connect(cls, settings: CertmanagerSettings) -> "Certmanager":
        account = AcmeAccount(
            settings.directory_url,
            await asyncio.to_thread(load_or_create_account_key, settings.account_key_file),
            email=settings.acme_email,
            ca_file=settings.acme_ca_file,
        )
        bus = await connect(
            settings.nats_url, name=f"heron-certmanager {settings.certmanager_instance_id}"
        )
        try:
            await ensure_streams(bus)
            state = State(
                records=await Bucket.open(bus, DOMAINS),
                certificates=await Bucket.open(bus, CERTIFICATES),
                challenges=await Bucket.open(bus, ACME_CHALLENGES),
            )
            leases = Leases(await Bucket.open(bus, LEASES), settings.certmanager_instance_id)
        except BaseException:
            await bus.close()
            raise
        return cls.assemble(settings, bus, state, account, leases)

    @classmethod
    def assemble(
        cls,
        settings: CertmanagerSettings,
        bus: Bus,
        state: State,
        account: AcmeAccount,
        leases: Leases,
    ) -> "Certmanager":
        def poke(key: str) -> None:
            reconciler.poke(key)

        records = Mirror(state.records, DomainRecord.decode, poke)
        certificates = Mirror(state.certificates, StoredCertificate.decode, poke)

        async def publish(event: Event) -> None:
            await _publish(bus, event)

        reconciler = Reconciler(
            state=state,
            records=records,
            certificates=certificates,
            files=_covering_files(settings),
            leases=leases,
            orderer=Orderer(
                account,
                state,
                settings.proxy_acme_challenge_type,
                settings.certmanager_order_timeout_s,
                settings.certmanager_challenge_propagation_s,
            ),
            publish=publish,
            retry=RetryPolicy(
                settings.certmanager_retry_initial_s, settings.certmanager_retry_max_s
            ),
            max_concurrent=settings.certmanager_max_concurrent_orders,
            rescan_s=settings.certmanager_rescan_interval_s,
            rng=random.Random(),  # noqa: S311  (jitter, not a secret)
        )
        return cls(
            settings, bus, state, records, certificates, reconciler, Intake(bus, state, records)
        )

    async def run(self) -> None:
        """Run until cancelled; then close the connection."""
        await self.health.start()
        log.info(
            "certmanager starting",
            instance=self.settings.certmanager_instance_id,
            acme=self.settings.directory_url,
            challenge=self.settings.proxy_acme_challenge_type.value,
            health=f"http://{self.settings.certmanager_host}:{self.health.port}/healthz/ready",
        )
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.records.run(), name="records mirror")
                group.create_task(self.certificates.run(), name="certificates mirror")
                group.create_task(self.reconciler.run(), name="reconciler")
                group.create_task(self.intake.run(), name="intake")
        finally:
            await self.health.stop()
            await self.bus.close()

    def problems(self) -> list[str]:
        found = [] if self.bus.is_connected else ["not connected to NATS"]
        if not (self.records.synced.is_set() and self.certificates.synced.is_set()):
            found.append("KV buckets not read yet")
        return found

    def readiness(self) -> tuple[HTTPStatus, Any]:
        if problems := self.problems():
            return HTTPStatus.SERVICE_UNAVAILABLE, {"status": "not ready", "problems": problems}
        return HTTPStatus.OK, {"status": "ready"}

    def domains(self) -> tuple[HTTPStatus, Any]:
        now = datetime.now(UTC)
        files = self.reconciler.files.certificates()
        listing = []
        for key, (record, _) in sorted(self.records.entries.items()):
            held = validity(self.certificates.get(key))
            listing.append(
                {
                    **record.model_dump(mode="json", exclude={"schema_version"}),
                    "certificate_not_after": held.not_after if held else None,
                    "renew_at": renewal_at(held) if held else None,
                    "next_order_at": self.reconciler.due(record, files, now),
                }
            )
        return HTTPStatus.OK, {"domains": listing}


async def run(settings: CertmanagerSettings) -> None:
    manager = await Certmanager.connect(settings)
    await manager.run()


def _covering_files(settings: CertmanagerSettings) -> CoveringFiles:
    static = settings.proxy_certificate_directory / settings.proxy_certificate_file
    wildcard = settings.proxy_wildcard_cert_dir
    return CoveringFiles(paths=[static], directories=[wildcard] if wildcard else [])


async def _publish(bus: Bus, event: Event) -> None:
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            await bus.publish(event)
            return
        except BusError as exc:
            if attempt == PUBLISH_ATTEMPTS:
                log.error("event lost", event=type(event).__name__, reason=str(exc))
                return
            await asyncio.sleep(PUBLISH_RETRY_S)
