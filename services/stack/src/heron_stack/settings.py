"""The stack runner's settings: its own ``HERON_STACK_*`` knobs plus the shared names it passes on.

Every field's description is the user documentation; README.md repeats them in one table. The
edge's public listeners default to the standard ports as root and to unprivileged ones
otherwise (binding below 1024 needs root), so ``scripts/run`` works for anyone.
"""

import os
from pathlib import Path

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from heron_core.settings import HeronSettings, RunMode

#: public ports the stack's edge takes when it may not bind privileged ones
UNPRIVILEGED_HTTPS_PORT = 8443
UNPRIVILEGED_HTTP_PORT = 8880
#: proxy domains that only this machine resolves: agents here reach the edge on loopback
_LOCAL_SUFFIX = ".localhost"


def _is_root() -> bool:
    return os.geteuid() == 0


def _default_proxy_address() -> str:
    return ":443" if _is_root() else f":{UNPRIVILEGED_HTTPS_PORT}"


def _default_proxy_http_address() -> str:
    return ":80" if _is_root() else f":{UNPRIVILEGED_HTTP_PORT}"


def split_address(address: str) -> tuple[str, int]:
    """``host:port``, ``:port`` or ``[v6]:port`` as ``(host, port)``; host ``""``: every address."""
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"address {address!r} must be host:port or :port, e.g. :8443")
    return host.removeprefix("[").removesuffix("]"), int(port)


class StackSettings(HeronSettings):
    model_config = SettingsConfigDict(env_prefix="HERON_", extra="ignore", frozen=True)

    # A laptop is the stack runner's home: development unless told otherwise.
    mode: RunMode = Field(
        default=RunMode.DEVELOPMENT, description="passed to every service; `production` or not"
    )
    data_dir: Path = Field(
        default=Path(".heron"), description="state of every service; passed on as an absolute path"
    )
    nats_port: int = Field(default=4222, ge=1, le=65535, description="embedded NATS client port")
    management_host: str = Field(default="127.0.0.1", description="management REST API address")
    management_port: int = Field(
        default=8080, ge=1, le=65535, description="management REST API port"
    )
    management_grpc_host: str = Field(
        default="127.0.0.1",
        description="management gRPC address (agents and edges); 0.0.0.0 to let other hosts in",
    )
    management_grpc_port: int = Field(
        default=50051, ge=1, le=65535, description="management gRPC port"
    )
    database_url: str | None = Field(
        default=None,
        description="passed through to management; default SQLite under the data directory",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="passed through to management: the owner's API token (generated if unset)",
    )
    management_edge_token: SecretStr | None = Field(
        default=None,
        description="the embedded edge's proxy token, given to management and to the edge; "
        "a fresh one is generated on every start when unset",
    )
    proxy_domain: str = Field(
        default="heron.localhost",
        description="the edge's cluster domain: services are reached as https://<name>.<domain>",
    )
    proxy_address: str = Field(
        default_factory=_default_proxy_address,
        description="the edge's main (HTTPS, TLS) listener, `host:port` or `:port`",
    )
    proxy_http_address: str = Field(
        default_factory=_default_proxy_http_address,
        description="the edge's plain HTTP listener (ACME http-01, redirects to HTTPS); "
        "empty: none",
    )
    proxy_health_address: str = Field(
        default="127.0.0.1:9100",
        description="the edge's health and metrics listener (`/healthz/live`, `/healthz/ready`)",
    )
    proxy_wg_port: int = Field(
        default=51820, ge=1, le=65535, description="the edge's WireGuard UDP port"
    )
    proxy_wireguard_interface: str = Field(
        default="heron-edge",
        min_length=1,
        max_length=15,
        description="the edge's WireGuard interface name, unique on the host",
    )
    proxy_wireguard_endpoint: str | None = Field(
        default=None,
        description="the `host:port` agents dial for the edge's WireGuard; default "
        "`<proxy domain>:<WG port>`, or `127.0.0.1:<WG port>` for a `.localhost` domain",
    )
    acme_directory_url: str | None = Field(
        default=None,
        description="an ACME CA's directory URL: the stack runs the certmanager and the edge "
        "serves its certificates (the local CA stays the fallback); unset: no ACME",
    )
    certmanager_port: int = Field(
        default=8083, ge=1, le=65535, description="the certmanager's health port on 127.0.0.1"
    )
    authgateway_port: int = Field(
        default=8081, ge=1, le=65535, description="the auth gateway's port on 127.0.0.1 (internal)"
    )
    stack_ready_timeout_s: float = Field(
        default=60.0, gt=0, description="how long each service may take to become ready"
    )
    stack_stop_timeout_s: float = Field(
        default=10.0, gt=0, description="grace between SIGTERM and SIGKILL when stopping"
    )
    stack_restart_initial_s: float = Field(
        default=0.5, gt=0, description="first delay before restarting a crashed service"
    )
    stack_restart_max_s: float = Field(
        default=30.0, gt=0, description="the restart delay doubles up to this"
    )
    stack_restart_reset_after_s: float = Field(
        default=60.0, gt=0, description="a service up this long gets the first delay again"
    )

    @field_validator("proxy_address", "proxy_http_address", "proxy_health_address")
    @classmethod
    def _is_an_address(cls, value: str, info: ValidationInfo) -> str:
        if value or info.field_name != "proxy_http_address":
            split_address(value)
        return value

    @property
    def data_path(self) -> Path:
        """The data directory as an absolute path, so children agree on it whatever their cwd."""
        return self.data_dir.expanduser().resolve()

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def management_grpc_url(self) -> str:
        host = self.management_grpc_host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.management_grpc_port}"

    @property
    def edge_wireguard_endpoint(self) -> str:
        if self.proxy_wireguard_endpoint:
            return self.proxy_wireguard_endpoint
        domain = self.proxy_domain.lower().rstrip(".")
        local = domain == "localhost" or domain.endswith(_LOCAL_SUFFIX)
        return f"{'127.0.0.1' if local else domain}:{self.proxy_wg_port}"

    @property
    def edge_local_ca_certificate(self) -> Path:
        """Where the edge's local CA keeps its root certificate (``HERON_PROXY_LOCAL_CA``)."""
        return self.data_path / "edge" / "local-ca" / "root.crt"

    @property
    def acme_enabled(self) -> bool:
        return bool(self.acme_directory_url)

    @property
    def certmanager_health_url(self) -> str:
        return f"http://127.0.0.1:{self.certmanager_port}/healthz/ready"

    @property
    def authgateway_url(self) -> str:
        return f"http://127.0.0.1:{self.authgateway_port}"

    @property
    def auth_domain(self) -> str:
        """Where the cluster's one OIDC callback lives (the edge routes it to the gateway)."""
        return f"auth.{self.proxy_domain.lower().rstrip('.')}"

    @property
    def oidc_callback_url(self) -> str:
        """The redirect URI to register at the identity provider."""
        _, port = split_address(self.proxy_address)
        suffix = "" if port == 443 else f":{port}"
        return f"https://{self.auth_domain}{suffix}/.heron/auth/callback"

    @property
    def management_url(self) -> str:
        host = f"[{self.management_host}]" if ":" in self.management_host else self.management_host
        return f"http://{host}:{self.management_port}"
