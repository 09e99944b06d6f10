"""The KV buckets Heron keeps in JetStream, and making sure they exist.

``certificates`` and ``acme_challenges`` are wire contracts (``heron_core.certificates`` has
their values); ``certmanager_leases`` is the certmanager's own: a key per domain being ordered,
created with ``KeyValue.create`` (which fails when it exists) and kept alive by updating it, so
two certmanager replicas never order the same domain at once and a crashed holder's lease ages
out with the bucket's TTL.
"""

from dataclasses import dataclass

import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from heron_bus._translate import translated
from heron_bus.connection import Bus
from heron_bus.subjects import ACME_CHALLENGES_BUCKET, CERTIFICATES_BUCKET, LEASES_BUCKET


@dataclass(frozen=True)
class BucketDefinition:
    name: str
    description: str
    #: entries kept per key
    history: int = 1
    #: an entry older than this disappears; None: never
    ttl_s: float | None = None

    def to_nats(self) -> KeyValueConfig:
        return KeyValueConfig(
            bucket=self.name,
            description=self.description,
            history=self.history,
            ttl=self.ttl_s,
            storage=StorageType.FILE,
        )


CERTIFICATES = BucketDefinition(
    CERTIFICATES_BUCKET, "issued certificate chains and keys by domain (certmanager → edges)"
)
ACME_CHALLENGES = BucketDefinition(
    ACME_CHALLENGES_BUCKET,
    "pending ACME challenge answers (certmanager → edges)",
    # an order the certmanager abandoned mid-way must not leave answers behind for ever
    ttl_s=3600.0,
)
#: how long a certmanager's lease on a domain lasts unless it renews it
LEASE_TTL_S = 120.0
LEASES = BucketDefinition(
    LEASES_BUCKET, "which certmanager replica is ordering which domain", ttl_s=LEASE_TTL_S
)
BUCKETS = (CERTIFICATES, ACME_CHALLENGES, LEASES)


async def ensure_bucket(target: Bus | JetStreamContext, bucket: BucketDefinition) -> KeyValue:
    """The bucket, created with its definition when missing; safe when processes race."""
    js = target.js if isinstance(target, Bus) else target
    with translated(f"ensure KV bucket {bucket.name!r}"):
        try:
            return await js.key_value(bucket.name)
        except nats.js.errors.BucketNotFoundError:
            return await js.create_key_value(bucket.to_nats())


async def ensure_buckets(target: Bus | JetStreamContext) -> None:
    for bucket in BUCKETS:
        await ensure_bucket(target, bucket)
