"""One certificate per domain however many replicas there are, and however they stop."""

import asyncio
import os
import signal
import sys
from pathlib import Path

from certmanager_harness import (
    WAIT_S,
    Observer,
    Pebble,
    Responder,
    has_any,
    publish_service,
    running,
    settings_for,
    stored_certificate,
    verify,
    wait_for,
)

from heron_bus.connection import Bus
from heron_core.certificates import ChallengeType


async def test_two_replicas_racing_for_one_domain_place_one_order(
    bus: Bus, pebble: Pebble, responder: Responder, nats_url: str, tmp_path: Path
) -> None:
    domain = "race.example.test"
    first = settings_for(pebble, nats_url, tmp_path / "a", certmanager_instance_id="replica-a")
    second = settings_for(pebble, nats_url, tmp_path / "b", certmanager_instance_id="replica-b")
    async with Observer(bus) as observer, running(first) as a, running(second) as b:
        await publish_service(bus, domain)

        async def in_both_views() -> bool:
            return all(m.certificates.get(domain) is not None for m in (a, b))

        await wait_for(in_both_views, what="both replicas see the certificate")
        await asyncio.sleep(1.0)  # the loser's retry after the busy lease comes and goes
        issued = list(observer.issued)

    assert pebble.order_count() == 1
    assert [event.domain for event in issued] == [domain]


async def test_a_replica_killed_mid_order_finishes_that_order_after_its_restart(
    bus: Bus, pebble: Pebble, nats_url: str, tmp_path: Path
) -> None:
    domain = "restart.example.test"
    settings = settings_for(
        pebble, nats_url, tmp_path / "data", proxy_acme_challenge_type=ChallengeType.HTTP_01
    )
    async with (
        Responder(bus, pebble.http_port, pebble.tls_port, tmp_path, hold=True) as responder,
        Observer(bus) as observer,
    ):
        crashed = await _start_process(settings_env(settings), tmp_path / "first.log")
        await publish_service(bus, domain)
        # Pebble is validating: the order is placed and its challenge answered
        await asyncio.wait_for(responder.seen.wait(), WAIT_S)
        crashed.send_signal(signal.SIGKILL)
        await asyncio.wait_for(crashed.wait(), WAIT_S)
        responder.release.set()  # the validation the dead replica asked for succeeds

        restarted = await _start_process(settings_env(settings), tmp_path / "second.log")
        try:
            certificate = await wait_for(
                lambda: stored_certificate(bus, domain), what="certificate after the restart"
            )
            await wait_for(lambda: has_any(observer.issued), what="CertificateIssued")
        finally:
            restarted.terminate()
            await asyncio.wait_for(restarted.wait(), WAIT_S)

    verify(certificate, await pebble.root_pem())
    assert pebble.order_count() == 1, "the restarted replica finished the order it had placed"
    assert "order resumed" in (tmp_path / "second.log").read_text()
    assert len(observer.issued) == 1


def settings_env(settings: object) -> dict[str, str]:
    """The environment that gives ``python -m heron_certmanager`` these settings."""
    values = settings.model_dump()  # type: ignore[attr-defined]
    names = {
        "acme_directory_url": "HERON_ACME_DIRECTORY_URL",
        "proxy_acme_challenge_type": "HERON_PROXY_ACME_CHALLENGE_TYPE",
        "proxy_certificate_directory": "HERON_PROXY_CERTIFICATE_DIRECTORY",
    }
    env = {
        names.get(name, f"HERON_{name.upper()}"): str(getattr(value, "value", value))
        for name, value in values.items()
        if value is not None
    }
    return {**env, "HERON_LOG_FORMAT": "console", "HERON_LOG_LEVEL": "info"}


async def _start_process(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as output:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "heron_certmanager",
            stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=output,
            env={**os.environ, **env},
        )  # fmt: skip
