"""Certificates from a real ACME CA (Pebble): both challenge types, failure and retry."""

from datetime import timedelta
from pathlib import Path

import pytest
from certmanager_harness import (
    Observer,
    Pebble,
    Responder,
    has_any,
    publish_service,
    running,
    settings_for,
    verify,
    wait_for,
)

from heron_bus.connection import Bus
from heron_core.certificates import ChallengeType, StoredCertificate
from heron_core.events import CertificateRequested
from heron_core.types import AccountId


@pytest.mark.parametrize("challenge", [ChallengeType.HTTP_01, ChallengeType.TLS_ALPN_01])
async def test_a_new_http_service_gets_a_certificate_the_ca_signed(
    bus: Bus,
    pebble: Pebble,
    responder: Responder,
    nats_url: str,
    tmp_path: Path,
    challenge: ChallengeType,
) -> None:
    settings = settings_for(
        pebble, nats_url, tmp_path / "data", proxy_acme_challenge_type=challenge
    )
    async with Observer(bus) as observer, running(settings) as manager:
        await publish_service(bus, "app.example.test")

        async def stored() -> StoredCertificate | None:
            return await manager.state.certificate("app.example.test")

        certificate = await wait_for(stored, what="certificate in the bucket")
        await wait_for(lambda: has_any(observer.issued), what="CertificateIssued")

    leaf = verify(certificate, await pebble.root_pem())
    assert leaf.not_valid_after_utc == certificate.not_after
    assert observer.issued[0].domain == "app.example.test"
    assert observer.issued[0].renewal is False
    assert observer.failed == []
    assert pebble.order_count() == 1
    assert responder.answers == {}, "challenge answers are removed once the order is done"


async def test_a_failed_validation_is_reported_with_the_cas_reason_and_a_request_retries(
    bus: Bus, pebble: Pebble, responder: Responder, nats_url: str, tmp_path: Path
) -> None:
    domain = "broken.example.test"
    await pebble.dns("set-servfail", host=domain)
    # a long backoff: only the explicit request may bring the second order
    settings = settings_for(
        pebble, nats_url, tmp_path / "data", certmanager_retry_initial_s=3600.0,
        certmanager_retry_max_s=7200.0,
    )  # fmt: skip
    async with Observer(bus) as observer, running(settings) as manager:
        await publish_service(bus, domain)
        await wait_for(lambda: has_any(observer.failed), what="CertificateFailed")
        failed = observer.failed[0]
        record = await manager.state.record(domain)

        await pebble.dns("clear-servfail", host=domain)
        await bus.publish(CertificateRequested(account_id=AccountId("acc_test"), domain=domain))
        await wait_for(lambda: has_any(observer.issued), what="CertificateIssued after the request")

    assert failed.domain == domain
    # Pebble's own words for a name its DNS would not resolve
    assert failed.reason == f'Could not resolve URL "{domain}"', failed.reason
    assert failed.retry_at is not None
    assert failed.retry_at - failed.occurred_at > timedelta(minutes=29)  # 3600 s, jittered
    assert record is not None and record.failures == 1 and record.last_error == failed.reason
    assert pebble.order_count() == 2
