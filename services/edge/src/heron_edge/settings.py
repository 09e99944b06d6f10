"""The edge's settings: ``HERON_PROXY_*`` (NetBird's ``NB_PROXY_*`` names are accepted too)."""

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from heron_core.duration import parse_duration_ms
from heron_core.settings import HeronSettings
from heron_core.types import PathRewrite, TargetProtocol
from heron_edge.address import Address
from heron_edge.connector import StreamTarget
from heron_edge.http.auth import EdgeAuth
from heron_edge.http.proxy import HttpLimits
from heron_edge.http.upstream import PoolLimits
from heron_edge.l4.context import L4Limits
from heron_edge.routes import RouteTarget, TargetOptions


def gateway_target(url: str) -> RouteTarget:
    """The auth gateway's URL (``http://host:port``) as a target the edge connects to directly."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the auth gateway URL must be http://host[:port], not {url!r}")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"the auth gateway URL takes no path: {url!r}")
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    return RouteTarget(
        id="authgateway",
        stream=StreamTarget(peer_overlay_address="", host=parts.hostname, port=port),
        path="/",
        enabled=True,
        protocol=TargetProtocol.HTTPS if https else TargetProtocol.HTTP,
        options=TargetOptions(path_rewrite=PathRewrite.PRESERVE),
    )


def _env(name: str, *, netbird: bool = True) -> AliasChoices:
    names = [f"HERON_PROXY_{name}"] + ([f"NB_PROXY_{name}"] if netbird else [])
    return AliasChoices(*names)


class EdgeSettings(HeronSettings):
    model_config = SettingsConfigDict(
        env_prefix="HERON_", extra="ignore", frozen=True, populate_by_name=True
    )

    proxy_domain: str = Field(
        validation_alias=_env("DOMAIN"),
        description="the cluster address: services on it and its subdomains are served here",
    )
    proxy_management_url: str = Field(
        default="http://127.0.0.1:50051",
        validation_alias=AliasChoices("HERON_PROXY_MANAGEMENT_URL", "NB_PROXY_MANAGEMENT_ADDRESS"),
        description="management's gRPC URL; `https://` for TLS",
    )
    proxy_token: SecretStr = Field(
        validation_alias=_env("TOKEN"), description="the edge's access token (/api/proxy-tokens)"
    )
    proxy_allow_insecure: bool = Field(
        default=False,
        validation_alias=_env("ALLOW_INSECURE"),
        description="send the token over plain http:// (development mode allows it anyway)",
    )
    proxy_wireguard_port: int = Field(
        default=51820, ge=1, le=65535, validation_alias=_env("WG_PORT"),
        description="the WireGuard UDP port agents reach",
    )  # fmt: skip
    proxy_wireguard_endpoint: str | None = Field(
        default=None,
        validation_alias=_env("WIREGUARD_ENDPOINT", netbird=False),
        description="`host:port` agents dial; default: the proxy domain and the WireGuard port",
    )
    proxy_wireguard_interface: str = Field(
        default="heron-edge",
        max_length=15,
        validation_alias=_env("WIREGUARD_INTERFACE", netbird=False),
        description="the WireGuard interface's name, unique on the host",
    )
    proxy_instance_id: str = Field(
        default_factory=lambda: f"edge-{socket.gethostname()}",
        validation_alias=_env("INSTANCE_ID", netbird=False),
        description="this edge's name in its cluster",
    )
    proxy_supports_custom_ports: bool = Field(
        default=True, validation_alias=_env("SUPPORTS_CUSTOM_PORTS")
    )
    proxy_require_subdomain: bool = Field(default=False, validation_alias=_env("REQUIRE_SUBDOMAIN"))
    proxy_address: str = Field(
        default=":443",
        validation_alias=_env("ADDRESS"),
        description="the main listener (SNI router: HTTP services and, later, TLS passthrough)",
    )
    proxy_http_address: str = Field(
        default=":80",
        validation_alias=_env("HTTP_ADDRESS", netbird=False),
        description="the port-80 listener (redirect to HTTPS); empty: none",
    )
    proxy_health_address: str = Field(
        default="127.0.0.1:9100",
        validation_alias=_env("HEALTH_ADDRESS"),
        description="`/healthz/live` and `/healthz/ready`",
    )
    proxy_workers: int = Field(
        default=0,
        ge=0,
        le=64,
        validation_alias=_env("WORKERS", netbird=False),
        description="data-plane worker processes sharing the ports (SO_REUSEPORT); "
        "0: one per CPU, at most 8",
    )
    proxy_certificate_directory: Path = Field(
        default=Path("certs"),
        validation_alias=_env("CERTIFICATE_DIRECTORY"),
        description="static certificate mode: the directory of the certificate and key files",
    )
    proxy_certificate_file: str = Field(
        default="tls.crt", validation_alias=_env("CERTIFICATE_FILE"),
        description="static certificate (chain) file name in the certificate directory",
    )  # fmt: skip
    proxy_certificate_key_file: str = Field(
        default="tls.key", validation_alias=_env("CERTIFICATE_KEY_FILE"),
        description="static certificate key file name in the certificate directory",
    )  # fmt: skip
    proxy_wildcard_cert_dir: Path | None = Field(
        default=None,
        validation_alias=_env("WILDCARD_CERT_DIR"),
        description="a directory of `<name>.crt`/`<name>.key` pairs, each served for its SANs",
    )
    proxy_local_ca: bool = Field(
        default=False,
        validation_alias=_env("LOCAL_CA", netbird=False),
        description="issue a certificate per domain from a local CA kept in the data directory "
        "(the stack's default; clients must trust `<data dir>/edge/local-ca/root.crt`)",
    )
    nats_url: str | None = Field(
        default=None,
        description="NATS with JetStream: certificates, ACME challenge answers and session keys "
        "arrive from its KV buckets (`certificates`, `acme_challenges`, `auth_keys`); empty: none",
    )
    proxy_acme_certificates: bool = Field(
        default=False,
        validation_alias=_env("ACME_CERTIFICATES"),
        description="certificates come from ACME (the certmanager, through NATS): a service "
        "counts as having one only when the CA's or a file names its domain — the local CA's "
        "stays a stand-in while the order runs",
    )
    proxy_authgateway_url: str = Field(
        default="http://127.0.0.1:8081",
        validation_alias=_env("AUTHGATEWAY_URL", netbird=False),
        description="the auth gateway (plain HTTP/1.1, no tunnel): `/.heron/auth/*` on every "
        "HTTP service's domain and the whole auth domain go there; empty: none",
    )
    proxy_auth_domain: str | None = Field(
        default=None,
        validation_alias=_env("AUTH_DOMAIN", netbird=False),
        description="the cluster's auth domain (the OIDC callback); default "
        "`auth.<proxy domain>`; empty: none",
    )
    proxy_upstream_ca_file: str | None = Field(
        default=None,
        validation_alias=_env("UPSTREAM_CA_FILE", netbird=False),
        description="CA bundle that `https` targets are verified against; default: the system's",
    )
    proxy_request_timeout: str = Field(
        default="60s",
        validation_alias=_env("REQUEST_TIMEOUT", netbird=False),
        description="default wait for a target (tunnel, dial and response headers)",
    )
    proxy_header_timeout: str = Field(
        default="10s", validation_alias=_env("HEADER_TIMEOUT", netbird=False),
        description="a client must send a request's headers within this",
    )  # fmt: skip
    proxy_idle_timeout: str = Field(
        default="120s", validation_alias=_env("IDLE_TIMEOUT", netbird=False),
        description="a kept-alive client connection with no request is closed after this",
    )  # fmt: skip
    proxy_stream_idle_timeout: str = Field(
        default="300s", validation_alias=_env("STREAM_IDLE_TIMEOUT", netbird=False),
        description="a body or upgraded (WebSocket) stream that moves no byte is cut after this",
    )  # fmt: skip
    proxy_max_header_bytes: int = Field(
        default=65536, ge=1024, validation_alias=_env("MAX_HEADER_BYTES", netbird=False),
        description="request line and headers larger than this get a 431",
    )  # fmt: skip
    proxy_max_headers: int = Field(
        default=100, ge=8, validation_alias=_env("MAX_HEADERS", netbird=False),
        description="requests with more header fields get a 431",
    )  # fmt: skip
    proxy_max_idle_conns_per_target: int = Field(
        default=64, ge=0, validation_alias=_env("MAX_IDLE_CONNS_PER_HOST"),
        description="kept-alive connections per target",
    )  # fmt: skip
    proxy_max_conns_per_target: int = Field(
        default=512, ge=1, validation_alias=_env("MAX_CONNS_PER_HOST"),
        description="open connections per target; more requests wait",
    )  # fmt: skip
    proxy_idle_conn_timeout: str = Field(
        default="60s", validation_alias=_env("IDLE_CONN_TIMEOUT"),
        description="a kept-alive connection to a target is closed after this idle time",
    )  # fmt: skip

    proxy_max_dial_timeout: str = Field(
        default="30s", validation_alias=_env("MAX_DIAL_TIMEOUT"),
        description="L4: opening a target through the tunnel; caps a target's "
        "`request_timeout` and is the default when it sets none",
    )  # fmt: skip
    proxy_l4_idle_timeout: str = Field(
        default="5m", validation_alias=_env("L4_IDLE_TIMEOUT", netbird=False),
        description="TCP/TLS services: a connection moving no byte this long is closed "
        "(a service's `session_idle_timeout` overrides it)",
    )  # fmt: skip
    proxy_max_session_idle_timeout: str | None = Field(
        default=None, validation_alias=_env("MAX_SESSION_IDLE_TIMEOUT"),
        description="caps every L4 service's `session_idle_timeout`; empty: no cap",
    )  # fmt: skip
    proxy_l4_max_connections: int = Field(
        default=4096, ge=1, validation_alias=_env("L4_MAX_CONNECTIONS", netbird=False),
        description="TCP/TLS: concurrent connections per port and worker; more are refused",
    )  # fmt: skip
    proxy_l4_drain_timeout: str = Field(
        default="30s", validation_alias=_env("L4_DRAIN_TIMEOUT", netbird=False),
        description="connections of a removed L4 service may finish within this, then are cut",
    )  # fmt: skip
    proxy_udp_max_sessions_per_service: int = Field(
        default=1024, ge=1, validation_alias=_env("UDP_MAX_SESSIONS_PER_SERVICE", netbird=False),
        description="UDP: client sessions per service; new clients beyond it are refused",
    )  # fmt: skip
    proxy_udp_max_sessions: int = Field(
        default=16384, ge=1, validation_alias=_env("UDP_MAX_SESSIONS", netbird=False),
        description="UDP: client sessions of all services together",
    )  # fmt: skip
    proxy_udp_session_rate: float = Field(
        default=50.0, gt=0, validation_alias=_env("UDP_SESSION_RATE", netbird=False),
        description="UDP: new sessions per second and port (bursts of twice as many)",
    )  # fmt: skip

    @field_validator(
        "proxy_max_dial_timeout",
        "proxy_l4_idle_timeout",
        "proxy_l4_drain_timeout",
        "proxy_request_timeout",
        "proxy_header_timeout",
        "proxy_idle_timeout",
        "proxy_stream_idle_timeout",
        "proxy_idle_conn_timeout",
    )
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration_ms(value)
        return value

    @field_validator("proxy_max_session_idle_timeout")
    @classmethod
    def _optional_duration(cls, value: str | None) -> str | None:
        if value:
            parse_duration_ms(value)
        return value or None

    @field_validator("nats_url")
    @classmethod
    def _optional_url(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("proxy_authgateway_url")
    @classmethod
    def _gateway_url(cls, value: str) -> str:
        if value:
            gateway_target(value)
        return value

    @field_validator("proxy_address", "proxy_health_address")
    @classmethod
    def _address(cls, value: str) -> str:
        Address.parse(value)
        return value

    @field_validator("proxy_http_address")
    @classmethod
    def _optional_address(cls, value: str) -> str:
        if value:
            Address.parse(value)
        return value

    def http_limits(self) -> HttpLimits:
        def seconds(value: str) -> float:
            return parse_duration_ms(value) / 1000

        return HttpLimits(
            header_timeout_s=seconds(self.proxy_header_timeout),
            keepalive_timeout_s=seconds(self.proxy_idle_timeout),
            stream_idle_timeout_s=seconds(self.proxy_stream_idle_timeout),
            request_timeout_s=seconds(self.proxy_request_timeout),
            max_header_bytes=self.proxy_max_header_bytes,
            max_headers=self.proxy_max_headers,
            upstream_ca_file=self.proxy_upstream_ca_file,
            pool=PoolLimits(
                max_idle=self.proxy_max_idle_conns_per_target,
                max_open=self.proxy_max_conns_per_target,
                idle_timeout_s=seconds(self.proxy_idle_conn_timeout),
            ),
        )

    def l4_limits(self) -> L4Limits:
        def seconds(value: str) -> float:
            return parse_duration_ms(value) / 1000

        rate = self.proxy_udp_session_rate
        return L4Limits(
            max_connections_per_port=self.proxy_l4_max_connections,
            tcp_idle_timeout_s=seconds(self.proxy_l4_idle_timeout),
            max_idle_timeout_s=(
                seconds(self.proxy_max_session_idle_timeout)
                if self.proxy_max_session_idle_timeout
                else None
            ),
            dial_timeout_s=seconds(self.proxy_max_dial_timeout),
            drain_s=seconds(self.proxy_l4_drain_timeout),
            udp_max_sessions_per_service=self.proxy_udp_max_sessions_per_service,
            udp_max_sessions=self.proxy_udp_max_sessions,
            udp_new_sessions_per_s=rate,
            udp_new_sessions_burst=max(1, int(rate * 2)),
        )

    @property
    def auth_domain(self) -> str | None:
        """The auth domain the edge serves for the gateway (lower case); None: none."""
        if self.proxy_auth_domain is None:
            return f"auth.{self.proxy_domain}".lower().rstrip(".")
        return self.proxy_auth_domain.strip().lower().rstrip(".") or None

    def edge_auth(self) -> EdgeAuth:
        """A data plane's auth state: where the gateway is and which domain is its own."""
        gateway = gateway_target(self.proxy_authgateway_url) if self.proxy_authgateway_url else None
        return EdgeAuth(gateway=gateway, auth_domain=self.auth_domain)

    @property
    def health_port(self) -> int:
        return Address.parse(self.proxy_health_address).port

    @property
    def worker_count(self) -> int:
        return self.proxy_workers or min(os.cpu_count() or 1, 8)

    @property
    def local_ca_dir(self) -> Path:
        return Path(self.data_dir) / "edge" / "local-ca"

    @property
    def key_file(self) -> Path:
        return Path(self.data_dir) / "edge" / "wireguard.key"

    @property
    def wireguard_endpoint(self) -> str:
        return self.proxy_wireguard_endpoint or f"{self.proxy_domain}:{self.proxy_wireguard_port}"

    def production_problems(self) -> list[str]:
        if self.proxy_management_url.startswith("http://") and not self.proxy_allow_insecure:
            return [
                "HERON_PROXY_MANAGEMENT_URL is plain http:// and would send the proxy token in "
                "clear; use https:// or set HERON_PROXY_ALLOW_INSECURE=true"
            ]
        return []
