"""Small pure pieces: token format, permissions, port sharing, clusters."""

import random
from datetime import UTC, datetime

from heron_core.types import Role, ServiceMode
from heron_management.domain.api_tokens import (
    TOKEN_CHARS,
    TOKEN_PREFIX,
    generate_token,
    token_hash,
    token_hint,
)
from heron_management.domain.clusters import Cluster, ClusterEdge, cluster_of, group_clusters
from heron_management.domain.permissions import Action, allows, may_assign
from heron_management.domain.ports import AUTO_PORT_RANGE, may_share_port, pick_free_port


def test_tokens_have_the_documented_shape_and_are_unique() -> None:
    tokens = {generate_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert len(token) == TOKEN_CHARS
        assert token.startswith(TOKEN_PREFIX)
        assert len(token_hash(token)) == 64
        assert token_hint(token).startswith(token[:8])
        assert token[8:] not in token_hint(token)


def test_only_network_admins_and_above_manage_services() -> None:
    managers = {role for role in Role if allows(role, Action.MANAGE_SERVICES)}
    assert managers == {Role.OWNER, Role.ADMIN, Role.NETWORK_ADMIN}
    assert allows(Role.AUDITOR, Action.READ_SERVICES)
    assert not allows(Role.USER, Action.READ_SERVICES)


def test_only_owners_make_owners() -> None:
    assert may_assign(Role.OWNER, Role.OWNER)
    assert not may_assign(Role.ADMIN, Role.OWNER)
    assert may_assign(Role.ADMIN, Role.AUDITOR)
    assert not may_assign(Role.NETWORK_ADMIN, Role.USER)


def test_port_sharing() -> None:
    assert may_share_port(ServiceMode.TLS, ServiceMode.TCP)
    assert may_share_port(ServiceMode.TLS, ServiceMode.TLS)
    assert may_share_port(ServiceMode.UDP, ServiceMode.TCP)
    assert not may_share_port(ServiceMode.TCP, ServiceMode.TCP)
    assert not may_share_port(ServiceMode.UDP, ServiceMode.UDP)


def test_pick_free_port_finds_the_last_free_one() -> None:
    last = AUTO_PORT_RANGE[-1]
    taken = set(AUTO_PORT_RANGE) - {last}
    assert pick_free_port(taken, random.Random(1)) == last
    assert pick_free_port(set(AUTO_PORT_RANGE)) is None


def _edge(
    instance: str, *, connected: bool, custom_ports: bool, address: str = "p.test"
) -> ClusterEdge:
    return ClusterEdge(
        edge_id=f"edg_{instance}", instance_id=instance, address=address, version="1",
        connected=connected, last_seen=datetime(2026, 1, 1, tzinfo=UTC),
        supports_custom_ports=custom_ports,
    )  # fmt: skip


def test_a_domain_belongs_to_the_longest_cluster_address_above_it() -> None:
    addresses = ["example.com", "eu.example.com", "other.net"]
    assert cluster_of("app.eu.example.com", addresses) == "eu.example.com"
    assert cluster_of("app.example.com", addresses) == "example.com"
    assert cluster_of("example.com", addresses) == "example.com"  # the bare cluster domain
    assert cluster_of("notexample.com", addresses) is None  # a label boundary, not a suffix
    assert cluster_of("app.example.org", addresses) is None


def test_a_cluster_supports_custom_ports_when_an_edge_that_counts_reports_it() -> None:
    def supports(*edges: ClusterEdge) -> bool:
        return Cluster("p.test", edges).supports_custom_ports

    assert supports(
        _edge("a", connected=True, custom_ports=True),
        _edge("b", connected=True, custom_ports=False),
    )
    # connected edges decide; a gone edge's report does not count while another is connected
    assert not supports(
        _edge("a", connected=False, custom_ports=True),
        _edge("b", connected=True, custom_ports=False),
    )
    # none connected: the edges seen last decide, so a restart does not flip the answer
    assert supports(_edge("a", connected=False, custom_ports=True))
    assert not supports()  # no edge on record reports anything
    assert not Cluster("p.test").known


def test_edges_group_into_clusters_by_address() -> None:
    clusters = group_clusters(
        [
            _edge("b", connected=True, custom_ports=True, address="q.test"),
            _edge("z", connected=False, custom_ports=False),
            _edge("a", connected=True, custom_ports=False),
        ]
    )
    assert [(c.address, [e.instance_id for e in c.edges]) for c in clusters] == [
        ("p.test", ["a", "z"]), ("q.test", ["b"]),
    ]  # fmt: skip
    assert [c.connected_instances for c in clusters] == [1, 1]
