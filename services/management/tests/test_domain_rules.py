"""Small pure pieces: token format, permissions, port sharing, clusters, custom domains,
certificate failures, addresses."""

import random
from datetime import UTC, datetime, timedelta

import pytest

from heron_core.types import Role, ServiceMode
from heron_management.domain.addresses import split_host_port
from heron_management.domain.api_tokens import (
    TOKEN_CHARS,
    TOKEN_PREFIX,
    generate_token,
    token_hash,
    token_hint,
)
from heron_management.domain.certificates import CertificateFailure, CertificateRecord
from heron_management.domain.clusters import Cluster, ClusterEdge, cluster_of, group_clusters
from heron_management.domain.custom_domains import (
    CnameChain,
    CustomDomain,
    Placement,
    place,
    verdict,
)
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


def test_a_domain_is_placed_by_cluster_then_verified_custom_domain() -> None:
    clusters = ["edges.example.com"]
    customs = [
        CustomDomain("shop.test", "edges.example.com", validated=True),
        CustomDomain("eu.shop.test", "eu-edges.example.com", validated=True),
        CustomDomain("blog.test", "edges.example.com", validated=False),
    ]
    assert place("app.edges.example.com", clusters, customs) == Placement("edges.example.com")
    assert place("shop.test", clusters, customs) == Placement("edges.example.com")
    assert place("www.eu.shop.test", clusters, customs) == Placement("eu-edges.example.com")
    unverified = place("www.blog.test", clusters, customs)
    assert unverified.cluster is None
    assert unverified.problem == (
        "custom domain 'blog.test' is not verified yet: create the DNS record "
        "validation.blog.test CNAME edges.example.com, then validate it "
        "(POST /api/domains/{id}/validate)"
    )
    stranger = place("app.other.test", clusters, customs)
    assert stranger.problem == (
        "'app.other.test' is under none of this account's cluster domains "
        "('edges.example.com') and under no verified custom domain: use a name under a cluster "
        "domain, or add 'other.test' as a custom domain (POST /api/domains) and create the DNS "
        "record validation.other.test CNAME edges.example.com"
    )
    assert "add 'other.test' as a custom domain" in (
        place("other.test", clusters, []).problem or ""
    )
    # no cluster yet: anything goes (the service waits), but not under an unverified custom domain
    assert place("app.other.test", [], customs) == Placement(None)
    assert place("www.blog.test", [], customs).problem is not None


def test_a_cname_chain_verifies_when_it_reaches_the_cluster() -> None:
    name, cluster = "validation.shop.test", "edges.example.com"
    assert verdict(CnameChain(name, (cluster,)), cluster) is None
    assert verdict(CnameChain(name, ("alias.shop.test", cluster)), cluster) is None
    assert verdict(CnameChain(name), cluster) == (
        "validation.shop.test has no CNAME record: create one pointing at edges.example.com"
    )
    assert verdict(CnameChain(name, exists=False), cluster) == (
        "validation.shop.test does not exist in DNS: create the record "
        "validation.shop.test CNAME edges.example.com"
    )
    assert verdict(CnameChain(name, ("other.example.com",)), cluster) == (
        "validation.shop.test points at other.example.com, not edges.example.com"
    )
    assert verdict(CnameChain(name, ("a.test", "b.test")), cluster) == (
        "validation.shop.test points at a.test, not edges.example.com (the chain "
        "validation.shop.test → a.test → b.test never reaches edges.example.com)"
    )


def test_a_failure_shows_until_a_newer_issue_or_retry() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    later = t0 + timedelta(minutes=1)
    failed = CertificateRecord(failed_at=t0, failure_reason="refused", retry_at=later)
    assert failed.failure() == CertificateFailure("refused", later)
    assert CertificateRecord(failed_at=later, failure_reason="x", issued_at=t0).failure()
    assert CertificateRecord(failed_at=t0, failure_reason="x", issued_at=later).failure() is None
    assert CertificateRecord(failed_at=t0, failure_reason="x", requested_at=later).failure() is None
    assert CertificateRecord(issued_at=t0).failure() is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("10.0.0.2", ("10.0.0.2", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]", ("::1", 53)),
        ("dns.internal:53", ("dns.internal", 53)),
        ("dns.internal", ("dns.internal", 53)),
    ],
)
def test_resolver_addresses(value: str, expected: tuple[str, int]) -> None:
    assert split_host_port(value) == expected


@pytest.mark.parametrize("value", [":53", "host:0", "host:99999", "host:x", ""])
def test_bad_resolver_addresses_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="is not host:port"):
        split_host_port(value)
