"""The L7 proxy end to end on 127.0.0.1: client → edge (TLS) → agent forwarder → real backend.

What a user of the service sees and what the backend sees: forwarding headers, Host, path
routing and rewriting, redirects, bodies both ways, keep-alive, pipelining, WebSockets, the
edge's own error pages and timeouts, and the RFC 9112 answers to ambiguous framing.
"""

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import uvloop
import websockets
from edge_harness import (
    DOMAIN,
    Pki,
    RawClient,
    http_route,
    running_edge,
    running_forwarder,
    target,
)

from heron_agent.forwarder import Forwarder
from heron_core.types import PathRewrite
from heron_edge.dataplane import DataPlane
from heron_edge.http.proxy import HttpLimits
from heron_edge.routes import RoutingTable


@pytest_asyncio.fixture
async def forwarder(backend: int) -> AsyncIterator[Forwarder]:
    async with running_forwarder(backend) as fwd:
        yield fwd


@pytest_asyncio.fixture
async def edge(pki: Pki, forwarder: Forwarder, backend: int) -> AsyncIterator[DataPlane]:
    routes = [
        http_route(
            [
                target(forwarder, backend),
                target(forwarder, backend, target_id="tgt_api", path="/api"),
                target(
                    forwarder,
                    backend,
                    target_id="tgt_keep",
                    path="/keep",
                    path_rewrite=PathRewrite.PRESERVE,
                    custom_headers=(("X-Team", "blue"),),
                ),
                target(forwarder, backend, target_id="tgt_off", path="/off", enabled=False),
            ],
            rewrite_redirects=True,
        ),
        http_route(
            [target(forwarder, backend)],
            domain="other.example.test",
            route_id="svc_2",
            pass_host_header=True,
        ),
    ]
    async with running_edge(pki, routes) as plane:
        yield plane


def request(path: str, host: str = DOMAIN, extra: str = "", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def echo(body: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(body)
    return parsed


def headers_of(seen: dict[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in seen["headers"]:
        found.setdefault(name, []).append(value)
    return found


async def test_the_backend_sees_the_edge_forwarding_headers_not_the_clients(
    edge: DataPlane, pki: Pki, backend: int
) -> None:
    client = await RawClient.open(edge, pki)
    spoofed = "X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n"
    client.send(request("/hello?x=1", extra=spoofed))
    response = await client.response()
    assert response.status == 200
    seen = echo(response.body)
    headers = headers_of(seen)
    assert seen["raw_path"] == "/hello" and seen["query"] == "x=1"
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-real-ip"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["https"]
    assert headers["x-forwarded-host"] == [DOMAIN]
    assert headers["forwarded"] == [f"for=127.0.0.1;host={DOMAIN};proto=https"]
    assert headers["host"] == [f"127.0.0.1:{backend}"]  # the target's own, by default
    await client.close()


async def test_pass_host_header_hands_the_public_host_on(edge: DataPlane, pki: Pki) -> None:
    client = await RawClient.open(edge, pki, "other.example.test")
    client.send(request("/", host="other.example.test"))
    seen = echo((await client.response()).body)
    assert headers_of(seen)["host"] == ["other.example.test"]
    await client.close()


@pytest.mark.parametrize(
    ("path", "backend_path"),
    [
        ("/api", "/"),
        ("/api/users", "/users"),
        ("/apis", "/apis"),  # not under /api: the "/" target, unchanged
        ("/keep/x", "/keep/x"),  # preserve
        ("/off/x", "/off/x"),  # a disabled target is skipped: "/" takes it
    ],
)
async def test_path_prefixes_route_at_segment_boundaries(
    edge: DataPlane, pki: Pki, path: str, backend_path: str
) -> None:
    client = await RawClient.open(edge, pki)
    client.send(request(path))
    seen = echo((await client.response()).body)
    assert seen["raw_path"] == backend_path
    await client.close()


async def test_custom_headers_override_the_clients(edge: DataPlane, pki: Pki) -> None:
    client = await RawClient.open(edge, pki)
    client.send(request("/keep/", extra="X-Team: red\r\n"))
    assert headers_of(echo((await client.response()).body))["x-team"] == ["blue"]
    await client.close()


async def test_redirects_to_the_target_point_at_the_public_domain(
    edge: DataPlane, pki: Pki
) -> None:
    client = await RawClient.open(edge, pki)
    client.send(request("/redirect"))
    response = await client.response()
    assert response.status == 302
    assert response.header("location") == f"https://{DOMAIN}/landing"
    assert response.header("content-location") == f"https://{DOMAIN}/landing"
    client.send(request("/api/redirect"))  # the stripped prefix is put back
    assert (await client.response()).header("location") == f"https://{DOMAIN}/api/landing"
    await client.close()


async def test_bodies_stream_both_ways(edge: DataPlane, pki: Pki) -> None:
    client = await RawClient.open(edge, pki)
    body = bytes(range(256)) * 4096  # 1 MiB
    client.send(request("/upload", method="POST", extra=f"Content-Length: {len(body)}\r\n") + body)
    seen = echo((await client.response()).body)
    assert seen["body_length"] == len(body)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (b"abc", b"x" * 70000))
    client.send(
        request("/upload", method="POST", extra="Transfer-Encoding: chunked\r\n")
        + chunked
        + b"0\r\n\r\n"
    )
    assert echo((await client.response()).body)["body_length"] == 70003
    client.send(request("/stream?chunks=50&size=1000"))
    streamed = await client.response()
    assert streamed.header("transfer-encoding") == "chunked"
    assert len(streamed.body) == 50_000
    await client.close()


async def test_keep_alive_reuses_one_upstream_connection(edge: DataPlane, pki: Pki) -> None:
    client = await RawClient.open(edge, pki)
    for _ in range(5):
        client.send(request("/"))
        assert (await client.response()).status == 200
    pools = list(edge.ctx.pools.values())
    assert [pool.open_connections for pool in pools] == [1]
    await client.close()


async def test_pipelined_requests_are_answered_in_order(edge: DataPlane, pki: Pki) -> None:
    client = await RawClient.open(edge, pki)
    client.send(request("/one") + request("/api/two") + request("/three"))
    responses = await client.responses(3)
    assert [echo(r.body)["raw_path"] for r in responses] == ["/one", "/two", "/three"]
    await client.close()


async def test_head_requests_get_headers_only(edge: DataPlane, pki: Pki) -> None:
    client = await RawClient.open(edge, pki)
    client.send(request("/", method="HEAD") + request("/after"))
    # the response parser needs to know a HEAD answer has no body: read the raw bytes
    data = b""
    async with asyncio.timeout(10):
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"}"):
            data += await client.reader.read(65536)
    _, _, rest = data.partition(b"\r\n\r\n")
    assert rest.startswith(b"HTTP/1.1 200"), "the HEAD answer carried a body"
    assert b"/after" in rest
    await client.close()


@pytest.mark.parametrize(
    "raw",
    [
        # Transfer-Encoding with Content-Length: the classic smuggling setup
        b"POST / HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        # two different lengths
        b"POST / HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        # obs-fold
        b"GET / HTTP/1.1\r\nHost: app.example.test\r\nX-Folded: a\r\n b\r\n\r\n",
        # a transfer coding that is not chunked last
        b"POST / HTTP/1.1\r\nHost: app.example.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        # bare LF
        b"GET / HTTP/1.1\nHost: app.example.test\n\n",
        # no Host in HTTP/1.1
        b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
        # two Hosts
        b"GET / HTTP/1.1\r\nHost: app.example.test\r\nHost: other.example.test\r\n\r\n",
        # whitespace between a field name and the colon
        b"GET / HTTP/1.1\r\nHost : app.example.test\r\n\r\n",
    ],
)
async def test_ambiguous_requests_get_a_400_and_the_connection_closes(
    edge: DataPlane, pki: Pki, raw: bytes
) -> None:
    client = await RawClient.open(edge, pki)
    client.send(raw + request("/smuggled"))
    response = await client.response()
    assert response.status == 400
    assert await client.closed()  # and "/smuggled" was never answered
    await client.close()


async def test_oversized_headers_get_a_431(edge: DataPlane, pki: Pki) -> None:
    client = await RawClient.open(edge, pki)
    client.send(request("/", extra=f"X-Big: {'a' * 70000}\r\n"))
    assert (await client.response()).status == 431
    await client.close()
    client = await RawClient.open(edge, pki)
    many = "".join(f"X-H{i}: v\r\n" for i in range(120))
    client.send(request("/", extra=many))
    assert (await client.response()).status == 431
    await client.close()


async def test_a_host_that_does_not_match_the_sni_is_misdirected(edge: DataPlane, pki: Pki) -> None:
    client = await RawClient.open(edge, pki)
    client.send(request("/", host="other.example.test"))
    response = await client.response()
    assert response.status == 421
    assert b"other.example.test" in response.body
    await client.close()


async def test_an_unknown_name_gets_a_404_page(edge: DataPlane, pki: Pki) -> None:
    client = await RawClient.open(edge, pki, "nothing.example.test", verify=False)
    client.send(request("/", host="nothing.example.test"))
    response = await client.response()
    assert response.status == 404
    assert b"nothing.example.test" in response.body
    assert response.header("content-type") == "text/html; charset=utf-8"
    no_sni = await RawClient.open(edge, pki, None)
    no_sni.send(request("/", host=DOMAIN))
    assert (await no_sni.response()).status == 421
    await client.close()
    await no_sni.close()


async def test_plain_http_on_the_tls_port_is_told_to_use_https(edge: DataPlane) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.main_port)
    writer.write(request("/"))
    data = await asyncio.wait_for(reader.read(), 10)
    assert data.startswith(b"HTTP/1.1 400")
    assert b"https://" in data
    writer.close()
    await writer.wait_closed()


async def test_port_80_redirects_to_https(edge: DataPlane) -> None:
    assert edge.http_port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.http_port)
    writer.write(request("/path?q=1"))
    data = await asyncio.wait_for(reader.read(), 10)
    assert data.startswith(b"HTTP/1.1 308")
    assert f"location: https://{DOMAIN}:{edge.main_port}/path?q=1\r\n".encode() in data
    writer.close()
    await writer.wait_closed()


async def test_websocket_upgrades_are_relayed(edge: DataPlane, pki: Pki) -> None:
    async with websockets.connect(
        f"wss://{DOMAIN}:{edge.main_port}/ws",
        host="127.0.0.1",
        port=edge.main_port,
        ssl=pki.client_context(),
        open_timeout=10,
    ) as ws:
        await ws.send("hi")
        assert await asyncio.wait_for(ws.recv(), 10) == "echo: hi"
        await ws.send(b"\x00\x01")
        assert await asyncio.wait_for(ws.recv(), 10) == b"\x00\x01"


async def test_errors_say_which_side_failed(pki: Pki, forwarder: Forwarder, backend: int) -> None:
    with socket.socket() as probe:  # a port nothing listens on, that the agent may dial
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    async with running_forwarder(closed_port) as refusing:
        routes = [
            http_route(
                [target(refusing, closed_port)], domain="refused.example.test", route_id="r"
            ),
            http_route([target(forwarder, 1)], domain="denied.example.test", route_id="d"),
            http_route(
                [target(forwarder, backend, target_id="tgt_slow", request_timeout_s=0.5)],
                domain="slow.example.test",
                route_id="s",
            ),
        ]
        async with running_edge(pki, routes) as plane:
            answers = {}
            for name in ("refused", "denied", "slow"):
                client = await RawClient.open(plane, pki, f"{name}.example.test")
                path = "/slow?seconds=3" if name == "slow" else "/"
                client.send(request(path, host=f"{name}.example.test"))
                answers[name] = await client.response()
                await client.close()
    assert answers["refused"].status == 502
    assert b"refused" in answers["refused"].body
    assert answers["denied"].status == 502
    assert b"is not a target of this peer" in answers["denied"].body
    assert answers["slow"].status == 504
    assert b"did not answer within 0.5 s" in answers["slow"].body


async def test_a_client_that_sends_its_headers_too_slowly_gets_a_408(
    pki: Pki, forwarder: Forwarder, backend: int
) -> None:
    limits = HttpLimits(header_timeout_s=0.5)
    async with running_edge(pki, [http_route([target(forwarder, backend)])], limits) as plane:
        client = await RawClient.open(plane, pki)
        client.send(b"GET / HTTP/1.1\r\nHost: app.exa")
        assert (await client.response(timeout_s=5)).status == 408
        await client.close()


async def test_a_new_table_applies_to_the_next_request(edge: DataPlane, pki: Pki) -> None:
    client = await RawClient.open(edge, pki)
    client.send(request("/"))
    assert (await client.response()).status == 200
    edge.apply_table(RoutingTable.build(2, []))
    client.send(request("/"))
    assert (await client.response()).status == 404
    await client.close()


async def test_these_tests_run_on_the_production_event_loop() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


async def test_request_timeout_counts_from_the_end_of_a_slow_upload(
    pki: Pki, forwarder: Forwarder, backend: int
) -> None:
    route = http_route([target(forwarder, backend, request_timeout_s=0.5)])
    async with running_edge(pki, [route]) as plane:
        client = await RawClient.open(plane, pki)
        client.send(request("/upload", method="POST", extra="Content-Length: 30\r\n"))
        for _ in range(3):  # 1.5 s of upload, longer than the 0.5 s request timeout
            await asyncio.sleep(0.5)
            client.send(b"x" * 10)
        response = await client.response()
        assert response.status == 200
        assert echo(response.body)["body_length"] == 30
        await client.close()


async def test_an_http_1_0_client_gets_its_answer_and_then_the_close(
    edge: DataPlane, pki: Pki
) -> None:
    client = await RawClient.open(edge, pki)
    client.send(f"GET /old HTTP/1.0\r\nHost: {DOMAIN}\r\n\r\n".encode())
    response = await client.response()
    assert response.status == 200
    assert echo(response.body)["raw_path"] == "/old"
    assert await client.closed()
    await client.close()


async def test_a_malformed_request_is_refused_after_the_answers_before_it(
    edge: DataPlane, pki: Pki
) -> None:
    client = await RawClient.open(edge, pki)
    client.send(request("/valid") + b"NOT HTTP\r\n\r\n")
    valid, refused = await client.responses(2)
    assert (valid.status, echo(valid.body)["raw_path"]) == (200, "/valid")
    assert refused.status == 400
    assert await client.closed()
    await client.close()


async def test_hundreds_of_pipelined_requests_answered_by_the_edge(
    edge: DataPlane, pki: Pki
) -> None:
    """Each is answered inside the start of the next: a loop, not a recursion."""
    client = await RawClient.open(edge, pki)
    client.send(request("/slow?seconds=0.3") + request("/", host="other.example.test") * 400)
    responses = await client.responses(401, timeout_s=20)
    assert [r.status for r in responses] == [200] + [421] * 400
    await client.close()


async def test_an_upgraded_stream_the_client_drops_releases_its_target(
    edge: DataPlane, pki: Pki
) -> None:
    client = await RawClient.open(edge, pki)
    client.send(
        request(
            "/ws",
            extra="Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        )
    )
    head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101")
    client.writer.transport.abort()  # the client vanishes

    for _ in range(100):  # up to 5 s
        if all(pool.open_connections == 0 for pool in edge.ctx.pools.values()):
            break
        await asyncio.sleep(0.05)
    assert [pool.open_connections for pool in edge.ctx.pools.values()] == [0]
