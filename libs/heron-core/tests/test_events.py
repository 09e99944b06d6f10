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
