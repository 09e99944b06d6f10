"""The rules that tie a service's fields together, and the normalised spec they produce.

``build_spec`` takes a request that already passed field validation (``heron_core.service``) and
either returns a complete ``ServiceSpec`` (defaults filled in, paths normalised) or raises
``InvalidRequestError`` listing every broken rule with its location in the body.
"""

from dataclasses import dataclass, field

from heron_core.service import (
    AccessRestrictions,
    AuthRequest,
    HeaderAuthRequest,
    ServiceRequest,
    SsoAuth,
    TargetOptions,
    TargetRequest,
)
from heron_core.types import PathRewrite, ServiceMode, TargetProtocol, TargetType
from heron_management.domain.stored_auth import StoredAuth
from heron_management.errors import FieldProblem, InvalidRequestError

DEFAULT_UDP_SESSION_IDLE_TIMEOUT = "30s"
_DEFAULT_PORTS = {TargetProtocol.HTTP: 80, TargetProtocol.HTTPS: 443}
# Headers a header-auth may not claim: the edge or the HTTP framing owns them.
_RESERVED_AUTH_HEADERS = frozenset(
    {
        "host",
        "cookie",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "upgrade",
    }
)

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class TargetSpec:
    target_type: TargetType
    target_id: str
    host: str | None
    port: int
    protocol: TargetProtocol
    path: str | None
    enabled: bool
    options: TargetOptions
    #: the ``id`` the request carried (a target read back with GET), to keep that target's ID
    request_id: str | None = None


@dataclass(frozen=True)
class SecretChange:
    """A secret method after a request: ``new_secret`` to hash, or None to keep the stored hash."""

    enabled: bool
    new_secret: str | None


@dataclass(frozen=True)
class HeaderAuthSpec:
    enabled: bool
    header: str
    new_value: str | None  # None: keep the stored hash of this header


@dataclass(frozen=True)
class AuthSpec:
    password: SecretChange = SecretChange(enabled=False, new_secret=None)
    pin: SecretChange = SecretChange(enabled=False, new_secret=None)
    sso: SsoAuth = field(default_factory=SsoAuth)
    header_auths: tuple[HeaderAuthSpec, ...] = ()


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    domain: str
    mode: ServiceMode
    listen_port: int | None  # None for HTTP; 0: auto-assign (TLS: the main port)
    enabled: bool
    pass_host_header: bool
    rewrite_redirects: bool
    targets: tuple[TargetSpec, ...]
    auth: AuthSpec
    access_restrictions: AccessRestrictions


class _Problems:
    def __init__(self) -> None:
        self.items: list[FieldProblem] = []

    def add(self, loc: Loc, message: str) -> None:
        self.items.append(FieldProblem(loc, message))


def build_spec(request: ServiceRequest, stored_auth: StoredAuth | None = None) -> ServiceSpec:
    """Check ``request`` against the rules of its mode; ``stored_auth`` is the current service's."""
    problems = _Problems()
    mode = request.mode
    targets = tuple(
        build_target(target, mode, problems, ("targets", index))
        for index, target in enumerate(request.targets)
    )
    if mode is ServiceMode.HTTP:
        _check_http_service(request, targets, problems)
    else:
        _check_l4_service(request, problems)
    auth = _build_auth(request.auth, stored_auth or StoredAuth(), problems)
    if problems.items:
        raise InvalidRequestError(problems.items)
    return ServiceSpec(
        name=request.name,
        domain=request.domain,
        mode=mode,
        listen_port=None if mode is ServiceMode.HTTP else (request.listen_port or 0),
        enabled=request.enabled,
        pass_host_header=request.pass_host_header,
        rewrite_redirects=request.rewrite_redirects,
        targets=targets,
        auth=auth,
        access_restrictions=request.access_restrictions or AccessRestrictions(),
    )


def build_target(
    target: TargetRequest, mode: ServiceMode, problems: _Problems | None = None, loc: Loc = ()
) -> TargetSpec:
    """One target checked against its service's mode; raises when called without ``problems``."""
    collect = problems or _Problems()
    spec = (
        _http_target(target, collect, loc)
        if mode is ServiceMode.HTTP
        else _l4_target(target, mode, collect, loc)
    )
    if target.target_type is TargetType.SUBNET and target.host is None:
        collect.add((*loc, "host"), "a subnet target needs `host`: the address inside the subnet")
    if problems is None and collect.items:
        raise InvalidRequestError(collect.items)
    return spec


def check_unique_paths(targets: tuple[TargetSpec, ...]) -> list[FieldProblem]:
    """Two HTTP targets with the same path prefix would make routing ambiguous."""
    seen: dict[str, int] = {}
    found = []
    for index, target in enumerate(targets):
        if target.path is None:
            continue
        if target.path in seen:
            found.append(
                FieldProblem(
                    ("targets", index, "path"),
                    f"path {target.path!r} is already used by target {seen[target.path]}",
                )
            )
        seen.setdefault(target.path, index)
    return found


def _http_target(target: TargetRequest, problems: _Problems, loc: Loc) -> TargetSpec:
    protocol = target.protocol or TargetProtocol.HTTP
    if protocol not in _DEFAULT_PORTS:
        problems.add(
            (*loc, "protocol"),
            f"an http service's targets speak http or https, not {protocol.value}",
        )
        protocol = TargetProtocol.HTTP
    options = target.options
    if options.proxy_protocol:
        problems.add(
            (*loc, "options", "proxy_protocol"), "proxy_protocol is for tcp and tls services"
        )
    if options.session_idle_timeout is not None:
        problems.add(
            (*loc, "options", "session_idle_timeout"),
            "session_idle_timeout is for tcp, udp and tls",
        )
    if options.skip_tls_verify and protocol is TargetProtocol.HTTP:
        problems.add((*loc, "options", "skip_tls_verify"), "skip_tls_verify needs protocol 'https'")
    return TargetSpec(
        target_type=target.target_type,
        target_id=target.target_id,
        host=target.host,
        port=target.port or _DEFAULT_PORTS[protocol],
        protocol=protocol,
        path=target.path or "/",
        enabled=target.enabled,
        options=options,
        request_id=target.id,
    )


def _l4_target(
    target: TargetRequest, mode: ServiceMode, problems: _Problems, loc: Loc
) -> TargetSpec:
    transport = TargetProtocol.UDP if mode is ServiceMode.UDP else TargetProtocol.TCP
    if target.protocol is not None and target.protocol is not transport:
        problems.add((*loc, "protocol"), f"a {mode} service's targets speak {transport}")
    if target.port is None:
        problems.add((*loc, "port"), f"a {mode} target needs a port")
    if target.path not in (None, "/"):
        problems.add((*loc, "path"), "path is for http services")
    options = target.options
    http_only = {
        "skip_tls_verify": options.skip_tls_verify,
        "path_rewrite": options.path_rewrite is not PathRewrite.STRIP,
        "custom_headers": bool(options.custom_headers),
    }
    for name, is_set in http_only.items():
        if is_set:
            problems.add((*loc, "options", name), f"{name} is for http services")
    if options.proxy_protocol and mode is ServiceMode.UDP:
        problems.add(
            (*loc, "options", "proxy_protocol"), "proxy_protocol is for tcp and tls services"
        )
    if mode is ServiceMode.UDP and options.session_idle_timeout is None:
        options = options.model_copy(
            update={"session_idle_timeout": DEFAULT_UDP_SESSION_IDLE_TIMEOUT}
        )
    return TargetSpec(
        target_type=target.target_type,
        target_id=target.target_id,
        host=target.host,
        port=target.port or 0,
        protocol=transport,
        path=None,
        enabled=target.enabled,
        options=options,
        request_id=target.id,
    )


def _check_http_service(
    request: ServiceRequest, targets: tuple[TargetSpec, ...], problems: _Problems
) -> None:
    if request.listen_port:
        problems.add(("listen_port",), "listen_port is for tcp, udp and tls services")
    problems.items.extend(check_unique_paths(targets))


def _check_l4_service(request: ServiceRequest, problems: _Problems) -> None:
    for name in ("pass_host_header", "rewrite_redirects"):
        if getattr(request, name):
            problems.add((name,), f"{name} is for http services")
    auth = request.auth
    if auth is not None and _any_auth_enabled(auth):
        problems.add(("auth",), f"authentication is for http services, not {request.mode}")


def _any_auth_enabled(auth: AuthRequest) -> bool:
    methods = (auth.password_auth, auth.pin_auth, auth.sso_auth, auth.bearer_auth)
    return any(m is not None and m.enabled for m in methods) or any(
        h.enabled for h in auth.header_auths
    )


def _build_auth(request: AuthRequest | None, stored: StoredAuth, problems: _Problems) -> AuthSpec:
    if request is None:
        return AuthSpec()
    if request.sso_auth is not None and request.bearer_auth is not None:
        problems.add(("auth", "bearer_auth"), "give sso_auth or its alias bearer_auth, not both")
    password = request.password_auth
    pin = request.pin_auth
    return AuthSpec(
        password=_secret_change(
            password.enabled if password else False,
            password.password if password else None,
            stored.password.hash,
            problems,
            ("auth", "password_auth", "password"),
        ),
        pin=_secret_change(
            pin.enabled if pin else False,
            pin.pin if pin else None,
            stored.pin.hash,
            problems,
            ("auth", "pin_auth", "pin"),
        ),
        sso=request.sso_auth or request.bearer_auth or SsoAuth(),
        header_auths=tuple(
            _header_auth(h, stored, problems, ("auth", "header_auths", i), request.header_auths[:i])
            for i, h in enumerate(request.header_auths)
        ),
    )


def _secret_change(
    enabled: bool, secret: str | None, stored_hash: str | None, problems: _Problems, loc: Loc
) -> SecretChange:
    if secret:
        return SecretChange(enabled=enabled, new_secret=secret)
    if enabled and stored_hash is None:
        problems.add(loc, f"{loc[-1]} is required to enable this method")
    return SecretChange(enabled=enabled, new_secret=None)


def _header_auth(
    header_auth: HeaderAuthRequest,
    stored: StoredAuth,
    problems: _Problems,
    loc: Loc,
    earlier: list[HeaderAuthRequest],
) -> HeaderAuthSpec:
    name = header_auth.header
    if name.lower() in _RESERVED_AUTH_HEADERS:
        problems.add((*loc, "header"), f"header {name!r} cannot carry credentials")
    if any(e.header.lower() == name.lower() for e in earlier):
        problems.add((*loc, "header"), f"header {name!r} is configured twice")
    if not header_auth.value and stored.header_hash(name) is None:
        problems.add((*loc, "value"), f"value is required for header {name!r}")
    return HeaderAuthSpec(
        enabled=header_auth.enabled, header=name, new_value=header_auth.value or None
    )
