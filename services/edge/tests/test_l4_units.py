"""The L4 pieces that need no socket: the balancer's order and ejections, the port table."""

import itertools

from heron_core.types import ServiceMode
from heron_edge.connector import StreamTarget
from heron_edge.l4.balancer import Balancer
from heron_edge.l4.udp import TokenBucket
from heron_edge.routes import MAIN_PORT_KEY, Route, RouteTarget, RoutingTable


def _target(target_id: str, *, enabled: bool = True) -> RouteTarget:
    return RouteTarget(target_id, StreamTarget("100.64.0.2", "", 5432), "", enabled)


def _route(route_id: str, mode: ServiceMode, port: int, *targets: RouteTarget) -> Route:
    domain = f"{route_id}.example.test"
    return Route(route_id, "acc_1", domain, mode, port, targets or (_target("t1"),))


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_targets_take_turns_and_disabled_ones_are_skipped() -> None:
    route = _route("svc", ServiceMode.TCP, 2000, _target("a"), _target("off", enabled=False),
                   _target("b"), _target("c"))  # fmt: skip
    balancer = Balancer()
    firsts = [balancer.order(route)[0].id for _ in range(6)]
    assert firsts == ["a", "b", "c", "a", "b", "c"]
    assert all("off" not in [t.id for t in balancer.order(route)] for _ in range(3))


def test_an_ejected_target_goes_last_until_its_time_is_up_or_it_answers() -> None:
    clock = _Clock()
    a, b = _target("a"), _target("b")
    route = _route("svc", ServiceMode.TCP, 2000, a, b)
    balancer = Balancer(base_s=5, max_s=60, clock=clock)
    assert balancer.failed(route, a) == 5
    assert all(balancer.order(route)[-1].id == "a" for _ in range(4))
    clock.now += 5.1
    assert {balancer.order(route)[0].id for _ in range(2)} == {"a", "b"}
    # failing again doubles the time out, up to the bound
    assert [balancer.failed(route, a) for _ in range(5)] == [10, 20, 40, 60, 60]
    balancer.succeeded(route, a)
    assert not balancer.is_ejected(route, a)
    assert balancer.failed(route, a) == 5  # a success resets the doubling


def test_when_every_target_is_ejected_they_are_still_tried() -> None:
    a, b = _target("a"), _target("b")
    route = _route("svc", ServiceMode.TCP, 2000, a, b)
    balancer = Balancer()
    balancer.failed(route, a)
    balancer.failed(route, b)
    assert [t.id for t in balancer.order(route)] == ["a", "b"]  # soonest back first


def test_retain_forgets_services_that_are_gone() -> None:
    route = _route("svc", ServiceMode.TCP, 2000, _target("a"), _target("b"))
    balancer = Balancer()
    balancer.order(route)
    balancer.failed(route, route.targets[0])
    balancer.retain({"other"})
    assert not balancer.is_ejected(route, route.targets[0])


def test_the_table_groups_l4_services_by_port() -> None:
    table = RoutingTable.build(
        1,
        [
            _route("tls_main", ServiceMode.TLS, 0),
            _route("tls_custom", ServiceMode.TLS, 7000),
            _route("tcp_custom", ServiceMode.TCP, 7000),
            _route("tcp_alone", ServiceMode.TCP, 7001),
            _route("udp", ServiceMode.UDP, 7000),
            _route("http", ServiceMode.HTTP, 0),
        ],
    )
    assert set(table.tls) == {"tls_main.example.test"}
    assert set(table.tcp_ports) == {MAIN_PORT_KEY, 7000, 7001}
    shared = table.tcp_ports[7000]
    assert set(shared.sni) == {"tls_custom.example.test"}
    assert shared.fallback is not None and shared.fallback.id == "tcp_custom"
    assert not table.tcp_ports[7001].sni
    assert table.udp_ports[7000].id == "udp"
    assert set(table.http) == {"http.example.test"}


def test_two_tcp_services_on_one_port_resolve_the_same_way_every_time() -> None:
    routes = [_route("svc_b", ServiceMode.TCP, 7000), _route("svc_a", ServiceMode.TCP, 7000)]
    for order in itertools.permutations(routes):
        fallback = RoutingTable.build(1, order).tcp_ports[7000].fallback
        assert fallback is not None and fallback.id == "svc_a"


def test_the_token_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=1e-9, burst=3)  # no refill within the test
    assert [bucket.take() for _ in range(5)] == [True, True, True, False, False]
