"""Settings: defaults, durations, and what production refuses."""

import pytest
from pydantic import ValidationError

from heron_authgateway.settings import AuthGatewaySettings
from heron_core.errors import ConfigError
from heron_core.settings import RunMode

CALLBACK = "https://auth.heron.localhost:8443/.heron/auth/callback"


def test_defaults() -> None:
    settings = AuthGatewaySettings()
    assert (settings.authgateway_host, settings.authgateway_port) == ("127.0.0.1", 8081)
    assert settings.session_ttl_s == 8 * 3600 and settings.key_rotation_s == 24 * 3600
    assert (settings.failure_window_s, settings.lockout_s) == (60, 60)
    assert settings.authgateway_max_failures == 5
    assert settings.authgateway_service_max_failures == 100
    assert not settings.sso_configured


def test_durations_are_checked() -> None:
    with pytest.raises(ValidationError, match="not a duration"):
        AuthGatewaySettings(authgateway_session_ttl="eight hours")
    assert AuthGatewaySettings(authgateway_lockout="90s").authgateway_lockout == "1m30s"


def test_sso_needs_a_client_id_and_a_callback_url() -> None:
    with pytest.raises(ConfigError, match="CLIENT_ID, HERON_AUTHGATEWAY_CALLBACK_URL"):
        AuthGatewaySettings(authgateway_oidc_issuer="https://idp.example")
    with pytest.raises(ConfigError, match="does not end with"):
        AuthGatewaySettings(
            authgateway_oidc_issuer="https://idp.example",
            authgateway_oidc_client_id="heron",
            authgateway_callback_url="https://auth.example/callback",
        )


def test_production_refuses_an_http_issuer() -> None:
    with pytest.raises(ConfigError, match="plain http"):
        AuthGatewaySettings(
            authgateway_oidc_issuer="http://idp.example",
            authgateway_oidc_client_id="heron",
            authgateway_callback_url=CALLBACK,
        )
    allowed = AuthGatewaySettings(
        mode=RunMode.DEVELOPMENT,
        authgateway_oidc_issuer="http://idp.example",
        authgateway_oidc_client_id="heron",
        authgateway_callback_url=CALLBACK,
    )
    assert allowed.sso_configured
