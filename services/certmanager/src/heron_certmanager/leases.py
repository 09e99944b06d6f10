"""A lease per domain in the KV bucket ``certmanager_leases``: whoever holds it orders.

Created with ``create`` (fails while another replica holds it), kept by updating it with its
last revision (every ``RENEW_EVERY_S``; the bucket forgets an entry after ``LEASE_TTL_S``, so a
crashed holder's lease ages out). The value carries the order in progress and the key it is
finalized with: the same replica, restarted (its ``instance_id`` is stable), takes its own
lease over and finishes that order instead of placing another one.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from heron_bus.bucket import Bucket
from heron_bus.errors import BusError
from heron_bus.kv import LEASE_TTL_S
from heron_certmanager.errors import LeaseLostError
from heron_core.certificates import certificate_key
from heron_core.tasks import spawn

log = structlog.get_logger(__name__)

#: renewed three times per TTL: two lost renewals in a row still leave it held
RENEW_EVERY_S = LEASE_TTL_S / 4


class LeaseValue(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    owner: str
    acquired_at: datetime
    #: the order being worked on, once placed
    order_url: str | None = None
    #: the certificate key the order is finalized with (PEM), once chosen
    key_pem: str | None = None


class Lease:
    """A held lease; ``record`` writes progress into it, which renews it too."""

    def __init__(self, bucket: Bucket, domain: str, value: LeaseValue, revision: int) -> None:
        self._bucket = bucket
        self.domain = domain
        self.value = value
        self._revision = revision
        self._lock = asyncio.Lock()
        self.lost = False

    async def record(self, **progress: Any) -> None:
        """Write ``progress`` (order URL, key) into the lease; ``LeaseLostError`` if it is gone."""
        async with self._lock:
            if self.lost:
                raise LeaseLostError(f"the lease on {self.domain!r} was lost")
            value = self.value.model_copy(update=progress)
            revision = await self._bucket.update(
                certificate_key(self.domain), value.model_dump_json().encode(), self._revision
            )
            if revision is None:
                self.lost = True
                raise LeaseLostError(f"the lease on {self.domain!r} went to another replica")
            self.value, self._revision = value, revision

    async def release(self) -> None:
        """Give the lease up (the order is over, either way)."""
        async with self._lock:
            if not self.lost:
                await self._bucket.delete(certificate_key(self.domain), self._revision)
                self.lost = True

    @asynccontextmanager
    async def kept(self) -> AsyncIterator["Lease"]:
        """Renew the lease in the background while the block runs."""
        renewing = spawn(self._renew_forever(), name=f"lease on {self.domain}")
        try:
            yield self
        finally:
            renewing.cancel()
            with suppress(asyncio.CancelledError):
                await renewing

    async def _renew_forever(self) -> None:
        while not self.lost:
            await asyncio.sleep(RENEW_EVERY_S)
            try:
                await self.record()
            except LeaseLostError:
                log.warning("lease lost", domain=self.domain)
            except BusError as exc:  # a later renewal may still make it
                log.warning("lease not renewed", domain=self.domain, reason=str(exc))


class Leases:
    def __init__(self, bucket: Bucket, owner: str) -> None:
        self._bucket = bucket
        self.owner = owner

    async def acquire(self, domain: str) -> Lease | None:
        """The lease on ``domain``, or None while another replica holds it."""
        key = certificate_key(domain)
        fresh = LeaseValue(owner=self.owner, acquired_at=datetime.now(UTC))
        revision = await self._bucket.create(key, fresh.model_dump_json().encode())
        if revision is not None:
            return Lease(self._bucket, domain, fresh, revision)
        entry = await self._bucket.get(key)
        if entry is None or entry.value is None:
            return None  # released between the two calls: the next round takes it
        try:
            held = LeaseValue.model_validate_json(entry.value)
        except ValidationError:
            return None  # not ours to judge; it ages out
        if held.owner != self.owner:
            return None
        # ours, from before a restart: take it over with the order it names
        revision = await self._bucket.update(key, entry.value, entry.revision)
        if revision is None:
            return None
        log.info("lease taken over", domain=domain, order=held.order_url)
        return Lease(self._bucket, domain, held, revision)
