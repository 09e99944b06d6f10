"""The certmanager's state in NATS KV: records (``certmanager_domains``), certificates
(``certificates``) and challenge answers (``acme_challenges``), read and written whole.

Records change only through ``change_record``: read, apply a pure function, write back if
nobody wrote in between, else again — so replicas handling events and orders at once never
lose each other's writes.
"""

from collections.abc import Callable
from typing import TypeVar

import structlog

from heron_bus.bucket import Bucket
from heron_bus.errors import BusError
from heron_certmanager.records import DomainRecord
from heron_core.certificates import ChallengeAnswer, StoredCertificate, certificate_key

log = structlog.get_logger(__name__)

#: writers racing on one record: each round one of them wins, so this many always suffices in
#: practice; more means something keeps rewriting it
MAX_WRITE_ROUNDS = 20

T = TypeVar("T")


class State:
    def __init__(self, *, records: Bucket, certificates: Bucket, challenges: Bucket) -> None:
        self.records = records
        self.certificates = certificates
        self.challenges = challenges

    async def record(self, domain: str) -> DomainRecord | None:
        entry = await self.records.get(certificate_key(domain))
        return _decoded(DomainRecord.decode, entry.value) if entry and entry.value else None

    async def change_record(
        self, domain: str, change: Callable[[DomainRecord | None], DomainRecord | None]
    ) -> DomainRecord | None:
        """``change`` applied to the domain's record and written back; what ``change`` returned
        (None: leave the record as it is)."""
        key = certificate_key(domain)
        for _ in range(MAX_WRITE_ROUNDS):
            entry = await self.records.get(key)
            current = _decoded(DomainRecord.decode, entry.value) if entry and entry.value else None
            changed = change(current)
            if changed is None or changed == current:
                return changed
            value = changed.encode()
            if entry is None or entry.value is None:
                written = await self.records.create(key, value)
            else:
                written = await self.records.update(key, value, entry.revision)
            if written is not None:
                return changed
        raise BusError(f"record of {domain!r} kept changing under {MAX_WRITE_ROUNDS} writes")

    async def forget_record(self, domain: str, revision: int) -> None:
        await self.records.delete(certificate_key(domain), revision)

    async def certificate(self, domain: str) -> StoredCertificate | None:
        entry = await self.certificates.get(certificate_key(domain))
        return _decoded(StoredCertificate.decode, entry.value) if entry and entry.value else None

    async def store_certificate(self, certificate: StoredCertificate) -> None:
        await self.certificates.put(certificate_key(certificate.domain), certificate.encode())

    async def drop_certificate(self, domain: str) -> None:
        await self.certificates.delete(certificate_key(domain))

    async def put_answer(self, key: str, answer: ChallengeAnswer) -> None:
        await self.challenges.put(key, answer.encode())

    async def drop_answer(self, key: str) -> None:
        await self.challenges.delete(key)


def _decoded(decode: Callable[[bytes], T], data: bytes) -> T | None:
    try:
        return decode(data)
    except ValueError as exc:  # pydantic's ValidationError is one
        log.warning("unreadable KV value ignored", reason=str(exc))
        return None
