"""A domain's certificate over its life: renewed at 2/3 of its lifetime, gone with its
service, moved with its domain; none for L4 services or domains a wildcard file covers."""

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trustme
from certmanager_harness import (
    Observer,
    Pebble,
    Responder,
    publish_service,
    running,
    settings_for,
    verify,
    wait_for,
)

from heron_bus.connection import Bus
from heron_core.certificates import StoredCertificate
from heron_core.types import ChangeKind, ServiceMode

#: Pebble's certificates live this long in the renewal test (its ``certificateValidityPeriod``)
SHORT_VALIDITY_S = 12


async def test_a_certificate_is_renewed_at_two_thirds_of_its_lifetime(
    bus: Bus, nats_url: str, tmp_path: Path
) -> None:
    domain = "renew.example.test"
    async with (
        Pebble(tmp_path / "pebble", validity_s=SHORT_VALIDITY_S) as pebble,
        Responder(bus, pebble.http_port, pebble.tls_port, tmp_path),
        Observer(bus) as observer,
        running(settings_for(pebble, nats_url, tmp_path / "data")) as manager,
    ):
        await publish_service(bus, domain)
        first = await wait_for(
            lambda: manager.state.certificate(domain), what="the first certificate"
        )

        async def renewed() -> StoredCertificate | None:
            current = await manager.state.certificate(domain)
            return current if current and current.not_after > first.not_after else None

        second = await wait_for(renewed, timeout_s=SHORT_VALIDITY_S * 3, what="a renewal")
        root = await pebble.root_pem()

    lifetime = first.not_after - first.not_before
    assert lifetime <= timedelta(seconds=SHORT_VALIDITY_S + 1)
    # renewed after 2/3 of the first one's lifetime, before it expired
    assert second.issued_at >= first.not_before + lifetime * 2 / 3 - timedelta(seconds=1)
    assert second.issued_at < first.not_after
    assert second.key_pem != first.key_pem, "a renewal gets a new key"
    verify(second, root)
    assert [event.renewal for event in observer.issued[:2]] == [False, True]


async def test_deleting_the_service_removes_its_certificate(
    bus: Bus, pebble: Pebble, responder: Responder, nats_url: str, tmp_path: Path
) -> None:
    domain = "gone.example.test"
    async with running(settings_for(pebble, nats_url, tmp_path / "data")) as manager:
        await publish_service(bus, domain)
        await wait_for(lambda: manager.state.certificate(domain), what="certificate")

        await publish_service(bus, domain, change=ChangeKind.DELETED)

        async def removed() -> bool:
            return await manager.state.certificate(domain) is None

        await wait_for(removed, what="certificate removed")
        record = await manager.state.record(domain)

    assert record is not None and not record.wanted, "kept as a tombstone against late events"


async def test_a_changed_domain_moves_the_certificate(
    bus: Bus, pebble: Pebble, responder: Responder, nats_url: str, tmp_path: Path
) -> None:
    async with running(settings_for(pebble, nats_url, tmp_path / "data")) as manager:
        await publish_service(bus, "old.example.test")
        await wait_for(lambda: manager.state.certificate("old.example.test"), what="old one")

        await publish_service(
            bus, "new.example.test", change=ChangeKind.UPDATED, previous_domain="old.example.test"
        )
        await wait_for(lambda: manager.state.certificate("new.example.test"), what="new one")

        async def old_removed() -> bool:
            return await manager.state.certificate("old.example.test") is None

        await wait_for(old_removed, what="old certificate removed")


async def test_l4_services_and_covered_domains_get_no_order(
    bus: Bus, pebble: Pebble, responder: Responder, nats_url: str, tmp_path: Path
) -> None:
    wildcards = tmp_path / "wildcards"
    wildcards.mkdir()
    trustme.CA().issue_cert("*.covered.test").cert_chain_pems[0].write_to_path(
        str(wildcards / "covered.crt")
    )
    settings = settings_for(pebble, nats_url, tmp_path / "data", proxy_wildcard_cert_dir=wildcards)
    async with running(settings) as manager:
        await publish_service(bus, "app.covered.test")
        await publish_service(bus, "tunnel.example.test", mode=ServiceMode.TCP)
        await publish_service(bus, "control.example.test")  # the one that needs ACME
        await wait_for(lambda: manager.state.certificate("control.example.test"), what="control")
        await asyncio.sleep(0.5)  # a pass after the control's: nothing else was started
        listing = {entry["domain"]: entry for entry in manager.domains()[1]["domains"]}

    assert pebble.order_count() == 1
    assert listing["app.covered.test"]["wanted"] is True
    assert listing["app.covered.test"]["next_order_at"] is None
    assert listing["tunnel.example.test"]["wanted"] is False
    assert listing["control.example.test"]["certificate_not_after"] > datetime.now(UTC)
