"""Headless Chromium works on this machine: it logs in on the OIDC test provider's own form and
lands on the client's redirect URI with a code."""

import asyncio
import base64
import hashlib
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
from browser import chromium, chromium_available
from oidc_provider import ALICE, OidcProvider, free_port, node_available

pytestmark = [
    pytest.mark.skipif(not chromium_available(), reason="no /usr/bin/chromium"),
    pytest.mark.skipif(not node_available(), reason="no Node.js for the OIDC test provider"),
]


class Callback:
    """A tiny HTTP server standing in for the client's redirect URI: it records the targets."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.targets.append(head.split(b" ", 2)[1].decode())
            body = b"<!doctype html><title>callback</title><p id=done>logged in</p>"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def callback() -> AsyncIterator[Callback]:
    recorder = Callback()
    recorder.port = free_port("127.0.0.1")
    server = await asyncio.start_server(recorder._serve, "127.0.0.1", recorder.port)
    async with server:
        yield recorder


async def test_chromium_logs_in_at_the_oidc_provider(callback: Callback) -> None:
    redirect_uri = f"http://127.0.0.1:{callback.port}/callback"
    async with OidcProvider(redirect_uris=[redirect_uri]) as provider:
        async with httpx.AsyncClient(trust_env=False) as http:
            discovery = (
                await http.get(f"{provider.issuer}/.well-known/openid-configuration")
            ).json()
        verifier = secrets.token_urlsafe(32)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        state = secrets.token_urlsafe(12)
        url = httpx.URL(discovery["authorization_endpoint"]).copy_merge_params({
            "response_type": "code", "client_id": provider.client_id,
            "redirect_uri": redirect_uri, "scope": "openid email profile groups",
            "state": state, "nonce": secrets.token_urlsafe(12),
            "code_challenge": challenge, "code_challenge_method": "S256",
        })  # fmt: skip
        async with chromium() as context:
            page = await context.new_page()
            await page.goto(str(url))
            await page.fill("#login", ALICE.id)
            await page.fill("#password", ALICE.password)
            await page.click("#submit")
            await page.wait_for_url(f"{redirect_uri}?**", timeout=20_000)
            assert await page.text_content("#done") == "logged in"
            landed = httpx.URL(page.url)
    assert landed.params["state"] == state
    assert landed.params["code"]
    assert callback.targets[0] == f"/callback?{landed.query.decode()}"  # then a favicon.ico


async def test_a_wrong_password_stays_on_the_form(callback: Callback) -> None:
    redirect_uri = f"http://127.0.0.1:{callback.port}/callback"
    async with OidcProvider(redirect_uris=[redirect_uri]) as provider:
        url = httpx.URL(f"{provider.issuer}/auth").copy_merge_params({
            "response_type": "code", "client_id": provider.client_id,
            "redirect_uri": redirect_uri, "scope": "openid", "state": "s", "nonce": "n",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        })  # fmt: skip
        async with chromium(host_rules={"idp.heron.test": "127.0.0.1"}) as context:
            page = await context.new_page()
            await page.goto(str(url).replace("127.0.0.1", "idp.heron.test", 1))
            await page.fill("#login", ALICE.id)
            await page.fill("#password", "wrong")
            await page.click("#submit")
            await page.wait_for_selector("#error")
            assert "Invalid" in (await page.text_content("#error") or "")
    assert not any(target.startswith("/callback") for target in callback.targets)
