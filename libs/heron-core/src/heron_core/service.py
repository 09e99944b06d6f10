"""The service model of the REST API (``/api/services``): what a user sends and what they get back.

Field names follow NetBird's reverse-proxy API so its users' payloads carry over; Heron's own
additions are marked ◆. These models check each field on its own (syntax, ranges, sizes); the
rules that tie fields together (a field allowed in one mode only, unique paths) live in
management's ``domain.service_spec``, which knows the mode and the stored secrets.
"""

import ipaddress
import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)

from heron_core.duration import DurationError, normalize_duration
from heron_core.types import (
    CrowdSecMode,
    PathRewrite,
    ServiceId,
    ServiceMode,
    ServiceSource,
    ServiceStatus,
    TargetId,
    TargetProtocol,
    TargetType,
)

MAX_DOMAIN_CHARS = 253  # RFC 1035 §2.3.4, without the trailing dot
MAX_TARGETS = 64
MAX_CIDRS = 200
MAX_COUNTRIES = 50
MAX_CUSTOM_HEADERS = 16
MAX_HEADER_VALUE_CHARS = 4096
MAX_HEADER_AUTHS = 16
MAX_GROUPS = 100

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 §5.6.2 token
_PATH = re.compile(r"^/[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*$")  # RFC 3986 path characters

# Headers a target may not set: they belong to the connection, the framing, the client or to
# Heron's own identity and forwarding headers, which the edge sets and backends trust.
FORBIDDEN_CUSTOM_HEADERS = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade", "host", "content-length", "cookie",
        "forwarded", "x-real-ip", "proxy-connection",
    }
)  # fmt: skip
RESERVED_HEADER_PREFIXES = ("x-forwarded-", "x-heron-")


class StrictModel(BaseModel):
    """A request body: unknown fields are refused, not silently dropped, and no text holds NUL.

    Its numbers and booleans are ``StrictInt``/``StrictBool``: ``"80"`` for a port or ``0`` for a
    flag is a mistake to report, not to guess at.
    """

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any) -> Any:
        # NUL ends C strings and PostgreSQL refuses it in text: no field of ours needs one.
        if _holds_nul(data):
            raise ValueError("text may not contain NUL characters")
        return data


def _holds_nul(value: object) -> bool:
    # iterative: a body nested thousands of levels deep must get a 422, not a RecursionError
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\0" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def normalize_domain(value: str) -> str:
    """A domain name, lower-cased and without its trailing dot; ValueError says what is wrong."""
    domain = value.strip().lower().removesuffix(".")
    if not domain:
        raise ValueError("domain is empty")
    if len(domain) > MAX_DOMAIN_CHARS:
        raise ValueError(f"domain is longer than {MAX_DOMAIN_CHARS} characters")
    labels = domain.split(".")
    if len(labels) < 2:
        raise ValueError(f"{value!r} is not a fully qualified domain name (e.g. app.example.com)")
    for label in labels:
        if not _LABEL.match(label):
            raise ValueError(
                f"label {label!r} of {value!r} is not valid: use a-z, 0-9 and '-', at most 63 "
                "characters, not starting or ending with '-' (IDNs in punycode form)"
            )
    if labels[-1].isdigit():
        raise ValueError(f"{value!r} is an IP address, not a domain name")
    return domain


def _host(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        pass
    try:
        return normalize_domain(value)
    except ValueError as exc:
        raise ValueError(f"host {value!r} is neither an IP address nor a domain name") from exc


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=True))
    except ValueError as exc:
        try:
            network = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not a CIDR (e.g. 203.0.113.0/24)") from exc
        raise ValueError(f"{value!r} has host bits set: did you mean {str(network)!r}?") from exc


def _duration(value: str) -> str:
    try:
        return normalize_duration(value)
    except DurationError as exc:
        raise ValueError(str(exc)) from exc


def _header_name(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(f"{value!r} is not a valid HTTP header name")
    return value


def _header_value(value: str) -> str:
    if any(char in value for char in "\r\n\0"):
        raise ValueError("header values may not contain CR, LF or NUL")
    return value


def _path(value: str) -> str:
    if not _PATH.match(value):
        raise ValueError(f"path {value!r} must start with '/' and hold only URL path characters")
    segments = value.split("/")[1:]
    if any(segment in {".", ".."} for segment in segments) or "//" in value:
        raise ValueError(f"path {value!r} may not contain '.', '..' or empty segments")
    return value.rstrip("/") or "/"  # '/api/' and '/api' are the same prefix


def _custom_headers(headers: dict[str, str]) -> dict[str, str]:
    seen: set[str] = set()
    for name in headers:
        lowered = name.lower()
        if lowered in FORBIDDEN_CUSTOM_HEADERS or lowered.startswith(RESERVED_HEADER_PREFIXES):
            raise ValueError(
                f"custom header {name!r} is set by the proxy and may not be overridden"
            )
        if lowered in seen:
            raise ValueError(f"custom header {name!r} is given twice (header names ignore case)")
        seen.add(lowered)
    return headers


def _empty_is_off(value: object) -> object:
    return CrowdSecMode.OFF if value == "" else value


Domain = Annotated[
    str, StringConstraints(max_length=MAX_DOMAIN_CHARS + 1), AfterValidator(normalize_domain)
]
Host = Annotated[str, StringConstraints(max_length=MAX_DOMAIN_CHARS), AfterValidator(_host)]
Cidr = Annotated[str, StringConstraints(max_length=64), AfterValidator(_cidr)]
CountryCode = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z]{2}$", to_upper=True),
    Field(description="ISO 3166-1 alpha-2"),
]
DurationStr = Annotated[
    str,
    StringConstraints(max_length=32),
    AfterValidator(_duration),
    Field(
        description="a duration such as `30s`, `2m` or `1h30m` (units ms, s, m, h)",
        examples=["30s"],
    ),
]
HeaderName = Annotated[
    str, StringConstraints(min_length=1, max_length=128), AfterValidator(_header_name)
]
HeaderValue = Annotated[
    str, StringConstraints(max_length=MAX_HEADER_VALUE_CHARS), AfterValidator(_header_value)
]
PathPrefix = Annotated[str, StringConstraints(min_length=1, max_length=2048), AfterValidator(_path)]
Port = Annotated[StrictInt, Field(ge=1, le=65535)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
GroupName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]


class TargetOptions(StrictModel):
    skip_tls_verify: StrictBool = Field(
        default=False, description="HTTPS targets: accept any certificate"
    )
    request_timeout: DurationStr | None = Field(
        default=None, description="◆ covers connecting *and* waiting for the response headers"
    )
    path_rewrite: PathRewrite = Field(
        default=PathRewrite.STRIP, description="strip the matched path prefix, or preserve it"
    )
    custom_headers: Annotated[
        dict[HeaderName, HeaderValue],
        Field(max_length=MAX_CUSTOM_HEADERS),
        AfterValidator(_custom_headers),
    ] = Field(default_factory=dict, description="headers set on every request to this target")
    proxy_protocol: StrictBool = Field(
        default=False, description="TCP/TLS: send a PROXY v2 header first"
    )
    session_idle_timeout: DurationStr | None = Field(
        default=None, description="L4: close a connection or UDP session idle this long (UDP `30s`)"
    )


class TargetRequest(StrictModel):
    id: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None,
        description="read-only: accepted so that a service read with GET can be PUT back; "
        "a target whose `id` matches one of the service's keeps that ID",
    )
    target_type: TargetType
    target_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="the peer or network resource that reaches the target"
    )
    host: Host | None = Field(
        default=None, description="subnet: an IP inside it; peer: another address the peer reaches"
    )
    port: Port | None = Field(default=None, description="HTTP default 80 or 443 by protocol")
    protocol: TargetProtocol | None = Field(default=None, description="HTTP: http or https")
    path: PathPrefix | None = Field(
        default=None, description="HTTP: path prefix, default `/`, matched at segment boundaries"
    )
    enabled: StrictBool = True
    options: TargetOptions = Field(default_factory=TargetOptions)


class Target(BaseModel):
    id: TargetId = Field(description="◆ this target's own ID, for /api/services/{id}/targets")
    target_type: TargetType
    target_id: str
    host: str | None
    port: int
    protocol: TargetProtocol
    path: str | None
    enabled: bool
    options: TargetOptions


class PasswordAuthRequest(StrictModel):
    enabled: StrictBool = False
    password: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None, description="write-only; empty or absent keeps the stored one"
    )


class PinAuthRequest(StrictModel):
    enabled: StrictBool = False
    pin: Annotated[str, StringConstraints(pattern=r"^(\d{4,10})?$")] | None = Field(
        default=None, description="write-only, 4 to 10 digits; empty or absent keeps the stored one"
    )


class SsoAuth(StrictModel):
    enabled: StrictBool = False
    groups: Annotated[list[GroupName], Field(max_length=MAX_GROUPS)] = Field(
        default_factory=list,
        description="users must be in one of these groups; empty: any user "
        "(NetBird's `distribution_groups` is accepted as an alias)",
    )

    @model_validator(mode="before")
    @classmethod
    def _netbird_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and "distribution_groups" in data:
            if "groups" in data:
                raise ValueError("give groups or its alias distribution_groups, not both")
            data = {**data, "groups": data["distribution_groups"]}
            del data["distribution_groups"]
        return data


class HeaderAuthRequest(StrictModel):
    enabled: StrictBool = True
    header: HeaderName
    value: Annotated[str, StringConstraints(max_length=MAX_HEADER_VALUE_CHARS)] | None = Field(
        default=None,
        description="write-only full header value (`Bearer …`); empty keeps the stored one",
    )


class AuthRequest(StrictModel):
    password_auth: PasswordAuthRequest | None = None
    pin_auth: PinAuthRequest | None = None
    sso_auth: SsoAuth | None = None
    bearer_auth: SsoAuth | None = Field(default=None, description="NetBird's name for sso_auth")
    header_auths: Annotated[list[HeaderAuthRequest], Field(max_length=MAX_HEADER_AUTHS)] = Field(
        default_factory=list
    )


class MethodState(BaseModel):
    enabled: bool


class HeaderAuth(BaseModel):
    enabled: bool
    header: str


class AuthConfig(BaseModel):
    """What a service's authentication looks like from outside: secrets are never returned."""

    password_auth: MethodState
    pin_auth: MethodState
    sso_auth: SsoAuth
    header_auths: list[HeaderAuth]


class AccessRestrictions(StrictModel):
    allowed_cidrs: Annotated[list[Cidr], Field(max_length=MAX_CIDRS)] = Field(default_factory=list)
    blocked_cidrs: Annotated[list[Cidr], Field(max_length=MAX_CIDRS)] = Field(default_factory=list)
    allowed_countries: Annotated[list[CountryCode], Field(max_length=MAX_COUNTRIES)] = Field(
        default_factory=list
    )
    blocked_countries: Annotated[list[CountryCode], Field(max_length=MAX_COUNTRIES)] = Field(
        default_factory=list
    )
    crowdsec_mode: Annotated[CrowdSecMode, BeforeValidator(_empty_is_off)] = CrowdSecMode.OFF


class ServiceRequest(StrictModel):
    """The body of ``POST /api/services`` and ``PUT /api/services/{id}``."""

    name: Name
    domain: Domain
    mode: ServiceMode = ServiceMode.HTTP
    listen_port: Annotated[StrictInt, Field(ge=0, le=65535)] | None = Field(
        default=None, description="L4 only; 0 or absent: auto-assigned (TLS: the main port)"
    )
    enabled: StrictBool = True
    pass_host_header: StrictBool = Field(
        default=False, description="HTTP: send the client's Host upstream"
    )
    rewrite_redirects: StrictBool = Field(
        default=False, description="HTTP: rewrite Location headers that point at the target"
    )
    targets: Annotated[list[TargetRequest], Field(max_length=MAX_TARGETS)] = Field(
        default_factory=list
    )
    auth: AuthRequest | None = Field(default=None, description="HTTP only")
    access_restrictions: AccessRestrictions | None = None


class ServiceMeta(BaseModel):
    created_at: datetime
    certificate_issued_at: datetime | None = Field(
        description="HTTP: when the CA issued (or last renewed) the domain's certificate; with "
        "certificate files instead of ACME, when an edge first reported one covering the domain"
    )
    status: ServiceStatus = Field(
        description="derived by management from what the connected edges and the certmanager "
        "report: `active` once an edge has the tunnel up (and, HTTP, a certificate); "
        "`certificate_pending` while the certificate is on its way, `certificate_failed` when "
        "the CA refused it (the reason in `status_reason`; retry with "
        "`POST /api/services/{id}/certificate/retry`); `tunnel_not_created` when no edge has the "
        "tunnel to a target up; `pending` while disabled, without an enabled target or without "
        "a connected edge that reported"
    )
    status_reason: str | None = Field(description="◆ why the service is not active, for a person")


class Service(BaseModel):
    """A service as the API returns it."""

    id: ServiceId
    name: str
    domain: str
    mode: ServiceMode
    listen_port: int | None
    port_auto_assigned: bool
    proxy_cluster: str | None
    enabled: bool
    pass_host_header: bool
    rewrite_redirects: bool
    targets: list[Target]
    auth: AuthConfig
    access_restrictions: AccessRestrictions
    meta: ServiceMeta
    source: ServiceSource
