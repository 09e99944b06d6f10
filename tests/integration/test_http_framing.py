"""Hypothesis against the whole L7 path: whatever framing the client picks, the target gets the
same requests.

Random methods, paths and bodies, framed with ``content-length`` or ``chunked`` (random chunk
sizes, extensions, trailers), several requests pipelined on one connection, and the byte stream
cut into writes at random places. The backend reports what it received; every request must
arrive once, whole, in order, with the edge's own framing.

The edge runs in a thread with its own event loop so that the examples can be plain blocking
clients: hypothesis drives them one after another against one edge.
"""

import asyncio
import hashlib
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass

import httptools
import pytest
import uvloop
from edge_harness import (
    DOMAIN,
    Pki,
    backend_process,
    http_route,
    running_edge,
    running_forwarder,
    target,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heron_edge.dataplane import DataPlane


@dataclass
class EdgeThread:
    plane: DataPlane
    pki: Pki


@pytest.fixture(scope="module")
def edge_thread() -> Iterator[EdgeThread]:
    pki = Pki()
    with backend_process() as port:
        loop = uvloop.new_event_loop()
        started: Future[DataPlane] = Future()
        stop = asyncio.Event()

        async def serve() -> None:
            async with running_forwarder(port) as forwarder:
                route = http_route([target(forwarder, port)])
                async with running_edge(pki, [route]) as plane:
                    started.set_result(plane)
                    await stop.wait()

        thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
        thread.start()
        try:
            yield EdgeThread(started.result(timeout=30), pki)
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(30)
            loop.close()


@dataclass(frozen=True)
class Sent:
    method: str
    path: str
    body: bytes
    wire: bytes


tokens = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~", min_size=1, max_size=12)


@st.composite
def requests(draw: st.DrawFn) -> Sent:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]))
    path = "/" + "/".join(draw(st.lists(tokens, max_size=4)))
    query = draw(st.one_of(st.just(""), tokens.map(lambda t: "?q=" + t)))
    body = draw(st.binary(max_size=3000)) if method not in ("GET", "OPTIONS") else b""
    if draw(st.booleans()):
        body = body * draw(st.integers(1, 40))  # now and then a body of many packets
    headers = [f"Host: {DOMAIN}"]
    headers += [
        f"X-{name}: {value}"
        for name, value in draw(st.lists(st.tuples(tokens, tokens), max_size=5))
    ]
    chunked = bool(body) and draw(st.booleans())
    if chunked:
        headers.append("Transfer-Encoding: chunked")
        framed = b""
        rest = body
        while rest:
            size = draw(st.integers(1, max(1, len(rest))))
            extension = draw(st.sampled_from([b"", b";ext=1", b';name="v"']))
            framed += b"%x%s\r\n%s\r\n" % (size, extension, rest[:size])
            rest = rest[size:]
        trailer = draw(st.sampled_from([b"", b"X-Trailer: t\r\n"]))
        framed += b"0\r\n" + trailer + b"\r\n"
    else:
        if body or method in ("POST", "PUT", "PATCH"):
            headers.append(f"Content-Length: {len(body)}")
        framed = body
    head = f"{method} {path}{query} HTTP/1.1\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    return Sent(method, path + query, body, head.encode() + framed)


class Responses:
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.bodies: list[bytes] = []
        self.statuses: list[int] = []
        self._body = b""

    def on_message_begin(self) -> None:
        self._body = b""

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.statuses.append(self.parser.get_status_code())
        self.bodies.append(self._body)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.lists(requests(), min_size=1, max_size=3),
    cuts=st.lists(st.integers(1, 5000), max_size=6),
)
def test_what_the_client_frames_the_target_receives_whole(
    edge_thread: EdgeThread, batch: list[Sent], cuts: list[int]
) -> None:
    stream = b"".join(sent.wire for sent in batch)
    context = edge_thread.pki.client_context()
    raw = socket.create_connection(("127.0.0.1", edge_thread.plane.main_port), timeout=20)
    with context.wrap_socket(raw, server_hostname=DOMAIN) as conn:
        position = 0
        for cut in sorted(set(cuts)):
            if position < cut < len(stream):
                conn.sendall(stream[position:cut])
                position = cut
        conn.sendall(stream[position:])
        responses = Responses()
        while len(responses.statuses) < len(batch):
            data = conn.recv(65536)
            assert data, "the edge closed the connection before answering every request"
            responses.parser.feed_data(data)
    assert responses.statuses == [200] * len(batch)
    for sent, body in zip(batch, responses.bodies, strict=True):
        seen = json.loads(body)
        assert seen["method"] == sent.method
        assert seen["raw_path"] + ("?" + seen["query"] if seen["query"] else "") == sent.path
        assert seen["body_length"] == len(sent.body)
        assert seen["body_sha256"] == hashlib.sha256(sent.body).hexdigest()
        names = [name for name, _ in seen["headers"]]
        assert names.count("host") == 1
        assert not ("transfer-encoding" in names and "content-length" in names)


def test_a_tls_client_without_the_ca_is_refused_by_its_own_check(edge_thread: EdgeThread) -> None:
    """The edge presents the service's certificate: a client that does not trust the CA fails."""
    raw = socket.create_connection(("127.0.0.1", edge_thread.plane.main_port), timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context().wrap_socket(raw, server_hostname=DOMAIN)
    raw.close()
