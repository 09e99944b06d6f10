"""The L7 proxy's pure rules: path matching, Host parsing, header rewriting, redirect rewriting."""

from hypothesis import given
from hypothesis import strategies as st

from heron_core.types import ServiceMode
from heron_edge.connector import StreamTarget
from heron_edge.http.headers import LocationRewrite, request_head, response_head
from heron_edge.http.proxy import _split_host
from heron_edge.routes import Route, RouteTarget, RoutingTable

segments = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=6),
    max_size=4,
)


def as_path(parts: list[str]) -> str:
    return "/" + "/".join(parts)


def table(*prefixes: str) -> RoutingTable:
    targets = tuple(
        RouteTarget(f"t{i}", StreamTarget("100.64.0.2", "", 80), prefix, enabled=True)
        for i, prefix in enumerate(prefixes)
    )
    return RoutingTable.build(1, [Route("s", "a", "app.example.com", ServiceMode.HTTP, 0, targets)])


@given(prefix=segments, path=segments, extra=st.sampled_from(["", "/", "x", "/x"]))
def test_a_prefix_matches_at_segment_boundaries_only(
    prefix: list[str], path: list[str], extra: str
) -> None:
    service = table(as_path(prefix)).http["app.example.com"]
    candidate = as_path(path) + extra
    match = service.match(candidate)
    p = as_path(prefix)
    expected = p in ("/", candidate) or candidate.startswith(p + "/")
    assert (match is not None) == expected


def test_the_longest_prefix_wins_and_disabled_targets_are_skipped() -> None:
    service = table("/", "/api", "/api/v2").http["app.example.com"]
    assert [service.match(p).target.id for p in ("/apis", "/api/x", "/api/v2/y")] == [  # type: ignore[union-attr]
        "t0",
        "t1",
        "t2",
    ]


@given(
    host=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{2,5}){1,2}", fullmatch=True),
    port=st.one_of(st.none(), st.integers(1, 65535)),
)
def test_host_headers_split_into_name_and_port(host: str, port: int | None) -> None:
    value = host if port is None else f"{host}:{port}"
    assert _split_host(value.upper().encode()) == (host, port)


def test_malformed_hosts_are_refused() -> None:
    for bad in (b"a:b", b"a:99999999", b"[::1", b"\xff.example.com", b"a:"):
        assert _split_host(bad)[0] == "" or _split_host(bad)[1] is None
    assert _split_host(b"[::1]:8443") == ("::1", 8443)


@given(
    spoofed=st.lists(
        st.sampled_from(
            [b"x-forwarded-for", b"x-real-ip", b"forwarded", b"x-forwarded-proto", b"keep-alive"]
        ),
        max_size=5,
    )
)
def test_client_forwarding_and_hop_by_hop_headers_never_reach_the_target(
    spoofed: list[bytes],
) -> None:
    headers = [(name, b"6.6.6.6") for name in spoofed]
    headers += [(b"connection", b"x-secret"), (b"x-secret", b"1"), (b"accept", b"*/*")]
    head = request_head(
        b"GET",
        b"/",
        headers,
        host=b"127.0.0.1:8080",
        client_ip="203.0.113.9",
        public_host=b"app.example.com",
        public_port=443,
        chunked=False,
        upgrade=None,
        custom_headers=(),
    )
    assert b"6.6.6.6" not in head
    assert b"x-secret" not in head
    assert b"x-forwarded-for: 203.0.113.9\r\n" in head
    assert b"accept: */*\r\n" in head
    assert head.count(b"\r\nhost: ") == 1


def test_ipv6_clients_are_quoted_in_forwarded() -> None:
    head = request_head(
        b"GET", b"/", [], host=b"h", client_ip="2001:db8::1", public_host=b"app:8443",
        public_port=8443, chunked=False, upgrade=None, custom_headers=(),
    )  # fmt: skip
    assert b'forwarded: for="[2001:db8::1]";host="app:8443";proto=https\r\n' in head


def test_locations_pointing_at_the_target_are_rewritten() -> None:
    rewrite = LocationRewrite(["127.0.0.1:8080"], b"app.example.com", b"/api")
    assert (
        rewrite.apply(b"http://127.0.0.1:8080/login?x=1")
        == b"https://app.example.com/api/login?x=1"
    )
    assert rewrite.apply(b"http://127.0.0.1:8080") == b"https://app.example.com/api/"
    assert rewrite.apply(b"https://elsewhere.example/x") == b"https://elsewhere.example/x"
    assert rewrite.apply(b"/relative") == b"/relative"
    default_port = LocationRewrite(["backend"], b"app.example.com", b"")
    assert default_port.apply(b"http://BACKEND:80/x") == b"https://app.example.com/x"


def test_responses_lose_hop_by_hop_headers_and_gain_the_edges_framing() -> None:
    head = response_head(
        200,
        b"OK",
        [
            (b"connection", b"keep-alive, x-drop"),
            (b"x-drop", b"1"),
            (b"transfer-encoding", b"chunked"),
            (b"x-keep", b"2"),
        ],
        framing=b"chunked",
        connection=None,
        location_rewrite=None,
    )
    assert head == b"HTTP/1.1 200 OK\r\nx-keep: 2\r\ntransfer-encoding: chunked\r\n\r\n"
