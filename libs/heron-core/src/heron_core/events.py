"""Event schemas published on NATS (JetStream stream ``EVENTS``).

Every event carries ``schema_version``: a consumer refuses a version newer than it knows rather
than guessing. Subjects live in ``heron_bus.subjects``; the schema lives here so every service
reads the same shape.
"""

from datetime import UTC, datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from heron_core.ids import new_id
from heron_core.types import (
    AccountId,
    ChangeKind,
    EdgeId,
    EventId,
    NetworkId,
    PeerId,
    ProxyTokenId,
    ServiceId,
    ServiceMode,
)


def _now() -> datetime:
    return datetime.now(UTC)


def _event_id() -> EventId:
    return EventId(new_id("evt"))


class Event(BaseModel):
    """Base of every event: an id for de-duplication, when it happened, and its schema version."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    #: the noun of the subject ``heron.events.<noun>.<past-verb>``
    noun: ClassVar[str]
    #: the past-tense verb of the subject
    verb: ClassVar[str]
    #: the newest schema this code writes and reads
    current_schema_version: ClassVar[int] = 1

    schema_version: int = 1
    event_id: EventId = Field(default_factory=_event_id)
    occurred_at: datetime = Field(default_factory=_now)


class ServiceChanged(Event):
    """A service was created, updated (any field, enable/disable, its targets) or deleted."""

    noun: ClassVar[str] = "service"
    verb: ClassVar[str] = "changed"

    account_id: AccountId
    service_id: ServiceId
    change: ChangeKind
    domain: str
    #: the domain before an update that changed it, so its certificate can be dropped
    previous_domain: str | None = None
    mode: ServiceMode
    enabled: bool
    proxy_cluster: str | None = None


class PeerChanged(Event):
    """A peer was created (first login), updated (login, rename, sync stream opened or closed,
    forwarder port) or deleted: edges' tunnel peers and agents' configs may follow."""

    noun: ClassVar[str] = "peer"
    verb: ClassVar[str] = "changed"

    account_id: AccountId
    peer_id: PeerId
    change: ChangeKind


class NetworkChanged(Event):
    """A network, one of its resources or one of its routing peers was created, updated or
    deleted: what routing peers may dial and where edges send resource targets may follow."""

    noun: ClassVar[str] = "network"
    verb: ClassVar[str] = "changed"

    account_id: AccountId
    network_id: NetworkId
    change: ChangeKind


class EdgeChanged(Event):
    """An edge instance registered (its config stream opened) or its stream closed: agents'
    lists of edges may follow, and an older stream of the same instance ends."""

    noun: ClassVar[str] = "edge"
    verb: ClassVar[str] = "changed"

    account_id: AccountId
    edge_id: EdgeId
    instance_id: str
    proxy_domain: str
    change: ChangeKind
    connected: bool


class ProxyTokenRevoked(Event):
    """A proxy token was revoked: the edges that use it are disconnected."""

    noun: ClassVar[str] = "proxy_token"
    verb: ClassVar[str] = "revoked"

    account_id: AccountId
    proxy_token_id: ProxyTokenId


class CertificateIssued(Event):
    """A certificate for ``domain`` was issued (or renewed) and stored in the KV bucket
    ``certificates``; management marks the domain's services as having one."""

    noun: ClassVar[str] = "certificate"
    verb: ClassVar[str] = "issued"

    domain: str
    not_before: datetime
    not_after: datetime
    #: the issuing CA's subject, as a person reads it
    issuer: str
    #: renewal of a certificate the domain had, rather than its first
    renewal: bool = False


class CertificateFailed(Event):
    """Getting a certificate for ``domain`` failed; ``reason`` is the CA's own words where it
    gave any. ``retry_at`` is when the certmanager tries again by itself (None: it does not,
    until asked with ``CertificateRequested``)."""

    noun: ClassVar[str] = "certificate"
    verb: ClassVar[str] = "failed"

    domain: str
    reason: str
    retry_at: datetime | None = None


class CertificateRequested(Event):
    """Someone asked for a certificate for ``domain`` now (the retry action of the API), ahead
    of any backoff the certmanager is in."""

    noun: ClassVar[str] = "certificate"
    verb: ClassVar[str] = "requested"

    account_id: AccountId
    domain: str


class DomainChanged(Event):
    """A custom domain was added, verified (or failed verification) or deleted."""

    noun: ClassVar[str] = "domain"
    verb: ClassVar[str] = "changed"

    account_id: AccountId
    domain: str
    change: ChangeKind
    verified: bool
