"""The block ``heron-stack`` prints once everything is ready: every URL and where state lives."""

from urllib.parse import urlsplit, urlunsplit

from heron_stack.settings import StackSettings, split_address


def banner_rows(settings: StackSettings) -> list[tuple[str, str]]:
    """(label, value) pairs; a later service adds its own rows here."""
    api = f"{settings.management_url}/api"
    data = settings.data_path
    return [
        ("REST API", api),
        ("OpenAPI", f"{api}/openapi.json"),
        ("API docs", f"{api}/docs"),
        (
            "gRPC",
            f"{settings.management_grpc_url} (heron up --management …, HERON_PROXY_MANAGEMENT_URL)",
        ),
        ("services", _service_urls(settings)),
        ("local CA", f"{settings.edge_local_ca_certificate} (trust it to open services)"),
        (
            "WireGuard",
            f"{settings.edge_wireguard_endpoint} UDP, interface "
            f"{settings.proxy_wireguard_interface} (agents reach the edge here)",
        ),
        ("edge health", _edge_health(settings)),
        (
            "SSO callback",
            f"{settings.oidc_callback_url} (register it at your OIDC provider; "
            "HERON_AUTHGATEWAY_OIDC_ISSUER/_CLIENT_ID/_CLIENT_SECRET turn SSO on)",
        ),
        *_acme(settings),
        ("NATS", f"{settings.nats_url} (JetStream store {data / 'nats'})"),
        ("data dir", str(data)),
        ("database", _database(settings)),
        ("mode", settings.mode.value),
        ("admin token", _admin_token(settings)),
    ]


def render_banner(settings: StackSettings) -> str:
    rows = banner_rows(settings)
    width = max(len(label) for label, _ in rows)
    body = [f"  {label:<{width}}  {value}" for label, value in rows]
    rule = "=" * max(len(line) for line in body)
    title = f"  Heron is ready ({settings.mode.value} mode); stop it with Ctrl-C"
    return "\n".join(["", rule, title, rule, *body, rule, ""]) + "\n"


def _service_urls(settings: StackSettings) -> str:
    """The URL pattern of the edge's services (the port left out where it is the scheme's)."""
    domain = settings.proxy_domain
    https = f"https://<name>.{domain}{_port_suffix(settings.proxy_address, default=443)}"
    if not settings.proxy_http_address:
        return https
    http = f"http://<name>.{domain}{_port_suffix(settings.proxy_http_address, default=80)}"
    return f"{https} ({http} redirects there)"


def _edge_health(settings: StackSettings) -> str:
    host, port = split_address(settings.proxy_health_address)
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1"}.get(host, host)  # noqa: S104
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/healthz/ready"


def _acme(settings: StackSettings) -> list[tuple[str, str]]:
    if not settings.acme_directory_url:
        return []
    return [
        ("ACME", f"{settings.acme_directory_url} (certmanager {settings.certmanager_health_url})")
    ]


def _port_suffix(address: str, *, default: int) -> str:
    port = split_address(address)[1]
    return "" if port == default else f":{port}"


def _database(settings: StackSettings) -> str:
    if settings.database_url:
        return _without_password(settings.database_url)
    return f"SQLite, {settings.data_path / 'management.db'}"


def _admin_token(settings: StackSettings) -> str:
    if settings.admin_token is not None:
        return "the value of HERON_ADMIN_TOKEN"
    return "generated on the first start and printed once by management (see above)"


def _without_password(url: str) -> str:
    """The URL with its password replaced, so the banner can be pasted into an issue."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
