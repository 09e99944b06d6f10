"""The edge's route table follows the config stream's snapshot rules; settings read both names."""

import pytest

from heron_core.errors import ConfigError
from heron_core.types import ServiceMode
from heron_edge.connector import StreamTarget
from heron_edge.routes import Route, RouteTable, RouteTarget
from heron_edge.settings import EdgeSettings


def route(route_id: str, domain: str) -> Route:
    target = RouteTarget("tgt_1", StreamTarget("100.64.0.7", "", 8080), "/", enabled=True)
    return Route(route_id, "acc_1", domain, ServiceMode.HTTP, 0, (target,))


def test_a_snapshot_replaces_what_the_edge_held() -> None:
    table = RouteTable()
    table.upsert(route("svc_old", "old.example.com"))
    table.begin_snapshot()
    table.upsert(route("svc_new", "new.example.com"))
    assert table.finish_snapshot() == ["svc_old"]
    assert table.ready
    assert table.by_domain("NEW.example.com.") is not None
    assert table.by_domain("old.example.com") is None


def test_changes_after_the_snapshot_apply_one_by_one() -> None:
    table = RouteTable()
    table.begin_snapshot()
    table.finish_snapshot()
    table.upsert(route("svc_1", "a.example.com"))
    table.remove("svc_1")
    table.remove("svc_unknown")  # a removal of something never held is harmless
    assert table.routes == {}


def test_netbird_variable_names_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NB_PROXY_DOMAIN", "proxy.example.com")
    monkeypatch.setenv("NB_PROXY_TOKEN", "t0ken")
    monkeypatch.setenv("HERON_MODE", "development")
    settings = EdgeSettings()
    assert settings.proxy_domain == "proxy.example.com"
    assert settings.wireguard_endpoint == "proxy.example.com:51820"


@pytest.mark.parametrize(
    ("value", "url"), [(None, None), ("", None), ("nats://n:4222", "nats://n:4222")]
)
def test_nats_is_optional(
    monkeypatch: pytest.MonkeyPatch, value: str | None, url: str | None
) -> None:
    monkeypatch.setenv("HERON_PROXY_DOMAIN", "proxy.example.com")
    monkeypatch.setenv("HERON_PROXY_TOKEN", "t0ken")
    monkeypatch.setenv("HERON_MODE", "development")
    if value is None:
        monkeypatch.delenv("HERON_NATS_URL", raising=False)
    else:
        monkeypatch.setenv("HERON_NATS_URL", value)
    assert EdgeSettings().nats_url == url


def test_plain_http_to_management_is_refused_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HERON_PROXY_DOMAIN", "proxy.example.com")
    monkeypatch.setenv("HERON_PROXY_TOKEN", "t0ken")
    monkeypatch.setenv("HERON_PROXY_MANAGEMENT_URL", "http://mgmt.example.com:50051")
    monkeypatch.delenv("HERON_MODE", raising=False)
    with pytest.raises(ConfigError, match="in clear"):
        EdgeSettings()
