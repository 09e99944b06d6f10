"""The edge's settings: ``HERON_PROXY_*`` (NetBird's ``NB_PROXY_*`` names are accepted too)."""

import socket
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from heron_core.settings import HeronSettings


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
