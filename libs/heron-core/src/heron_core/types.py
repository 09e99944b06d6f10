"""Every shared type name: typed IDs and the fixed sets of values the model uses."""

from enum import StrEnum
from typing import NewType

AccountId = NewType("AccountId", str)
UserId = NewType("UserId", str)
TokenId = NewType("TokenId", str)
PeerId = NewType("PeerId", str)
NetworkId = NewType("NetworkId", str)
ResourceId = NewType("ResourceId", str)
ServiceId = NewType("ServiceId", str)
TargetId = NewType("TargetId", str)
EventId = NewType("EventId", str)
SetupKeyId = NewType("SetupKeyId", str)
RouterId = NewType("RouterId", str)
ProxyTokenId = NewType("ProxyTokenId", str)
EdgeId = NewType("EdgeId", str)


class Role(StrEnum):
    """What a user may do in their account, from most to least powerful."""

    OWNER = "owner"
    ADMIN = "admin"
    NETWORK_ADMIN = "network_admin"
    AUDITOR = "auditor"
    USER = "user"


class ServiceMode(StrEnum):
    HTTP = "http"
    TCP = "tcp"
    UDP = "udp"
    TLS = "tls"

    @property
    def is_l4(self) -> bool:
        return self is not ServiceMode.HTTP


class TargetType(StrEnum):
    PEER = "peer"
    HOST = "host"
    DOMAIN = "domain"
    SUBNET = "subnet"


class TargetProtocol(StrEnum):
    HTTP = "http"
    HTTPS = "https"
    TCP = "tcp"
    UDP = "udp"


class PathRewrite(StrEnum):
    STRIP = "strip"
    PRESERVE = "preserve"


class CrowdSecMode(StrEnum):
    OFF = "off"
    ENFORCE = "enforce"
    OBSERVE = "observe"


class ServiceStatus(StrEnum):
    PENDING = "pending"
    CERTIFICATE_PENDING = "certificate_pending"
    ACTIVE = "active"
    TUNNEL_NOT_CREATED = "tunnel_not_created"
    CERTIFICATE_FAILED = "certificate_failed"
    ERROR = "error"


class ServiceSource(StrEnum):
    PERMANENT = "permanent"
    EPHEMERAL = "ephemeral"


class ResourceType(StrEnum):
    HOST = "host"
    DOMAIN = "domain"
    SUBNET = "subnet"


class ChangeKind(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


class SetupKeyType(StrEnum):
    """How often a setup key may register a new peer."""

    REUSABLE = "reusable"  # up to its usage limit (0: no limit)
    ONE_OFF = "one-off"  # once


class SetupKeyState(StrEnum):
    """Why a setup key does or does not admit a new peer, most decisive first."""

    VALID = "valid"
    OVERUSED = "overused"
    EXPIRED = "expired"
    REVOKED = "revoked"
