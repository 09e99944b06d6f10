"""What the certmanager wants per domain, kept in its own KV bucket ``certmanager_domains``.

The ``certificates`` bucket says what exists (chain, key, validity: renewals are planned from
it); this bucket says what is wanted and how the last tries went: whether an HTTP service uses
the domain, since when (an event older than that is stale: a retried delivery, or one a
replica handled late), and the failures with the time of the next try. Events are acked once
written here, so a restart or another replica picks up exactly where it stood, backoff
included. A record of a domain nobody wants is kept as a tombstone until no event older than
it can still be delivered (the ``EVENTS`` stream keeps 7 days), then removed.
"""

from datetime import datetime, timedelta

from heron_bus.kv import BucketDefinition
from heron_core.kv import KvRecord

DOMAINS_BUCKET = "certmanager_domains"
DOMAINS = BucketDefinition(
    DOMAINS_BUCKET, "what the certmanager wants per domain and how its orders went"
)
#: a tombstone outlives every event that could still be redelivered (the stream's max age)
TOMBSTONE_TTL = timedelta(days=8)


class DomainRecord(KvRecord):
    domain: str
    #: an HTTP service uses the domain (so it needs a certificate unless files cover it)
    wanted: bool
    #: ``occurred_at`` of the event that set ``wanted``; older events change nothing
    changed_at: datetime
    #: failed orders since the last success (or since it was wanted again)
    failures: int = 0
    #: not before this (a failure's backoff or the CA's Retry-After); None: when due
    next_attempt_at: datetime | None = None
    #: the CA refused for good: no order until asked (``CertificateRequested``) or changed
    halted: bool = False
    #: the last failure's reason, as the CA gave it
    last_error: str | None = None

    def expired_tombstone(self, now: datetime) -> bool:
        return not self.wanted and now - self.changed_at > TOMBSTONE_TTL
