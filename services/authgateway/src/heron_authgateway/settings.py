"""The auth gateway's settings: ``HERON_AUTHGATEWAY_*`` and the shared ``HERON_*`` names.

Durations are Go-style strings (``8h``, ``60s``, ``500ms``; ``heron_core.duration``).
"""

from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from heron_core.auth import SSO_CALLBACK_PATH
from heron_core.duration import DurationError, normalize_duration, parse_duration_ms
from heron_core.errors import ConfigError
from heron_core.settings import HeronSettings

#: a lockout doubles with each further one up to this (docs/auth.md)
LOCKOUT_CAP_S = 3600.0


class AuthGatewaySettings(HeronSettings):
    model_config = SettingsConfigDict(env_prefix="HERON_", extra="ignore", frozen=True)

    nats_url: str = Field(default="nats://127.0.0.1:4222", description="NATS with JetStream")
    authgateway_host: str = Field(
        default="127.0.0.1", description="listen address: internal only, the edge calls it"
    )
    authgateway_port: int = Field(default=8081, ge=0, le=65535, description="listen port")
    authgateway_session_ttl: str = Field(default="8h", description="how long a session lives")
    authgateway_key_rotation: str = Field(
        default="24h", description="a replica signs with a new key this often"
    )
    authgateway_max_failures: int = Field(
        default=5, ge=1, description="failed tries of one address within the window lock it out"
    )
    authgateway_failure_window: str = Field(
        default="60s", description="failures older than this are forgotten"
    )
    authgateway_lockout: str = Field(
        default="60s", description="first lockout; doubles with each further one, up to 1h"
    )
    authgateway_service_max_failures: int = Field(
        default=100, ge=1,
        description="failed tries of all addresses within the window lock a service out",
    )  # fmt: skip
    authgateway_oidc_issuer: str | None = Field(
        default=None, description="the OpenID provider's issuer URL; none: no single sign-on"
    )
    authgateway_oidc_client_id: str | None = Field(default=None, description="OIDC client id")
    authgateway_oidc_client_secret: SecretStr | None = Field(
        default=None, description="OIDC client secret"
    )
    authgateway_oidc_scopes: str = Field(
        default="openid email profile groups", description="scopes asked of the provider"
    )
    authgateway_oidc_groups_claim: str = Field(
        default="groups", description="the ID token (or userinfo) claim that lists the groups"
    )
    authgateway_callback_url: str | None = Field(
        default=None,
        description="the cluster's one OIDC redirect URI, "
        "e.g. `https://auth.heron.example:443/.heron/auth/callback`",
    )

    @field_validator(
        "authgateway_session_ttl",
        "authgateway_key_rotation",
        "authgateway_failure_window",
        "authgateway_lockout",
    )
    @classmethod
    def _duration(cls, value: str) -> str:
        try:
            return normalize_duration(value)
        except DurationError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("authgateway_oidc_issuer", "authgateway_callback_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("https://", "http://")):
            raise ValueError(f"{value!r} is not an http(s):// URL")
        return value or None

    @model_validator(mode="after")
    def _sso_complete(self) -> Self:
        if not self.authgateway_oidc_issuer:
            return self
        missing = [
            name
            for name, value in (
                ("HERON_AUTHGATEWAY_OIDC_CLIENT_ID", self.authgateway_oidc_client_id),
                ("HERON_AUTHGATEWAY_CALLBACK_URL", self.authgateway_callback_url),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                f"HERON_AUTHGATEWAY_OIDC_ISSUER is set but {', '.join(missing)} is not"
            )
        callback = self.authgateway_callback_url or ""
        if not callback.split("?", 1)[0].endswith(SSO_CALLBACK_PATH):
            raise ConfigError(
                f"HERON_AUTHGATEWAY_CALLBACK_URL {callback!r} does not end with "
                f"{SSO_CALLBACK_PATH!r}, where the gateway answers the provider"
            )
        return self

    @property
    def sso_configured(self) -> bool:
        return bool(self.authgateway_oidc_issuer)

    @property
    def session_ttl_s(self) -> int:
        return max(1, parse_duration_ms(self.authgateway_session_ttl) // 1000)

    @property
    def key_rotation_s(self) -> float:
        return parse_duration_ms(self.authgateway_key_rotation) / 1000

    @property
    def failure_window_s(self) -> float:
        return parse_duration_ms(self.authgateway_failure_window) / 1000

    @property
    def lockout_s(self) -> float:
        return parse_duration_ms(self.authgateway_lockout) / 1000

    def production_problems(self) -> list[str]:
        issuer = self.authgateway_oidc_issuer
        if issuer and issuer.startswith("http://"):
            return [
                "HERON_AUTHGATEWAY_OIDC_ISSUER is plain http://: tokens and the client secret "
                "would cross the network unprotected"
            ]
        return []
