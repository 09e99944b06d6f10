"""Every field of the config messages survives serialization, and the zero values mean what the
.proto says they mean."""

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from heron_proto.heron.v1.proxy_pb2 import (
    CHANGE_TYPE_CREATED,
    CHANGE_TYPE_REMOVED,
    CROWDSEC_MODE_ENFORCE,
    PATH_REWRITE_PRESERVE,
    PATH_REWRITE_UNSPECIFIED,
    SERVICE_MODE_HTTP,
    SERVICE_MODE_UDP,
    SERVICE_MODE_UNSPECIFIED,
    TARGET_PROTOCOL_HTTPS,
    TARGET_PROTOCOL_UDP,
    TARGET_TYPE_PEER,
    TARGET_TYPE_SUBNET,
    AccessRestrictions,
    Ack,
    AuthConfig,
    ConfigBatch,
    EdgeCapabilities,
    EdgeMessage,
    HeaderAuth,
    Hello,
    ManagementMessage,
    ServiceMapping,
    ServiceStatus,
    SsoAuth,
    Target,
    TargetOptions,
)


def full_mapping() -> ServiceMapping:
    """A mapping with every field, at every depth, set to something other than its zero value."""
    return ServiceMapping(
        change_type=CHANGE_TYPE_CREATED,
        id="svc_01",
        account_id="acc_01",
        domain="app.example.com",
        mode=SERVICE_MODE_HTTP,
        listen_port=20001,
        enabled=True,
        pass_host_header=True,
        rewrite_redirects=True,
        targets=[
            Target(
                id="tgt_01",
                target_type=TARGET_TYPE_PEER,
                target_id="peer_01",
                peer_overlay_address="100.64.0.7",
                host="127.0.0.1",
                port=8443,
                protocol=TARGET_PROTOCOL_HTTPS,
                path="/api",
                enabled=True,
                options=TargetOptions(
                    skip_tls_verify=True,
                    request_timeout_ms=30_000,
                    path_rewrite=PATH_REWRITE_PRESERVE,
                    custom_headers={"X-Env": "prod", "X-Team": "ops ü"},
                    proxy_protocol=True,
                    session_idle_timeout_ms=604_800_000,  # the longest duration the model allows
                ),
            ),
            Target(
                id="tgt_02",
                target_type=TARGET_TYPE_SUBNET,
                target_id="res_01",
                peer_overlay_address="100.127.255.254",
                host="10.0.0.9",
                port=53,
                protocol=TARGET_PROTOCOL_UDP,
            ),
        ],
        auth=AuthConfig(
            password_enabled=True,
            pin_enabled=True,
            sso=SsoAuth(enabled=True, groups=["admins", "dev ops"]),
            header_auths=[
                HeaderAuth(
                    header="Authorization",
                    hashed_value="$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
                )
            ],
            session_version="0f1e2d3c4b5a6978",
        ),
        access_restrictions=AccessRestrictions(
            allowed_cidrs=["203.0.113.0/24", "2001:db8::/32"],
            blocked_cidrs=["203.0.113.66/32"],
            allowed_countries=["DE", "FR"],
            blocked_countries=["KP"],
            crowdsec_mode=CROWDSEC_MODE_ENFORCE,
        ),
    )


def unset_fields(message: Message, path: str = "") -> list[str]:
    """The fields of ``message``, recursively, left at their zero value (or empty)."""
    missing = []
    for field in message.DESCRIPTOR.fields:
        name = f"{path}{field.name}"
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if not value:
                missing.append(name)
        elif field.is_repeated:
            if not value:
                missing.append(name)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                missing += unset_fields(value[0], f"{name}[0].")
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if message.HasField(field.name):
                missing += unset_fields(value, f"{name}.")
            else:
                missing.append(name)
        elif value == field.default_value:
            missing.append(name)
    return missing


def test_the_full_mapping_really_sets_every_field() -> None:
    # When a field is added to the .proto, this fails until full_mapping() sets it too.
    assert unset_fields(full_mapping()) == []


def test_service_mapping_round_trip() -> None:
    mapping = full_mapping()

    data = mapping.SerializeToString()
    decoded = ServiceMapping.FromString(data)

    assert decoded == mapping
    assert unset_fields(decoded) == []
    assert decoded.targets[0].options.custom_headers["X-Team"] == "ops ü"
    assert decoded.targets[0].options.session_idle_timeout_ms == 604_800_000
    assert list(decoded.auth.sso.groups) == ["admins", "dev ops"]
    assert decoded.access_restrictions.crowdsec_mode == CROWDSEC_MODE_ENFORCE
    assert decoded.targets[1].protocol == TARGET_PROTOCOL_UDP
    assert decoded.SerializeToString(deterministic=True) == mapping.SerializeToString(
        deterministic=True
    )


def test_config_batch_round_trip() -> None:
    removed = ServiceMapping(
        change_type=CHANGE_TYPE_REMOVED, id="svc_02", account_id="acc_01", domain="old.example.com"
    )
    udp = ServiceMapping(
        change_type=CHANGE_TYPE_CREATED,
        id="svc_03",
        account_id="acc_02",
        domain="dns.example.com",
        mode=SERVICE_MODE_UDP,
        listen_port=20053,
        enabled=True,
    )
    batch = ConfigBatch(
        sequence=2**40 + 1,  # uint64: no 32-bit wrap-around
        snapshot_complete=True,
        mappings=[full_mapping(), removed, udp],
    )

    decoded = ConfigBatch.FromString(batch.SerializeToString())
    as_message = ManagementMessage.FromString(
        ManagementMessage(config_batch=batch).SerializeToString()
    )

    assert decoded == batch
    assert decoded.sequence == 2**40 + 1
    assert decoded.snapshot_complete
    assert [m.id for m in decoded.mappings] == ["svc_01", "svc_02", "svc_03"]
    assert decoded.mappings[1].mode == SERVICE_MODE_UNSPECIFIED
    assert not decoded.mappings[1].HasField("auth")
    assert as_message.WhichOneof("message") == "config_batch"
    assert as_message.config_batch == batch


def test_an_empty_snapshot_is_one_flag() -> None:
    batch = ConfigBatch(sequence=1, snapshot_complete=True)

    decoded = ConfigBatch.FromString(batch.SerializeToString())

    assert decoded.snapshot_complete
    assert list(decoded.mappings) == []


def test_edge_messages_carry_exactly_one_kind() -> None:
    hello = Hello(
        instance_id="edge-7f3c",
        proxy_domain="proxy.example.com",
        version="0.1.0",
        wireguard_public_key="yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=",
        wireguard_endpoint="198.51.100.4:51820",
        capabilities=EdgeCapabilities(
            supports_custom_ports=True, require_subdomain=True, supports_crowdsec=True
        ),
    )
    message = EdgeMessage(hello=hello)
    assert unset_fields(hello) == []
    assert EdgeMessage.FromString(message.SerializeToString()).hello == hello

    message.ack.CopyFrom(Ack(sequence=3))  # setting another member clears the first
    assert message.WhichOneof("message") == "ack"
    assert not message.HasField("hello")

    status = EdgeMessage(
        service_status=ServiceStatus(
            service_id="svc_01",
            tunnel_up=True,
            error_message="port 20001 is in use",
            certificate_available=True,
        )
    )
    decoded = EdgeMessage.FromString(status.SerializeToString())
    assert decoded.WhichOneof("message") == "service_status"
    assert unset_fields(decoded.service_status) == []


def test_zero_values_decode_to_the_documented_defaults() -> None:
    options = TargetOptions.FromString(b"")

    assert options.path_rewrite == PATH_REWRITE_UNSPECIFIED  # read as STRIP by edges
    assert options.request_timeout_ms == 0  # the edge's default
    assert dict(options.custom_headers) == {}
