"""Authentication at the edge end to end on 127.0.0.1: client → edge (TLS) → agent forwarder →
real backend, with a real NATS holding the gateway's public keys in ``auth_keys`` and a fake
auth gateway (a tiny HTTP server that records what reaches it).

What a visitor of a protected service sees (the backend answers only authenticated requests;
refused ones get the edge's own 302 or 401), what the backend sees (the edge's identity headers,
no session cookie, no client-sent ``X-Heron-*``), and what the gateway sees.
"""

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from argon2 import PasswordHasher
from edge_harness import (
    DOMAIN,
    Pki,
    RawClient,
    Response,
    http_route,
    running_edge,
    running_forwarder,
    target,
)

from heron_agent.forwarder import Forwarder
from heron_bus import connect
from heron_bus.embedded import EmbeddedNats
from heron_bus.kv import AUTH_KEYS, ensure_bucket
from heron_core.auth import AuthMethod, SigningKeyRecord
from heron_core.sessions import SigningKey, new_claims, sign_session
from heron_core.tasks import spawn
from heron_edge.auth_keys import AuthKeyBook
from heron_edge.bucket_sync import BucketSync
from heron_edge.certs.sources import ExternalSource
from heron_edge.challenges import ChallengeBook
from heron_edge.dataplane import DataPlane
from heron_edge.routes import Route, RouteAuth
from heron_edge.settings import gateway_target

API_DOMAIN = "api.example.test"
OPEN_DOMAIN = "open.example.test"
AUTH_DOMAIN = "auth.example.test"
VERSION = "ver-1"
API_KEY = "k-0123456789"
HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
HTML = "Accept: text/html\r\n"


@dataclass
class FakeGateway:
    """Answers every request with 200 ``gateway`` and keeps each request's head."""

    port: int = 0
    requests: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = [
                    (name.strip().lower(), value.strip())
                    for name, _, value in (line.partition(":") for line in lines[1:] if line)
                ]
                self.requests.append((lines[0], headers))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\ngateway")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@dataclass
class AuthEdge:
    plane: DataPlane
    gateway: FakeGateway
    key: SigningKey


def routes(forwarder: Forwarder, backend: int) -> list[Route]:
    header_auth = RouteAuth(
        header_auths=(("x-api-key", HASHER.hash(API_KEY)),), session_version="h"
    )
    return [
        http_route(
            [target(forwarder, backend)],
            auth=RouteAuth(password=True, session_version=VERSION),
        ),
        http_route(
            [target(forwarder, backend)], domain=API_DOMAIN, route_id="svc_api", auth=header_auth
        ),
        http_route([target(forwarder, backend)], domain=OPEN_DOMAIN, route_id="svc_open"),
    ]


@pytest_asyncio.fixture
async def edge(pki: Pki, backend: int, tmp_path: Path) -> AsyncIterator[AuthEdge]:
    gateway = FakeGateway()
    server = await asyncio.start_server(gateway.handle, "127.0.0.1", 0)
    gateway.port = server.sockets[0].getsockname()[1]
    key = SigningKey.generate()
    now = datetime.now(UTC)
    async with (
        running_forwarder(backend) as forwarder,
        running_edge(pki, routes(forwarder, backend)) as plane,
        EmbeddedNats(store_dir=tmp_path / "nats") as nats,
        await connect(nats.url, name="authgateway (test)") as bus,
    ):
        plane.ctx.auth.gateway = gateway_target(f"http://127.0.0.1:{gateway.port}")
        plane.ctx.auth.auth_domain = AUTH_DOMAIN
        keys = await ensure_bucket(bus, AUTH_KEYS)
        record = key.record(created_at=now, expires_at=now + timedelta(hours=1))
        await keys.put(key.kid, record.encode())
        keys_arrived = asyncio.Event()

        def apply_keys(records: tuple[SigningKeyRecord, ...]) -> None:
            plane.apply_auth_keys(records)
            if key.kid in plane.ctx.auth.sessions.keys:
                keys_arrived.set()

        book = AuthKeyBook(on_change=apply_keys)
        sync = BucketSync(
            nats.url,
            certificates=ExternalSource(on_change=lambda: None),
            challenges=ChallengeBook(on_change=lambda _: None),
            auth_keys=book.apply,
        )
        task = spawn(sync.run(), name="bucket sync")
        try:
            async with asyncio.timeout(10):
                await keys_arrived.wait()
            yield AuthEdge(plane, gateway, key)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            server.close()
            await server.wait_closed()


def session(
    key: SigningKey,
    *,
    service: str = "svc_1",
    domain: str = DOMAIN,
    version: str = VERSION,
    now: float | None = None,
    method: AuthMethod = AuthMethod.PASSWORD,
    **extra: Any,
) -> str:
    claims = new_claims(
        subject="password-user", domain=domain, service_id=service, version=version,
        method=method, lifetime_s=3600, now=now, **extra,
    )  # fmt: skip
    return sign_session(claims, key)


async def get(
    edge: AuthEdge, pki: Pki, path: str, extra: str = "", host: str = DOMAIN, method: str = "GET"
) -> Response:
    client = await RawClient.open(edge.plane, pki, host)
    try:
        client.send(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
        return await client.response()
    finally:
        await client.close()


def seen_headers(response: Response) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in json.loads(response.body)["headers"]:
        found.setdefault(name, []).append(value)
    return found


async def test_a_valid_session_reaches_the_backend_without_the_cookie(
    edge: AuthEdge, pki: Pki
) -> None:
    cookie = f"Cookie: theme=dark; heron_session={session(edge.key)}\r\nCookie: lang=en\r\n"
    spoofed = "X-Heron-User: root\r\nX-Heron-Auth-Method: sso\r\n"
    response = await get(edge, pki, "/page?x=1", cookie + spoofed + HTML)
    assert response.status == 200
    headers = seen_headers(response)
    assert headers["x-heron-auth-method"] == ["password"]
    assert "x-heron-user" not in headers
    assert headers["cookie"] == ["theme=dark", "lang=en"]


async def test_an_sso_session_tells_the_backend_who_and_which_groups(
    edge: AuthEdge, pki: Pki
) -> None:
    token = session(
        edge.key, method=AuthMethod.SSO, email="ann@example.test", groups=["dev", "a,b"]
    )
    response = await get(edge, pki, "/", f"Cookie: heron_session={token}\r\n")
    assert response.status == 200
    headers = seen_headers(response)
    assert headers["x-heron-auth-method"] == ["sso"]
    assert headers["x-heron-user"] == ["ann@example.test"]
    assert headers["x-heron-groups"] == ["dev"]


def edited_payload(token: str, **changes: Any) -> str:
    """``token`` with claims changed in its payload, its header and signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    edited = base64.urlsafe_b64encode(json.dumps(claims | changes).encode()).rstrip(b"=")
    return f"{header}.{edited.decode()}.{signature}"


@pytest.mark.parametrize(
    "bad",
    ["tampered", "edited", "expired", "other_service", "unknown_key", "wrong_key_for_kid",
     "old_version", "none"],
)  # fmt: skip
async def test_a_bad_session_is_refused_browsers_redirected_scripts_401(
    edge: AuthEdge, pki: Pki, bad: str
) -> None:
    impostor = SigningKey(kid=edge.key.kid, private_key=SigningKey.generate().private_key)
    tokens = {
        "tampered": session(edge.key)[:-6] + "AAAAAA",
        # an old session with its settings version edited to the current one
        "edited": edited_payload(session(edge.key, version="ver-0"), ver=VERSION),
        "expired": session(edge.key, now=time.time() - 7200),
        "other_service": session(edge.key, service="svc_api", domain=API_DOMAIN),
        "unknown_key": session(SigningKey.generate()),
        "wrong_key_for_kid": session(impostor),  # a published kid, signed by another key
        "old_version": session(edge.key, version="ver-0"),
        "none": "",
    }
    cookie = f"Cookie: heron_session={tokens[bad]}\r\n" if tokens[bad] else ""
    browser = await get(edge, pki, "/a/b?c=1&d=2", cookie + HTML)
    assert browser.status == 302
    assert browser.header("location") == "/.heron/auth/login?rd=/a/b%3Fc%3D1%26d%3D2"
    assert browser.header("cache-control") == "no-store"
    script = await get(edge, pki, "/a/b", cookie + "Accept: application/json\r\n")
    assert script.status == 401
    assert script.header("www-authenticate") is not None
    assert b"/.heron/auth/login" in script.body
    post = await get(edge, pki, "/a", cookie + HTML + "Content-Length: 0\r\n", method="POST")
    assert post.status == 401


async def test_header_auth_right_wrong_and_missing(edge: AuthEdge, pki: Pki) -> None:
    right = await get(edge, pki, "/", f"X-Api-Key: {API_KEY}\r\n", host=API_DOMAIN)
    assert right.status == 200
    headers = seen_headers(right)
    assert headers["x-heron-auth-method"] == ["header"]
    assert "x-api-key" not in headers
    wrong = await get(edge, pki, "/", "X-Api-Key: nope\r\n", host=API_DOMAIN)
    assert wrong.status == 401
    assert wrong.header("www-authenticate") == 'Header realm="api.example.test", header="x-api-key"'
    assert b"headers" not in wrong.body and b"Heron edge" in wrong.body
    missing = await get(edge, pki, "/", HTML, host=API_DOMAIN)
    assert missing.status == 401  # no login page for this service: no redirect
    assert missing.header("www-authenticate") is not None
    again = await get(edge, pki, "/", f"X-Api-Key: {API_KEY}\r\n", host=API_DOMAIN)
    assert again.status == 200
    assert edge.plane.ctx.auth.headers.verifications == 2  # the right value was remembered


async def test_login_paths_go_to_the_gateway_with_the_service_id(edge: AuthEdge, pki: Pki) -> None:
    response = await get(
        edge, pki, "/.heron/auth/login?rd=/x",
        f"X-Heron-Service-Id: svc_evil\r\nCookie: heron_session={session(edge.key)}\r\n",
    )  # fmt: skip
    assert response.status == 200 and response.body == b"gateway"
    line, headers = edge.gateway.requests[-1]
    assert line == "GET /.heron/auth/login?rd=/x HTTP/1.1"
    values = [v for n, v in headers if n == "x-heron-service-id"]
    assert values == ["svc_1"]
    assert ("host", DOMAIN) in headers
    assert ("x-forwarded-host", DOMAIN) in headers and ("x-forwarded-proto", "https") in headers
    assert any(n == "cookie" and "heron_session=" in v for n, v in headers)  # for logout
    # an open service's login path goes there too
    response = await get(edge, pki, "/.heron/auth/logout", host=OPEN_DOMAIN)
    assert response.status == 200
    assert ("x-heron-service-id", "svc_open") in edge.gateway.requests[-1][1]


async def test_the_auth_domain_is_the_gateways(edge: AuthEdge, pki: Pki) -> None:
    response = await get(
        edge, pki, "/.heron/auth/callback?code=c&state=s", "X-Heron-Service-Id: x\r\n",
        host=AUTH_DOMAIN,
    )  # fmt: skip
    assert response.status == 200 and response.body == b"gateway"
    line, headers = edge.gateway.requests[-1]
    assert line == "GET /.heron/auth/callback?code=c&state=s HTTP/1.1"
    assert not any(n == "x-heron-service-id" for n, _ in headers)
    assert ("host", AUTH_DOMAIN) in headers


async def test_an_open_service_never_sees_client_identity_headers_or_the_session_cookie(
    edge: AuthEdge, pki: Pki
) -> None:
    response = await get(
        edge, pki, "/", "X-Heron-User: root\r\nX-Heron-Groups: admins\r\n"
        "Cookie: heron_session=abc; a=b\r\n", host=OPEN_DOMAIN,
    )  # fmt: skip
    assert response.status == 200
    headers = seen_headers(response)
    assert "x-heron-user" not in headers and "x-heron-groups" not in headers
    # Heron's session cookie never reaches a backend, protected or not (a browser may hold one
    # from when the service had auth); the others pass
    assert headers["cookie"] == ["a=b"]
