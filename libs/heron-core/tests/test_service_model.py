from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from heron_core.service import ServiceRequest, TargetOptions, TargetRequest


def request(**fields: Any) -> ServiceRequest:
    return ServiceRequest.model_validate({"name": "app", "domain": "app.example.com", **fields})


@pytest.mark.parametrize(
    ("given_domain", "stored"),
    [
        ("App.Example.COM", "app.example.com"),
        ("app.example.com.", "app.example.com"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ],
)
def test_domains_are_normalised(given_domain: str, stored: str) -> None:
    assert request(domain=given_domain).domain == stored


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "localhost",
        "-a.example.com",
        "a-.example.com",
        "a..example.com",
        "*.example.com",
        "10.0.0.1",
        "bücher.example",
        "a" * 64 + ".com",
        "a_b.example.com",
    ],
)
def test_bad_domains_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        request(domain=bad)


def test_paths_normalise_to_segment_prefixes() -> None:
    target = TargetRequest.model_validate(
        {"target_type": "peer", "target_id": "p", "path": "/api/"}
    )
    assert target.path == "/api"


@pytest.mark.parametrize("bad", ["api", "/a/../b", "/a//b", "/a b", "/./x"])
def test_bad_paths_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        TargetRequest.model_validate({"target_type": "peer", "target_id": "p", "path": bad})


@pytest.mark.parametrize(
    "header", ["Host", "X-Forwarded-For", "x-heron-user", "Transfer-Encoding", "Cookie"]
)
def test_custom_headers_may_not_take_the_proxy_headers(header: str) -> None:
    with pytest.raises(ValidationError):
        TargetOptions.model_validate({"custom_headers": {header: "x"}})


def test_custom_header_values_may_not_smuggle_lines() -> None:
    with pytest.raises(ValidationError):
        TargetOptions.model_validate({"custom_headers": {"X-A": "a\r\nX-B: b"}})


def test_custom_header_names_are_unique_ignoring_case() -> None:
    with pytest.raises(ValidationError):
        TargetOptions.model_validate({"custom_headers": {"X-A": "1", "x-a": "2"}})


def test_restrictions_normalise_countries_and_empty_crowdsec_mode() -> None:
    parsed = request(access_restrictions={"allowed_countries": ["de"], "crowdsec_mode": ""})
    assert parsed.access_restrictions is not None
    assert parsed.access_restrictions.allowed_countries == ["DE"]
    assert parsed.access_restrictions.crowdsec_mode == "off"


def test_unknown_fields_are_refused_at_every_level() -> None:
    with pytest.raises(ValidationError):
        request(targets=[{"target_type": "peer", "target_id": "p", "options": {"surprise": True}}])


@given(st.text(max_size=300))
def test_domain_validation_only_raises_validation_errors(text: str) -> None:
    try:
        parsed = request(domain=text)
    except ValidationError:
        return
    assert parsed.domain == parsed.domain.lower()
    assert len(parsed.domain) <= 253


def test_a_deeply_nested_body_is_refused_not_crashed() -> None:
    nested: Any = "x"
    for _ in range(5000):
        nested = [nested]
    with pytest.raises(ValidationError):
        ServiceRequest.model_validate({"name": nested, "domain": "a.example.com"})


def test_netbird_bearer_auth_payloads_carry_over() -> None:
    body = {"bearer_auth": {"enabled": True, "distribution_groups": ["devs"]}}
    parsed = request(auth=body)
    assert parsed.auth is not None and parsed.auth.bearer_auth is not None
    assert parsed.auth.bearer_auth.groups == ["devs"]


def test_a_target_read_back_with_its_id_is_accepted() -> None:
    target = TargetRequest.model_validate(
        {"id": "tgt_abc", "target_type": "peer", "target_id": "peer_1", "port": 80}
    )
    assert target.id == "tgt_abc"
