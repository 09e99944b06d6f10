"""The pure rules of domain/service_spec: no server, no database."""

from typing import Any

import pytest

from heron_core.service import ServiceRequest
from heron_management.domain.service_spec import build_spec
from heron_management.domain.stored_auth import StoredAuth, StoredHeaderAuth, StoredSecretMethod
from heron_management.errors import InvalidRequestError


def spec_of(stored: StoredAuth | None = None, **fields: Any) -> Any:
    request = ServiceRequest.model_validate({"name": "a", "domain": "a.example.com", **fields})
    return build_spec(request, stored)


def problems_of(**fields: Any) -> dict[tuple[str | int, ...], str]:
    with pytest.raises(InvalidRequestError) as caught:
        spec_of(**fields)
    return {p.loc: p.message for p in caught.value.problems}


def test_http_defaults_are_filled_in() -> None:
    spec = spec_of(
        targets=[
            {"target_type": "peer", "target_id": "p"},
            {"target_type": "peer", "target_id": "p", "protocol": "https", "path": "/api"},
        ]
    )
    first, second = spec.targets
    assert (first.protocol, first.port, first.path) == ("http", 80, "/")
    assert (second.protocol, second.port, second.path) == ("https", 443, "/api")
    assert spec.listen_port is None


def test_l4_services_fill_transport_and_udp_idle_timeout() -> None:
    spec = spec_of(mode="udp", targets=[{"target_type": "peer", "target_id": "p", "port": 53}])
    assert spec.targets[0].protocol == "udp"
    assert spec.targets[0].options.session_idle_timeout == "30s"
    assert spec.listen_port == 0


def test_every_problem_is_reported_at_once() -> None:
    found = problems_of(
        mode="tcp",
        pass_host_header=True,
        rewrite_redirects=True,
        targets=[{"target_type": "peer", "target_id": "p", "protocol": "https"}],
    )
    assert set(found) == {
        ("pass_host_header",),
        ("rewrite_redirects",),
        ("targets", 0, "protocol"),
        ("targets", 0, "port"),
    }


def test_skip_tls_verify_needs_https() -> None:
    found = problems_of(
        targets=[{"target_type": "peer", "target_id": "p", "options": {"skip_tls_verify": True}}]
    )
    assert ("targets", 0, "options", "skip_tls_verify") in found


def test_subnet_targets_need_a_host() -> None:
    assert ("targets", 0, "host") in problems_of(
        targets=[{"target_type": "subnet", "target_id": "r"}]
    )


def test_sso_and_its_alias_are_not_both_allowed() -> None:
    found = problems_of(auth={"sso_auth": {"enabled": True}, "bearer_auth": {"enabled": True}})
    assert ("auth", "bearer_auth") in found


def test_bearer_auth_is_sso() -> None:
    spec = spec_of(auth={"bearer_auth": {"enabled": True, "groups": ["eng"]}})
    assert spec.auth.sso.enabled
    assert spec.auth.sso.groups == ["eng"]


def test_enabled_secret_without_value_keeps_the_stored_hash() -> None:
    stored = StoredAuth(
        password=StoredSecretMethod(enabled=True, hash="$argon2id$x"),
        header_auths=[StoredHeaderAuth(enabled=True, header="X-Key", hash="$argon2id$y")],
    )
    spec = spec_of(
        stored, auth={"password_auth": {"enabled": True}, "header_auths": [{"header": "x-key"}]}
    )
    assert spec.auth.password.enabled
    assert spec.auth.password.new_secret is None
    assert spec.auth.header_auths[0].new_value is None


def test_enabled_secret_without_value_and_nothing_stored_is_refused() -> None:
    found = problems_of(auth={"pin_auth": {"enabled": True}, "header_auths": [{"header": "X-Key"}]})
    assert ("auth", "pin_auth", "pin") in found
    assert ("auth", "header_auths", 0, "value") in found


def test_header_auth_names_are_unique_and_not_reserved() -> None:
    found = problems_of(
        auth={
            "header_auths": [
                {"header": "X-Key", "value": "a"},
                {"header": "x-key", "value": "b"},
                {"header": "Cookie", "value": "c"},
            ]
        }
    )
    assert ("auth", "header_auths", 1, "header") in found
    assert ("auth", "header_auths", 2, "header") in found


def test_disabled_auth_on_l4_is_fine() -> None:
    spec = spec_of(
        mode="tcp",
        auth={"password_auth": {"enabled": False}},
        targets=[{"target_type": "peer", "target_id": "p", "port": 22}],
    )
    assert not spec.auth.password.enabled
