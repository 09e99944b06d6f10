"""Settings: names shared with the edge and NetBird, refusals, and the README's table."""

import os
from pathlib import Path

import pytest

from heron_certmanager.settings import CertmanagerSettings
from heron_core.certificates import ChallengeType
from heron_core.errors import ConfigError

README = Path(__file__).parents[1] / "README.md"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("HERON_", "NB_PROXY_")):
            monkeypatch.delenv(name)


def test_netbird_names_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NB_PROXY_ACME_CHALLENGE_TYPE", "http-01")
    monkeypatch.setenv("NB_PROXY_ACME_DIRECTORY", "https://ca.example/dir")
    monkeypatch.setenv("NB_PROXY_WILDCARD_CERT_DIR", "/etc/heron/wildcards")

    settings = CertmanagerSettings()

    assert settings.proxy_acme_challenge_type is ChallengeType.HTTP_01
    assert settings.directory_url == "https://ca.example/dir"
    assert settings.proxy_wildcard_cert_dir == Path("/etc/heron/wildcards")


def test_tls_alpn_is_the_default_challenge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERON_ACME_DIRECTORY_URL", "https://ca.example/dir")

    assert CertmanagerSettings().proxy_acme_challenge_type is ChallengeType.TLS_ALPN_01


def test_without_a_directory_url_it_does_not_run() -> None:
    with pytest.raises(ConfigError, match="HERON_ACME_DIRECTORY_URL"):
        _ = CertmanagerSettings().directory_url


def test_production_refuses_a_plain_http_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERON_ACME_DIRECTORY_URL", "http://ca.example/dir")

    with pytest.raises(ConfigError, match="plain http"):
        CertmanagerSettings()
    monkeypatch.setenv("HERON_MODE", "development")
    assert CertmanagerSettings().directory_url == "http://ca.example/dir"


def test_an_unknown_challenge_type_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERON_PROXY_ACME_CHALLENGE_TYPE", "dns-01")

    with pytest.raises(ValueError, match="tls-alpn-01"):
        CertmanagerSettings()


def test_the_readme_lists_every_setting() -> None:
    table = README.read_text()
    names = []
    for name, field in CertmanagerSettings.model_fields.items():
        alias = field.validation_alias
        first = alias.choices[0] if alias is not None else f"HERON_{name.upper()}"  # type: ignore[union-attr]
        names.append(first)

    assert [name for name in names if f"| `{name}` |" not in table] == []
