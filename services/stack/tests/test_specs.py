"""The table of services and the banner, from settings (no process is started)."""

import os
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from heron_core.secret_tokens import PROXY_TOKEN_PREFIX, generate_token, is_well_formed
from heron_core.settings import LogFormat, RunMode
from heron_stack import settings as settings_module
from heron_stack.banner import render_banner
from heron_stack.readiness import HttpOk, TcpAccepting
from heron_stack.settings import StackSettings
from heron_stack.specs import child_log_format, stack_specs


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StackSettings:
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.startswith("HERON_")]:
        monkeypatch.delenv(name)
    return StackSettings(nats_port=14222, management_port=18080)


def test_nats_starts_first_and_management_is_python_m(settings: StackSettings) -> None:
    nats, management, *_ = stack_specs(settings, stderr_is_tty=False)

    assert nats.name == "nats"
    assert "--jetstream" in nats.argv
    assert nats.argv[nats.argv.index("--store_dir") + 1] == str(settings.data_path / "nats")
    assert [c.description for c in nats.ready_checks] == [
        TcpAccepting("127.0.0.1", 14222).description
    ]
    assert management.argv == (sys.executable, "-m", "heron_management")
    assert [c.description for c in management.ready_checks] == [
        HttpOk("http://127.0.0.1:18080/healthz").description,
        HttpOk("http://127.0.0.1:18080/readyz").description,
        TcpAccepting("127.0.0.1", settings.management_grpc_port).description,
    ]


def test_management_gets_the_shared_environment(settings: StackSettings) -> None:
    _, management, *_ = stack_specs(settings, stderr_is_tty=False)

    assert settings.data_path.is_absolute()
    assert management.env["HERON_MODE"] == "development"
    assert management.env["HERON_DATA_DIR"] == str(settings.data_path)
    assert management.env["HERON_NATS_URL"] == "nats://127.0.0.1:14222"
    assert management.env["HERON_MANAGEMENT_PORT"] == "18080"
    assert management.env["HERON_LOG_FORMAT"] == "json"


def test_children_log_for_the_runners_terminal() -> None:
    assert child_log_format(LogFormat.AUTO, stderr_is_tty=True) == "console"
    assert child_log_format(LogFormat.AUTO, stderr_is_tty=False) == "json"
    assert child_log_format(LogFormat.JSON, stderr_is_tty=True) == "json"


def test_the_banner_names_every_url_and_the_mode(settings: StackSettings) -> None:
    banner = render_banner(settings)

    for expected in (
        "http://127.0.0.1:18080/api",
        "http://127.0.0.1:18080/api/openapi.json",
        "http://127.0.0.1:18080/api/docs",
        "nats://127.0.0.1:14222",
        str(settings.data_path),
        "development",
    ):
        assert expected in banner


def test_the_banner_hides_the_database_password(settings: StackSettings) -> None:
    with_postgres = settings.model_copy(
        update={"database_url": "postgresql+asyncpg://heron:s3cret@db:5432/heron"}
    )

    banner = render_banner(with_postgres)

    assert "s3cret" not in banner
    assert "postgresql+asyncpg://heron:***@db:5432/heron" in banner


def test_production_mode_is_passed_on(settings: StackSettings) -> None:
    production = settings.model_copy(update={"mode": RunMode.PRODUCTION})

    _, management, _, edge = stack_specs(production, stderr_is_tty=False)

    assert management.env["HERON_MODE"] == "production"
    assert edge.env["HERON_MODE"] == "production"


def test_the_edge_starts_last_and_is_waited_for_alive_only(settings: StackSettings) -> None:
    edge_settings = settings.model_copy(
        update={
            "proxy_address": ":18443",
            "proxy_http_address": "127.0.0.1:18880",
            "proxy_health_address": "127.0.0.1:19100",
        }
    )

    *_, edge = stack_specs(edge_settings, stderr_is_tty=False)

    assert edge.name == "edge"
    assert edge.argv == (sys.executable, "-m", "heron_edge")
    assert [c.description for c in edge.ready_checks] == [
        HttpOk("http://127.0.0.1:19100/healthz/live").description
    ]
    assert edge.listens == (("127.0.0.1", 18443), ("127.0.0.1", 18880), ("127.0.0.1", 19100))


def test_the_edge_gets_its_settings_and_managements_address(settings: StackSettings) -> None:
    *_, edge = stack_specs(settings, stderr_is_tty=False)

    assert edge.env["HERON_PROXY_DOMAIN"] == "heron.localhost"
    assert edge.env["HERON_PROXY_MANAGEMENT_URL"] == "http://127.0.0.1:50051"
    assert edge.env["HERON_PROXY_HEALTH_ADDRESS"] == "127.0.0.1:9100"
    assert edge.env["HERON_PROXY_LOCAL_CA"] == "true"
    assert edge.env["HERON_PROXY_WG_PORT"] == "51820"
    assert edge.env["HERON_PROXY_WIREGUARD_INTERFACE"] == "heron-edge"
    assert edge.env["HERON_PROXY_WIREGUARD_ENDPOINT"] == "127.0.0.1:51820"
    assert edge.env["HERON_DATA_DIR"] == str(settings.data_path)
    assert edge.env["HERON_NATS_URL"] == "nats://127.0.0.1:14222"


def test_a_public_proxy_domain_is_the_wireguard_endpoint(settings: StackSettings) -> None:
    public = settings.model_copy(update={"proxy_domain": "proxy.example.com", "proxy_wg_port": 5})

    *_, edge = stack_specs(public, stderr_is_tty=False)

    assert edge.env["HERON_PROXY_WIREGUARD_ENDPOINT"] == "proxy.example.com:5"


def test_management_and_the_edge_share_a_fresh_proxy_token(settings: StackSettings) -> None:
    _, management, _, edge = stack_specs(settings, stderr_is_tty=False)
    _, again, *_ = stack_specs(settings, stderr_is_tty=False)

    token = edge.env["HERON_PROXY_TOKEN"]
    assert management.env["HERON_MANAGEMENT_EDGE_TOKEN"] == token
    assert is_well_formed(token, PROXY_TOKEN_PREFIX)
    assert again.env["HERON_MANAGEMENT_EDGE_TOKEN"] != token  # one per start


def test_a_chosen_edge_token_is_used(settings: StackSettings) -> None:
    chosen = generate_token(PROXY_TOKEN_PREFIX)
    given = settings.model_copy(update={"management_edge_token": SecretStr(chosen)})

    _, management, _, edge = stack_specs(given, stderr_is_tty=False)

    assert management.env["HERON_MANAGEMENT_EDGE_TOKEN"] == edge.env["HERON_PROXY_TOKEN"] == chosen


@pytest.mark.parametrize(
    ("root", "https", "http"), [(True, ":443", ":80"), (False, ":8443", ":8880")]
)
def test_public_ports_shift_when_not_root(
    monkeypatch: pytest.MonkeyPatch, root: bool, https: str, http: str
) -> None:
    monkeypatch.setattr(settings_module, "_is_root", lambda: root)

    shifted = StackSettings()

    assert (shifted.proxy_address, shifted.proxy_http_address) == (https, http)


def test_an_address_without_a_port_is_refused() -> None:
    with pytest.raises(ValidationError, match="must be host:port"):
        StackSettings(proxy_address="127.0.0.1")


def test_the_banner_names_the_services_url_the_local_ca_and_wireguard(
    settings: StackSettings,
) -> None:
    edge_settings = settings.model_copy(
        update={"proxy_address": ":8443", "proxy_http_address": ":8880", "proxy_wg_port": 51999}
    )

    banner = render_banner(edge_settings)

    assert "https://<name>.heron.localhost:8443" in banner
    assert "http://<name>.heron.localhost:8880" in banner
    assert str(settings.data_path / "edge" / "local-ca" / "root.crt") in banner
    assert "127.0.0.1:51999 UDP" in banner
    assert "http://127.0.0.1:9100/healthz/ready" in banner
    assert (
        render_banner(settings.model_copy(update={"proxy_address": ":443"})).count(
            "https://<name>.heron.localhost "
        )
        == 1
    )


def test_an_empty_http_address_means_no_plain_http_listener(settings: StackSettings) -> None:
    without = settings.model_copy(update={"proxy_address": ":18443", "proxy_http_address": ""})

    *_, edge = stack_specs(without, stderr_is_tty=False)

    assert edge.listens == (("127.0.0.1", 18443), ("127.0.0.1", 9100))
    assert "http://<name>" not in render_banner(without)


def test_without_acme_there_is_no_certmanager(settings: StackSettings) -> None:
    names = [spec.name for spec in stack_specs(settings, stderr_is_tty=False)]

    assert names == ["nats", "management", "authgateway", "edge"]
    assert "ACME" not in render_banner(settings)


def test_with_acme_the_certmanager_starts_before_the_edge(settings: StackSettings) -> None:
    acme = settings.model_copy(
        update={"acme_directory_url": "https://ca.example/dir", "certmanager_port": 18083}
    )

    *_, certmanager, _, edge = stack_specs(acme, stderr_is_tty=False)

    assert certmanager.name == "certmanager"
    assert certmanager.argv == (sys.executable, "-m", "heron_certmanager")
    assert certmanager.env["HERON_ACME_DIRECTORY_URL"] == "https://ca.example/dir"
    assert certmanager.env["HERON_CERTMANAGER_PORT"] == "18083"
    assert certmanager.env["HERON_NATS_URL"] == "nats://127.0.0.1:14222"
    assert [c.description for c in certmanager.ready_checks] == [
        HttpOk("http://127.0.0.1:18083/healthz/ready").description
    ]
    assert certmanager.listens == (("127.0.0.1", 18083),)
    assert edge.env["HERON_PROXY_ACME_CERTIFICATES"] == "true"
    assert edge.env["HERON_PROXY_LOCAL_CA"] == "true", "the fallback until a certificate comes"
    assert "https://ca.example/dir" in render_banner(acme)


def test_the_auth_gateway_is_internal_and_the_edge_knows_where(
    settings: StackSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HERON_AUTHGATEWAY_CALLBACK_URL", raising=False)
    tuned = settings.model_copy(
        update={"authgateway_port": 18081, "proxy_address": ":18443", "proxy_domain": "p.test"}
    )

    *_, gateway, edge = stack_specs(tuned, stderr_is_tty=False)

    assert gateway.name == "authgateway"
    assert gateway.argv == (sys.executable, "-m", "heron_authgateway")
    assert gateway.listens == (("127.0.0.1", 18081),)
    assert gateway.env["HERON_AUTHGATEWAY_HOST"] == "127.0.0.1"
    assert gateway.env["HERON_AUTHGATEWAY_CALLBACK_URL"] == (
        "https://auth.p.test:18443/.heron/auth/callback"
    )
    assert [c.description for c in gateway.ready_checks] == [
        HttpOk("http://127.0.0.1:18081/healthz/ready").description
    ]
    assert edge.env["HERON_PROXY_AUTHGATEWAY_URL"] == "http://127.0.0.1:18081"
    assert edge.env["HERON_PROXY_AUTH_DOMAIN"] == "auth.p.test"
    assert "https://auth.p.test:18443/.heron/auth/callback" in render_banner(tuned)


def test_a_callback_url_given_to_the_stack_is_the_gateways(
    settings: StackSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "HERON_AUTHGATEWAY_CALLBACK_URL", "https://login.example/.heron/auth/callback"
    )

    gateway = next(s for s in stack_specs(settings, stderr_is_tty=False) if s.name == "authgateway")

    assert "HERON_AUTHGATEWAY_CALLBACK_URL" not in gateway.env, "the runner's own passes through"
