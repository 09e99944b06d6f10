from datetime import UTC, datetime

import pytest

from heron_core.certificates import (
    ChallengeAnswer,
    ChallengeType,
    StoredCertificate,
    http01_key,
    tlsalpn01_key,
)
from heron_core.events import ServiceChanged
from heron_core.types import AccountId, ChangeKind, ServiceId, ServiceMode


def test_service_changed_round_trips_through_json_with_its_version() -> None:
    event = ServiceChanged(
        account_id=AccountId("acc_1"), service_id=ServiceId("svc_1"), change=ChangeKind.CREATED,
        domain="app.example.com", mode=ServiceMode.HTTP, enabled=True,
    )  # fmt: skip
    parsed = ServiceChanged.model_validate_json(event.model_dump_json())
    assert parsed == event
    assert parsed.schema_version == 1
    assert parsed.event_id.startswith("evt_")


def test_newer_fields_from_a_newer_writer_are_ignored() -> None:
    raw = (
        '{"schema_version": 1, "account_id": "a", "service_id": "s", "change": "deleted",'
        ' "domain": "d.example.com", "mode": "tcp", "enabled": false, "added_later": 1}'
    )
    assert ServiceChanged.model_validate_json(raw).change is ChangeKind.DELETED


def test_tunnel_events_round_trip() -> None:
    from heron_core.events import EdgeChanged, NetworkChanged, PeerChanged, ProxyTokenRevoked
    from heron_core.types import EdgeId, NetworkId, PeerId, ProxyTokenId

    account = AccountId("acc_1")
    events = [
        PeerChanged(account_id=account, peer_id=PeerId("peer_1"), change=ChangeKind.CREATED),
        NetworkChanged(
            account_id=account, network_id=NetworkId("net_1"), change=ChangeKind.UPDATED
        ),
        EdgeChanged(
            account_id=account,
            edge_id=EdgeId("edg_1"),
            instance_id="edge-1",
            proxy_domain="proxy.example.com",
            change=ChangeKind.UPDATED,
            connected=True,
        ),
        ProxyTokenRevoked(account_id=account, proxy_token_id=ProxyTokenId("ptk_1")),
    ]
    for event in events:
        assert type(event).model_validate_json(event.model_dump_json()) == event
    assert [(type(e).noun, type(e).verb) for e in events] == [
        ("peer", "changed"), ("network", "changed"), ("edge", "changed"), ("proxy_token", "revoked"),
    ]  # fmt: skip


def test_kv_values_refuse_a_newer_schema_and_round_trip() -> None:
    now = datetime.now(UTC)
    stored = StoredCertificate(
        domain="app.example.com", chain_pem="chain", key_pem="key", not_before=now,
        not_after=now, issued_at=now, issuer="Pebble",
    )  # fmt: skip
    assert StoredCertificate.decode(stored.encode()) == stored
    newer = stored.model_copy(update={"schema_version": 2}).encode()
    with pytest.raises(ValueError, match="newer"):
        StoredCertificate.decode(newer)
    answer = ChallengeAnswer(
        type=ChallengeType.HTTP_01, domain="app.example.com", token="t0k-en_", key_authorization="x"
    )
    assert ChallengeAnswer.decode(answer.encode()) == answer
    assert http01_key("t0k-en_") == "http-01.t0k-en_"
    assert tlsalpn01_key("App.Example.com.") == "tls-alpn-01.app.example.com"
