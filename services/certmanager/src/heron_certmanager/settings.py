"""The certmanager's settings: ``HERON_CERTMANAGER_*``, the shared ``HERON_*`` names, and the
edge's ``HERON_PROXY_*`` certificate names (NetBird's ``NB_PROXY_*`` accepted too), so one
environment file configures both."""

import socket
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import SettingsConfigDict

from heron_core.certificates import ChallengeType
from heron_core.errors import ConfigError
from heron_core.settings import HeronSettings


def _proxy(name: str) -> AliasChoices:
    return AliasChoices(f"HERON_PROXY_{name}", f"NB_PROXY_{name}")


class CertmanagerSettings(HeronSettings):
    model_config = SettingsConfigDict(
        env_prefix="HERON_", extra="ignore", frozen=True, populate_by_name=True
    )

    acme_directory_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("HERON_ACME_DIRECTORY_URL", "NB_PROXY_ACME_DIRECTORY"),
        description="the ACME CA's directory URL (required), e.g. "
        "`https://acme-v02.api.letsencrypt.org/directory`",
    )
    proxy_acme_challenge_type: ChallengeType = Field(
        default=ChallengeType.TLS_ALPN_01,
        validation_alias=_proxy("ACME_CHALLENGE_TYPE"),
        description="`tls-alpn-01` (edges answer on port 443) or `http-01` (port 80)",
    )
    acme_email: str | None = Field(
        default=None,
        description="contact address of the ACME account; none: an account without one",
    )
    acme_ca_file: Path | None = Field(
        default=None,
        description="CA bundle the ACME server's HTTPS is verified against; default: the "
        "system's (set it for a private CA such as Pebble's)",
    )
    nats_url: str = Field(default="nats://127.0.0.1:4222", description="NATS with JetStream")
    certmanager_instance_id: str = Field(
        default_factory=lambda: f"certmanager-{socket.gethostname()}",
        min_length=1,
        description="this replica's name, unique among replicas and stable across restarts: "
        "a restarted replica resumes the orders it leased",
    )
    certmanager_host: str = Field(default="127.0.0.1", description="health endpoint address")
    certmanager_port: int = Field(
        default=8083, ge=0, le=65535, description="health endpoint port (`/healthz/live`, "
        "`/healthz/ready`, `/domains`); 0: any free port"
    )  # fmt: skip
    certmanager_max_concurrent_orders: int = Field(
        default=4, ge=1, le=64, description="ACME orders this replica runs at once"
    )
    certmanager_order_timeout_s: float = Field(
        default=180.0, gt=0, description="one order may take this long before it counts as failed"
    )
    certmanager_challenge_propagation_s: float = Field(
        default=2.0, ge=0, le=60,
        description="between writing a challenge answer and telling the CA to validate: the "
        "edges' time to receive it (the CA may check at once)",
    )  # fmt: skip
    certmanager_retry_initial_s: float = Field(
        default=60.0, gt=0, description="first wait after a failed order (then doubling, jittered)"
    )
    certmanager_retry_max_s: float = Field(
        default=6 * 3600.0, gt=0, description="the wait after failed orders grows up to this"
    )
    certmanager_rescan_interval_s: float = Field(
        default=60.0, gt=0, description="how often static and wildcard files are looked at again"
    )
    proxy_certificate_directory: Path = Field(
        default=Path("certs"),
        validation_alias=_proxy("CERTIFICATE_DIRECTORY"),
        description="as the edge's: a static certificate here that names a domain covers it",
    )
    proxy_certificate_file: str = Field(
        default="tls.crt",
        validation_alias=_proxy("CERTIFICATE_FILE"),
        description="as the edge's: the static certificate's file name in that directory",
    )
    proxy_wildcard_cert_dir: Path | None = Field(
        default=None,
        validation_alias=_proxy("WILDCARD_CERT_DIR"),
        description="as the edge's: `<name>.crt` files whose names cover domains (no ACME then)",
    )

    @field_validator("acme_directory_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("https://", "http://")):
            raise ValueError(f"ACME directory URL {value!r} is not an http(s):// URL")
        return value or None

    @property
    def directory_url(self) -> str:
        """The ACME directory URL; ``ConfigError`` when it is not set."""
        if not self.acme_directory_url:
            raise ConfigError(
                "HERON_ACME_DIRECTORY_URL is not set: the certmanager runs only with ACME on"
            )
        return self.acme_directory_url

    @property
    def account_key_file(self) -> Path:
        return Path(self.data_dir) / "certmanager" / "acme-account.key"

    def production_problems(self) -> list[str]:
        if self.acme_directory_url and self.acme_directory_url.startswith("http://"):
            return [
                "HERON_ACME_DIRECTORY_URL is plain http://: the account's requests could be "
                "altered on the way (RFC 8555 requires https)"
            ]
        return []
