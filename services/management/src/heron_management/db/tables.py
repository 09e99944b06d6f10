"""The tables. Every row but an account's own and an overlay address (unique across the whole
installation) carries ``account_id``: nothing crosses accounts.

JSON columns hold value objects that are read and written whole (a service's auth, a target's
options); anything queried on is a real column.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from heron_management.db.columns import UtcDateTime, utcnow

# Named constraints: SQLite's batch migrations can only alter what has a name.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = 40  # prefixed random IDs are 24-28 characters; room to spare


def _account_fk() -> Any:
    return Field(
        sa_column=Column(
            String(ID), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )


def _created() -> Any:
    return Field(default_factory=utcnow, sa_type=UtcDateTime, nullable=False)


class AccountRow(SQLModel, table=True):
    __tablename__ = "accounts"

    id: str = Field(primary_key=True, max_length=ID)
    name: str = Field(max_length=255)
    is_default: bool = Field(default=False)
    created_at: datetime = _created()


class UserRow(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("account_id", "email", name="uq_users_account_email"),)

    id: str = Field(primary_key=True, max_length=ID)
    account_id: str = _account_fk()
    email: str = Field(max_length=320)
    name: str = Field(max_length=255)
    role: str = Field(max_length=32)
    created_at: datetime = _created()


class ApiTokenRow(SQLModel, table=True):
    __tablename__ = "api_tokens"

    id: str = Field(primary_key=True, max_length=ID)
    account_id: str = _account_fk()
    user_id: str = Field(
        sa_column=Column(String(ID), ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    )
    name: str = Field(max_length=255)
    secret_hash: str = Field(max_length=64, unique=True)
    hint: str = Field(max_length=16)
    created_at: datetime = _created()
    expires_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class SetupKeyRow(SQLModel, table=True):
    """A secret that lets agents register peers in its account; stored as a SHA-256 hash."""

    __tablename__ = "setup_keys"

    id: str = Field(primary_key=True, max_length=ID)
    account_id: str = _account_fk()
    name: str = Field(max_length=255)
    type: str = Field(max_length=16)
    secret_hash: str = Field(max_length=64, unique=True)
    hint: str = Field(max_length=16)
    expires_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    revoked: bool = Field(default=False)
    used_times: int = Field(default=0)
    #: 0: no limit (reusable keys); one-off keys hold 1
    usage_limit: int = Field(default=0)
    last_used_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: datetime = _created()
    updated_at: datetime = _created()


class PeerRow(SQLModel, table=True):
    __tablename__ = "peers"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_peers_account_name"),)

    id: str = Field(primary_key=True, max_length=ID)
    account_id: str = _account_fk()
    name: str = Field(max_length=255)
    hostname: str = Field(default="", max_length=255, sa_column_kwargs={"server_default": ""})
    overlay_address: str | None = Field(default=None, max_length=45, unique=True)
    wireguard_public_key: str | None = Field(default=None, max_length=64, unique=True)
    #: SHA-256 of the agent's current peer token; each login replaces it
    peer_token_hash: str | None = Field(default=None, max_length=64, unique=True)
    setup_key_id: str | None = Field(
        default=None,
        sa_column=Column(
            String(ID), ForeignKey("setup_keys.id", ondelete="SET NULL"), nullable=True
        ),
    )
    connected: bool = Field(default=False)
    last_seen: datetime | None = Field(default=None, sa_type=UtcDateTime)
    version: str | None = Field(default=None, max_length=64)
    #: the agent's forwarder port from its last AgentHello; 0: the default
    forwarder_port: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    #: the sync stream that owns ``connected``: a newer stream replaces an older one
    stream_session: str | None = Field(default=None, max_length=ID)
    created_at: datetime = _created()


class NetworkRow(SQLModel, table=True):
    __tablename__ = "networks"

    id: str = Field(primary_key=True, max_length=ID)
    account_id: str = _account_fk()
    name: str = Field(max_length=255)
    description: str = Field(default="", max_length=1024)
    created_at: datetime = _created()


class ResourceRow(SQLModel, table=True):
    __tablename__ = "network_resources"

    id: str = Field(primary_key=True, max_length=ID)
    account_id: str = _account_fk()
    network_id: str = Field(
        sa_column=Column(String(ID), ForeignKey("networks.id", ondelete="CASCADE"), nullable=False)
    )
    name: str = Field(max_length=255)
    description: str = Field(default="", max_length=1024, sa_column_kwargs={"server_default": ""})
    type: str = Field(max_length=16)
    address: str = Field(max_length=255)
    created_at: datetime = _created()


class RouterRow(SQLModel, table=True):
    """A peer that routes a network: edges reach the network's resources through its agent."""

    __tablename__ = "network_routers"
    __table_args__ = (
        UniqueConstraint("network_id", "peer_id", name="uq_network_routers_network_peer"),
    )

    id: str = Field(primary_key=True, max_length=ID)
    account_id: str = _account_fk()
    network_id: str = Field(
        sa_column=Column(
            String(ID), ForeignKey("networks.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    peer_id: str = Field(
        sa_column=Column(
            String(ID), ForeignKey("peers.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    enabled: bool = Field(default=True)
    created_at: datetime = _created()


class OverlayAddressRow(SQLModel, table=True):
    """Every taken overlay address, a peer's or an edge's: the primary key keeps them unique."""

    __tablename__ = "overlay_addresses"

    address: str = Field(primary_key=True, max_length=45)
    peer_id: str | None = Field(
        default=None,
        sa_column=Column(
            String(ID), ForeignKey("peers.id", ondelete="CASCADE"), nullable=True, unique=True
        ),
    )
    #: an edge's address belongs to its WireGuard key, so a restarted edge keeps it
    edge_public_key: str | None = Field(default=None, max_length=64, unique=True)
    created_at: datetime = _created()


class ProxyTokenRow(SQLModel, table=True):
    """An edge's access token: the edges that present it serve its account's services."""

    __tablename__ = "proxy_tokens"

    id: str = Field(primary_key=True, max_length=ID)
    account_id: str = _account_fk()
    name: str = Field(max_length=255)
    secret_hash: str = Field(max_length=64, unique=True)
    hint: str = Field(max_length=16)
    created_by: str | None = Field(default=None, max_length=ID)
    created_at: datetime = _created()
    last_used_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class EdgeRow(SQLModel, table=True):
    """One edge process as it registered on its config stream (``Hello``)."""

    __tablename__ = "edges"
    __table_args__ = (
        UniqueConstraint("account_id", "instance_id", name="uq_edges_account_instance"),
    )

    id: str = Field(primary_key=True, max_length=ID)
    account_id: str = _account_fk()
    proxy_token_id: str | None = Field(
        default=None,
        sa_column=Column(
            String(ID), ForeignKey("proxy_tokens.id", ondelete="SET NULL"), nullable=True
        ),
    )
    instance_id: str = Field(max_length=128)
    proxy_domain: str = Field(max_length=253)
    version: str = Field(default="", max_length=64)
    wireguard_public_key: str = Field(max_length=64, index=True)
    wireguard_endpoint: str = Field(max_length=300)
    overlay_address: str = Field(max_length=45)
    capabilities: dict[str, Any] = Field(default_factory=dict, sa_type=JSON, nullable=False)
    connected: bool = Field(default=False)
    last_seen: datetime | None = Field(default=None, sa_type=UtcDateTime)
    stream_session: str | None = Field(default=None, max_length=ID)
    created_at: datetime = _created()


class ServiceRow(SQLModel, table=True):
    __tablename__ = "services"

    id: str = Field(primary_key=True, max_length=ID)
    account_id: str = _account_fk()
    name: str = Field(max_length=255)
    domain: str = Field(max_length=253, unique=True)
    mode: str = Field(max_length=8)
    listen_port: int | None = Field(default=None)
    port_auto_assigned: bool = Field(default=False)
    proxy_cluster: str | None = Field(default=None, max_length=253, index=True)
    enabled: bool = Field(default=True)
    pass_host_header: bool = Field(default=False)
    rewrite_redirects: bool = Field(default=False)
    auth: dict[str, Any] = Field(default_factory=dict, sa_type=JSON, nullable=False)
    #: bumped whenever auth changes: sessions issued under an older revision stop working
    auth_revision: int = Field(default=1)
    access_restrictions: dict[str, Any] = Field(default_factory=dict, sa_type=JSON, nullable=False)
    status: str = Field(max_length=32)
    status_reason: str | None = Field(default=None, max_length=1024)
    source: str = Field(max_length=16)
    source_peer_id: str | None = Field(default=None, max_length=ID)
    created_at: datetime = _created()
    updated_at: datetime = _created()
    certificate_issued_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class TargetRow(SQLModel, table=True):
    __tablename__ = "service_targets"
    __table_args__ = (Index("ix_service_targets_referent", "account_id", "target_id"),)

    id: str = Field(primary_key=True, max_length=ID)
    account_id: str = _account_fk()
    service_id: str = Field(
        sa_column=Column(
            String(ID), ForeignKey("services.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    position: int
    target_type: str = Field(max_length=16)
    target_id: str = Field(max_length=64)
    host: str | None = Field(default=None, max_length=253)
    port: int
    protocol: str = Field(max_length=8)
    path: str | None = Field(default=None, max_length=2048)
    enabled: bool = Field(default=True)
    options: dict[str, Any] = Field(default_factory=dict, sa_type=JSON, nullable=False)


class EdgeReportRow(SQLModel, table=True):
    """What an edge's open stream last reported about one service (its ``ServiceStatus``).

    A row counts only while ``stream_session`` is its edge's current one and the edge is live;
    the stream's end deletes its rows. Service status is derived from these (``service_status``).
    """

    __tablename__ = "edge_service_reports"

    edge_id: str = Field(
        sa_column=Column(String(ID), ForeignKey("edges.id", ondelete="CASCADE"), primary_key=True)
    )
    service_id: str = Field(
        sa_column=Column(
            String(ID),
            ForeignKey("services.id", ondelete="CASCADE"),
            primary_key=True,
            index=True,
        )
    )
    account_id: str = _account_fk()
    stream_session: str = Field(max_length=ID)
    tunnel_up: bool = Field(default=False)
    certificate_available: bool = Field(default=False)
    error_message: str = Field(default="", max_length=1024)
    reported_at: datetime = _created()


class ServiceCertificateRow(SQLModel, table=True):
    """What the certificate manager last said about the certificate of a service's domain.

    Written from its ``CertificateIssued``/``CertificateFailed`` events (``certificates``); one
    row per service, for the domain in ``domain`` (a row for another domain than the service's
    is stale: the service moved). Deleting the service deletes it.
    """

    __tablename__ = "service_certificates"

    service_id: str = Field(
        sa_column=Column(
            String(ID), ForeignKey("services.id", ondelete="CASCADE"), primary_key=True
        )
    )
    account_id: str = _account_fk()
    domain: str = Field(max_length=253)
    #: ``occurred_at`` of the last ``CertificateIssued``
    issued_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    not_before: datetime | None = Field(default=None, sa_type=UtcDateTime)
    not_after: datetime | None = Field(default=None, sa_type=UtcDateTime)
    issuer: str | None = Field(default=None, max_length=512)
    #: ``occurred_at`` of the last ``CertificateFailed``, with the CA's reason
    failed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    failure_reason: str | None = Field(default=None, max_length=2048)
    #: when the certificate manager tries again by itself (None: only when asked)
    retry_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    #: the last retry asked through the API: a failure before it is no longer shown
    requested_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    updated_at: datetime = _created()


class CustomDomainRow(SQLModel, table=True):
    """A domain of the account's own whose services an edge cluster serves, once its DNS shows
    the validation CNAME (``custom_domains``). Unique across the installation: one owner."""

    __tablename__ = "custom_domains"

    id: str = Field(primary_key=True, max_length=ID)
    account_id: str = _account_fk()
    domain: str = Field(max_length=253, unique=True)
    target_cluster: str = Field(max_length=253)
    validated: bool = Field(default=False)
    validated_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    #: why the last verification did not succeed; None once verified or before the first one
    validation_reason: str | None = Field(default=None, max_length=1024)
    #: when the last verification ended (None: none has yet)
    checked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: datetime = _created()


class OutboxRow(SQLModel, table=True):
    """Events written in the same transaction as the change; a relay publishes them to NATS."""

    __tablename__ = "event_outbox"

    id: int | None = Field(default=None, primary_key=True)
    subject: str = Field(max_length=255)
    msg_id: str = Field(max_length=64)
    payload: str
    created_at: datetime = _created()
