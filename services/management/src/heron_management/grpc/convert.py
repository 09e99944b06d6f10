"""Protobuf in and out: every message the gRPC side reads or writes is made or read here."""

from collections.abc import Sequence

from heron_core.duration import parse_duration_ms
from heron_core.service import AccessRestrictions, Target
from heron_core.types import CrowdSecMode, PathRewrite, ServiceMode, TargetProtocol, TargetType
from heron_management.agents import AgentHello, LoginRequest, LoginResult
from heron_management.domain.overlay import OVERLAY_NETWORK
from heron_management.domain.stored_auth import StoredAuth
from heron_management.edges import EdgeHello
from heron_management.service_status import ServiceReport
from heron_management.tunnel_views import (
    EdgeService,
    ForwardProtocol,
    PeerConfig,
    RoutedTarget,
    TunnelPeer,
)
from heron_proto.heron.v1 import agent_pb2, proxy_pb2

OVERLAY = str(OVERLAY_NETWORK)

_FORWARD = {
    ForwardProtocol.TCP: agent_pb2.FORWARD_PROTOCOL_TCP,
    ForwardProtocol.UDP: agent_pb2.FORWARD_PROTOCOL_UDP,
}
_MODES = {
    ServiceMode.HTTP: proxy_pb2.SERVICE_MODE_HTTP,
    ServiceMode.TCP: proxy_pb2.SERVICE_MODE_TCP,
    ServiceMode.UDP: proxy_pb2.SERVICE_MODE_UDP,
    ServiceMode.TLS: proxy_pb2.SERVICE_MODE_TLS,
}
_TARGET_TYPES = {
    TargetType.PEER: proxy_pb2.TARGET_TYPE_PEER,
    TargetType.HOST: proxy_pb2.TARGET_TYPE_HOST,
    TargetType.DOMAIN: proxy_pb2.TARGET_TYPE_DOMAIN,
    TargetType.SUBNET: proxy_pb2.TARGET_TYPE_SUBNET,
}
_PROTOCOLS = {
    TargetProtocol.HTTP: proxy_pb2.TARGET_PROTOCOL_HTTP,
    TargetProtocol.HTTPS: proxy_pb2.TARGET_PROTOCOL_HTTPS,
    TargetProtocol.TCP: proxy_pb2.TARGET_PROTOCOL_TCP,
    TargetProtocol.UDP: proxy_pb2.TARGET_PROTOCOL_UDP,
}
_REWRITES = {
    PathRewrite.STRIP: proxy_pb2.PATH_REWRITE_STRIP,
    PathRewrite.PRESERVE: proxy_pb2.PATH_REWRITE_PRESERVE,
}
_CROWDSEC = {
    CrowdSecMode.OFF: proxy_pb2.CROWDSEC_MODE_OFF,
    CrowdSecMode.ENFORCE: proxy_pb2.CROWDSEC_MODE_ENFORCE,
    CrowdSecMode.OBSERVE: proxy_pb2.CROWDSEC_MODE_OBSERVE,
}

# agents


def login_request(message: agent_pb2.LoginRequest, peer_token: str | None) -> LoginRequest:
    return LoginRequest(
        wireguard_public_key=message.wireguard_public_key.strip(),
        hostname=message.hostname.strip(),
        version=message.version.strip(),
        setup_key=message.setup_key.strip(),
        peer_token=peer_token,
    )


def login_response(result: LoginResult) -> agent_pb2.LoginResponse:
    return agent_pb2.LoginResponse(
        peer_id=result.peer_id,
        overlay_address=result.overlay_address,
        overlay_network=OVERLAY,
        peer_token=result.peer_token,
    )


def agent_message_kind(message: agent_pb2.AgentMessage) -> str | None:
    return message.WhichOneof("message")


def agent_hello(message: agent_pb2.AgentMessage) -> AgentHello:
    hello = message.hello
    port = hello.forwarder_port if hello.forwarder_port <= 65535 else 0
    return AgentHello(version=hello.version, forwarder_port=port)


def edge_handshake_ages(message: agent_pb2.AgentMessage) -> dict[str, int]:
    """An ``AgentStatus``: seconds since the last handshake per edge key (-1: none yet)."""
    return {e.wireguard_public_key: e.handshake_age_s for e in message.status.edges}


def peer_config(view: PeerConfig, *, sequence: int, snapshot: bool) -> agent_pb2.PeerConfig:
    return agent_pb2.PeerConfig(
        sequence=sequence,
        snapshot=snapshot,
        edges=[
            agent_pb2.EdgePeer(
                wireguard_public_key=e.wireguard_public_key,
                endpoint=e.endpoint,
                overlay_address=e.overlay_address,
            )
            for e in view.edges
        ],
        allowed_targets=[
            agent_pb2.AllowedTarget(host=t.host, port=t.port, protocol=_FORWARD[t.protocol])
            for t in view.allowed_targets
        ],
    )


# edges


def edge_message_kind(message: proxy_pb2.EdgeMessage) -> str | None:
    return message.WhichOneof("message")


def edge_hello(message: proxy_pb2.EdgeMessage) -> EdgeHello:
    hello = message.hello
    capabilities = hello.capabilities
    return EdgeHello(
        instance_id=hello.instance_id.strip(),
        proxy_domain=hello.proxy_domain.strip(),
        version=hello.version.strip(),
        wireguard_public_key=hello.wireguard_public_key.strip(),
        wireguard_endpoint=hello.wireguard_endpoint.strip(),
        capabilities={
            "supports_custom_ports": capabilities.supports_custom_ports,
            "require_subdomain": capabilities.require_subdomain,
            "supports_crowdsec": capabilities.supports_crowdsec,
        },
    )


def edge_setup(overlay_address: str) -> proxy_pb2.ManagementMessage:
    setup = proxy_pb2.EdgeSetup(overlay_address=overlay_address, overlay_network=OVERLAY)
    return proxy_pb2.ManagementMessage(edge_setup=setup)


def tunnel_peers(peers: Sequence[TunnelPeer]) -> proxy_pb2.ManagementMessage:
    message = proxy_pb2.TunnelPeers(
        peers=[
            proxy_pb2.TunnelPeer(
                peer_id=p.peer_id,
                wireguard_public_key=p.wireguard_public_key,
                overlay_address=p.overlay_address,
                forwarder_port=p.forwarder_port,
            )
            for p in peers
        ]
    )
    return proxy_pb2.ManagementMessage(tunnel_peers=message)


def config_batch(
    sequence: int, mappings: Sequence[proxy_pb2.ServiceMapping], *, snapshot_complete: bool
) -> proxy_pb2.ManagementMessage:
    batch = proxy_pb2.ConfigBatch(
        sequence=sequence, snapshot_complete=snapshot_complete, mappings=mappings
    )
    return proxy_pb2.ManagementMessage(config_batch=batch)


def ack_sequence(message: proxy_pb2.EdgeMessage) -> int:
    return message.ack.sequence


def service_report(message: proxy_pb2.EdgeMessage) -> ServiceReport:
    status = message.service_status
    return ServiceReport(
        service_id=status.service_id.strip(),
        tunnel_up=status.tunnel_up,
        certificate_available=status.certificate_available,
        error_message=status.error_message.strip(),
    )


def mapping_content(view: EdgeService) -> bytes:
    """The mapping without its change type, serialised deterministically, to compare."""
    return service_mapping(view).SerializeToString(deterministic=True)


def service_mapping(
    view: EdgeService, change: proxy_pb2.ChangeType.ValueType = proxy_pb2.CHANGE_TYPE_UNSPECIFIED
) -> proxy_pb2.ServiceMapping:
    service = view.service
    http = service.mode is ServiceMode.HTTP
    return proxy_pb2.ServiceMapping(
        change_type=change,
        id=service.id,
        account_id=view.account_id,
        domain=service.domain,
        mode=_MODES[service.mode],
        listen_port=0 if http else service.listen_port or 0,
        enabled=service.enabled,
        pass_host_header=service.pass_host_header,
        rewrite_redirects=service.rewrite_redirects,
        targets=[_target(routed, http=http) for routed in view.targets],
        auth=_auth(view.auth, view.session_version) if http else None,
        access_restrictions=_restrictions(service.access_restrictions),
    )


def removed_mapping(service_id: str, account_id: str, domain: str) -> proxy_pb2.ServiceMapping:
    return proxy_pb2.ServiceMapping(
        change_type=proxy_pb2.CHANGE_TYPE_REMOVED,
        id=service_id,
        account_id=account_id,
        domain=domain,
    )


def with_change(
    mapping: proxy_pb2.ServiceMapping, change: proxy_pb2.ChangeType.ValueType
) -> proxy_pb2.ServiceMapping:
    copy = proxy_pb2.ServiceMapping()
    copy.CopyFrom(mapping)
    copy.change_type = change
    return copy


CREATED = proxy_pb2.CHANGE_TYPE_CREATED
MODIFIED = proxy_pb2.CHANGE_TYPE_MODIFIED


def _target(routed: RoutedTarget, *, http: bool) -> proxy_pb2.Target:
    target: Target = routed.target
    options = target.options
    return proxy_pb2.Target(
        id=target.id,
        target_type=_TARGET_TYPES[target.target_type],
        target_id=target.target_id,
        peer_overlay_address=routed.peer_overlay_address,
        host=routed.host,
        port=target.port,
        protocol=_PROTOCOLS[target.protocol],
        path=(target.path or "/") if http else "",
        enabled=target.enabled,
        options=proxy_pb2.TargetOptions(
            skip_tls_verify=options.skip_tls_verify,
            request_timeout_ms=_ms(options.request_timeout),
            path_rewrite=_REWRITES[options.path_rewrite],
            custom_headers=options.custom_headers,
            proxy_protocol=options.proxy_protocol,
            session_idle_timeout_ms=_ms(options.session_idle_timeout),
        ),
    )


def _ms(duration: str | None) -> int:
    return parse_duration_ms(duration) if duration else 0


def _auth(auth: StoredAuth, version: str) -> proxy_pb2.AuthConfig:
    return proxy_pb2.AuthConfig(
        password_enabled=auth.password.enabled and auth.password.hash is not None,
        pin_enabled=auth.pin.enabled and auth.pin.hash is not None,
        sso=proxy_pb2.SsoAuth(enabled=auth.sso.enabled, groups=auth.sso.groups),
        header_auths=[
            proxy_pb2.HeaderAuth(header=h.header, hashed_value=h.hash)
            for h in auth.header_auths
            if h.enabled
        ],
        session_version=version,
    )


def _restrictions(restrictions: AccessRestrictions) -> proxy_pb2.AccessRestrictions:
    return proxy_pb2.AccessRestrictions(
        allowed_cidrs=restrictions.allowed_cidrs,
        blocked_cidrs=restrictions.blocked_cidrs,
        allowed_countries=restrictions.allowed_countries,
        blocked_countries=restrictions.blocked_countries,
        crowdsec_mode=_CROWDSEC[restrictions.crowdsec_mode],
    )
