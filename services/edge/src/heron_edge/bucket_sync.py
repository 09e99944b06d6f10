"""The edge's NATS side: the certmanager's certificates and ACME challenge answers, from KV.

``BucketSync`` connects to ``HERON_NATS_URL`` — retrying while NATS is away, and the edge serves
without it meanwhile — and follows two buckets with ``heron_bus.kv.watch_bucket`` (their
values, then each change; watched again after NATS was away): ``certificates`` into the
``CertificateStore``'s ``external`` seam, ``acme_challenges`` into the ``ChallengeBook``, and,
when asked, ``auth_keys`` (the gateway's public session keys) into an ``AuthKeyBook``. A value
that cannot be served is refused with one log line, and what its key held before stays. The
edge only reads here; it publishes nothing.
"""

import asyncio
from collections.abc import Callable
from contextlib import aclosing

import structlog

from heron_bus import Bus, BusError, connect
from heron_bus.kv import (
    ACME_CHALLENGES,
    AUTH_KEYS,
    CERTIFICATES,
    BucketDefinition,
    KvChange,
    watch_bucket,
)
from heron_core.backoff import Backoff
from heron_edge.certs.pairs import CertificateError
from heron_edge.certs.sources import ExternalSource
from heron_edge.certs.stored import stored_pair
from heron_edge.challenges import ChallengeBook, ChallengeError

log = structlog.get_logger(__name__)

#: between two attempts to reach NATS: quick at first, then no more than a line per this long
CONNECT_RETRY_INITIAL_S = 0.5
CONNECT_RETRY_MAX_S = 15.0


class BucketSync:
    """Feeds ``certificates`` and ``challenges`` from NATS until cancelled."""

    def __init__(
        self,
        url: str,
        *,
        certificates: ExternalSource,
        challenges: ChallengeBook,
        auth_keys: Callable[[KvChange], None] | None = None,
        client_name: str = "heron-edge",
    ) -> None:
        self._url = url
        self._certificates = certificates
        self._challenges = challenges
        self._auth_keys = auth_keys
        self._client_name = client_name

    async def run(self) -> None:
        bus = await self._connect()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(
                    _follow(bus, CERTIFICATES, self.apply_certificate), name="certificates bucket"
                )
                group.create_task(
                    _follow(bus, ACME_CHALLENGES, self.apply_challenge), name="challenges bucket"
                )
                if self._auth_keys is not None:
                    group.create_task(
                        _follow(bus, AUTH_KEYS, self._auth_keys), name="auth keys bucket"
                    )
        finally:
            await bus.close()

    def apply_certificate(self, change: KvChange) -> None:
        if change.value is None:
            self._certificates.remove(change.key)
            return
        try:
            pair = stored_pair(change.key, change.value)
        except CertificateError as exc:
            log.warning(
                "certificate refused, keeping the previous one", key=change.key, reason=exc.reason
            )
            return
        self._certificates.put(change.key, pair)

    def apply_challenge(self, change: KvChange) -> None:
        if change.value is None:
            self._challenges.remove(change.key)
            return
        try:
            self._challenges.put(change.key, change.value)
        except ChallengeError as exc:
            log.warning(
                "challenge answer refused, keeping the previous one",
                key=change.key,
                reason=str(exc),
            )

    async def _connect(self) -> Bus:
        backoff = Backoff(
            initial_s=CONNECT_RETRY_INITIAL_S, max_s=CONNECT_RETRY_MAX_S, reset_after_s=float("inf")
        )
        while True:
            try:
                bus = await connect(self._url, name=self._client_name)
            except BusError as exc:  # the message names the URL, without its credentials
                delay = backoff.delay_after(0.0)
                log.warning("waiting for NATS", reason=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                continue
            log.info("connected to NATS: certificates and challenges follow", url=bus.url)
            return bus


async def _follow(bus: Bus, bucket: BucketDefinition, apply: Callable[[KvChange], None]) -> None:
    async with aclosing(watch_bucket(bus, bucket)) as changes:
        async for change in changes:
            apply(change)
