"""Logging in to a protected HTTP service, end to end, in a real browser.

    test (root ns: Chromium, curl,   --veth-- edge host --veth-- peer host
          the OIDC provider on                heron-stack         heron up,
          <subnet>.0.1, the REST API)         (management, NATS,  a backend on
                                               authgateway, edge)  127.0.0.1:7080

The stack runs with its embedded defaults plus an OpenID Connect issuer: a real provider
(``oidc-provider`` on Node.js) with alice in ``eng`` and bob in ``ops``. Chromium resolves
``*.heron.test`` to the edge and talks HTTPS to it (the stack's local CA, not trusted by the
browser: HTTPS errors are ignored, cookies stay ``Secure``). Everything goes through public
interfaces: the REST API, the login pages, the provider's own form, HTTPS on the edge.
"""

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from browser import chromium
from e2e_support import PYTHON, Hosts, Miss, free_subnet, stack_with_agent
from oidc_provider import ALICE, BOB, OidcProvider, User, free_port
from playwright.async_api import BrowserContext, Page
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "hrn_" + secrets.token_urlsafe(30)
DOMAIN = "heron.test"
CALLBACK = f"https://auth.{DOMAIN}/.heron/auth/callback"
BACKEND_PORT = 7080
BACKEND = Path(__file__).parents[1] / "integration" / "http_backend.py"
PASSWORD = "correct horse battery"
PIN = "482915"
API_KEY = "k-" + secrets.token_urlsafe(24)
WAIT_MS = 20_000
LOGIN = "/.heron/auth/login"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hosts]:
    subnet = free_subnet(200, 40)
    # the provider listens on the client host's address, which exists once the stack's veth
    # does; its port is picked now, because the issuer URL goes into the stack's environment
    provider = OidcProvider(
        redirect_uris=[CALLBACK], host=f"{subnet}.0.1", port=free_port("127.0.0.1")
    )
    async with stack_with_agent(
        tmp_path_factory.mktemp("auth"), prefix="ha", subnet=subnet, token=TOKEN,
        stack_env={"HERON_PROXY_DOMAIN": DOMAIN,
                   "HERON_AUTHGATEWAY_OIDC_ISSUER": provider.issuer,
                   "HERON_AUTHGATEWAY_OIDC_CLIENT_ID": provider.client_id,
                   "HERON_AUTHGATEWAY_OIDC_CLIENT_SECRET": provider.client_secret},
        peer_processes=[("backend", [PYTHON, str(BACKEND), "--port", str(BACKEND_PORT)])],
        client_side=[provider],
    ) as hosts:  # fmt: skip
        yield hosts


@pytest_asyncio.fixture(loop_scope="module")
async def browser(stack: Hosts) -> AsyncIterator[BrowserContext]:
    # on the edge host, whose addresses stay put: see ``chromium``'s netns
    async with chromium(
        host_rules={f"*.{DOMAIN}": stack.address}, netns=stack.edge.name
    ) as context:
        yield context


async def publish(stack: Hosts, name: str, auth: dict[str, Any], *ready_with: str) -> str:
    """A service ``<name>.heron.test`` with ``auth`` in front of the peer's backend, once it is
    active and the edge serves it: a browser is sent to a login page the gateway answers (the
    edge's table, the gateway's record and the signing keys are in place) or, with
    ``ready_with`` headers, they reach the backend."""
    host = f"{name}.{DOMAIN}"
    async with stack.client() as client:
        created = await client.post(
            "/api/services",
            json={"name": name, "domain": host, "auth": auth,
                  "targets": [{"target_type": "peer", "target_id": stack.peer_id,
                               "port": BACKEND_PORT}]},
        )  # fmt: skip
        assert created.status_code == 201, created.text

        async def active() -> bool | Miss:
            got = await client.get(f"/api/services/{created.json()['id']}")
            status = got.json()["meta"]["status"]
            return status == "active" or Miss(status)

        # active: every worker of the edge has the service (one that lags would answer 404)
        await stack.eventually(f"{host} active", active, within_s=30)

    async def served() -> bool | Miss:
        if ready_with:
            status = (await curl(stack, host, "/", *ready_with))[0]
            return status == 200 or Miss(status)
        status, headers, _ = await curl(stack, host, "/", "Accept: text/html")
        if status != 302 or not headers.get("location", "").startswith(LOGIN):
            return Miss(status)
        status, _, _ = await curl(stack, host, headers["location"])
        return status in (200, 302) or Miss(status)

    await stack.eventually(f"{host} behind its login", served, within_s=30)
    return host


async def curl(
    stack: Hosts, host: str, path: str, *headers: str
) -> tuple[int, dict[str, str], bytes]:
    """``curl --resolve`` over HTTPS without verifying (a machine client): status, headers,
    body; status 0 when the connection failed."""
    argv = ["curl", "--silent", "--insecure", "--max-time", "10", "--include",
            "--resolve", f"{host}:443:{stack.address}"]  # fmt: skip
    for header in headers:
        argv += ["--header", header]
    process = await asyncio.create_subprocess_exec(
        *argv, f"https://{host}{path}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    if process.returncode != 0:
        return 0, {}, b""
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), parsed, body


async def backend_saw(page: Page) -> dict[str, Any]:
    """What the backend echoed to the browser: path, query and headers as it received them."""
    text = await page.locator("pre").first.text_content()
    assert text, await page.content()
    seen: dict[str, Any] = json.loads(text)
    return seen


def header(seen: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in seen["headers"] if key == name]


def heron_cookie_sent(seen: dict[str, Any]) -> bool:
    return any("heron_session" in value for value in header(seen, "cookie"))


async def shown(page: Page, selector: str) -> None:
    """Wait for ``selector``; on a timeout, say where the browser is and what it shows."""
    try:
        await page.wait_for_selector(selector, timeout=WAIT_MS)
    except PlaywrightTimeoutError:
        text = await page.text_content("body")
        raise AssertionError(f"no {selector} at {page.url}: {text!r:.600}") from None


async def log_in_at_provider(page: Page, user: User) -> None:
    await shown(page, "#login")
    await page.fill("#login", user.id)
    await page.fill("#password", user.password)
    await page.click("#submit")


async def test_sso_lets_eng_in_keeps_the_path_and_ends_at_logout(
    stack: Hosts, browser: BrowserContext
) -> None:
    host = await publish(stack, "wiki", {"sso_auth": {"enabled": True, "groups": ["eng"]}})
    page = await browser.new_page()
    await page.goto(f"https://{host}/docs/page?q=heron&lang=en")
    await log_in_at_provider(page, ALICE)

    await page.wait_for_url(f"https://{host}/docs/page?q=heron&lang=en", timeout=WAIT_MS)
    seen = await backend_saw(page)
    assert (seen["raw_path"], seen["query"]) == ("/docs/page", "q=heron&lang=en")
    assert header(seen, "x-heron-user") == [ALICE.email]
    assert header(seen, "x-heron-groups") == ["eng"]
    assert header(seen, "x-heron-auth-method") == ["sso"]
    assert not heron_cookie_sent(seen)
    cookie = next(c for c in await browser.cookies() if c["name"] == "heron_session")
    assert (cookie["domain"], cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (
        host, True, True, "Lax",
    )  # fmt: skip

    await page.reload()
    assert (await backend_saw(page))["raw_path"] == "/docs/page"

    await page.goto(f"https://{host}/.heron/auth/logout")
    await page.get_by_text("You are signed out").wait_for(timeout=WAIT_MS)
    assert not [c for c in await browser.cookies() if c["name"] == "heron_session"]
    # the session has ended at Heron: the next visit goes through the login again (the
    # provider still knows alice, so single sign-on brings her straight back)
    async with page.expect_response(lambda r: urlsplit(r.url).path == LOGIN) as login:
        await page.goto(f"https://{host}/docs/page")
    assert (await login.value).status == 302
    await page.wait_for_url(f"https://{host}/docs/page", timeout=WAIT_MS)
    assert header(await backend_saw(page), "x-heron-user") == [ALICE.email]


async def test_sso_shows_a_user_outside_the_groups_a_403_page(
    stack: Hosts, browser: BrowserContext
) -> None:
    host = await publish(stack, "ops-only", {"sso_auth": {"enabled": True, "groups": ["eng"]}})
    page = await browser.new_page()
    await page.goto(f"https://{host}/")
    async with page.expect_response(lambda r: r.url.startswith(CALLBACK)) as callback:
        await log_in_at_provider(page, BOB)
    assert (await callback.value).status == 403
    await page.get_by_text("Access denied").wait_for(timeout=WAIT_MS)
    assert "open only to members of: eng" in (await page.text_content("main") or "")
    assert not [c for c in await browser.cookies() if c["name"] == "heron_session"]


async def test_password_and_pin_logins_on_a_page_with_only_those_methods(
    stack: Hosts, browser: BrowserContext
) -> None:
    host = await publish(
        stack, "files",
        {"password_auth": {"enabled": True, "password": PASSWORD},
         "pin_auth": {"enabled": True, "pin": PIN}},
    )  # fmt: skip
    page = await browser.new_page()
    await page.goto(f"https://{host}/shared/report.pdf?v=2")
    await shown(page, "#password")
    assert await page.locator("#pin").count() == 1
    assert await page.get_by_text("single sign-on").count() == 0

    await page.fill("#password", "not the password")
    await page.get_by_role("button", name="Sign in with password").click()
    await page.get_by_role("alert").wait_for(timeout=WAIT_MS)
    assert "password" in (await page.get_by_role("alert").text_content() or "").lower()
    assert urlsplit(page.url).path == LOGIN

    await page.fill("#password", PASSWORD)
    await page.get_by_role("button", name="Sign in with password").click()
    await page.wait_for_url(f"https://{host}/shared/report.pdf?v=2", timeout=WAIT_MS)
    seen = await backend_saw(page)
    assert header(seen, "x-heron-auth-method") == ["password"]
    assert not heron_cookie_sent(seen)
    await page.reload()
    assert (await backend_saw(page))["query"] == "v=2"

    await page.goto(f"https://{host}/.heron/auth/logout")
    await page.goto(f"https://{host}/shared/")
    await page.fill("#pin", PIN)
    await page.get_by_role("button", name="Sign in with PIN").click()
    await page.wait_for_url(f"https://{host}/shared/", timeout=WAIT_MS)
    assert header(await backend_saw(page), "x-heron-auth-method") == ["pin"]

    # a new password ends the service's sessions: the PIN session too
    async with stack.client() as client:
        service = next(x for x in (await client.get("/api/services")).json() if x["domain"] == host)
        body = {k: service[k] for k in ("name", "domain")} | {
            "targets": [{k: t[k] for k in ("target_type", "target_id", "port")}
                        for t in service["targets"]],
            "auth": {"password_auth": {"enabled": True, "password": PASSWORD + "!"},
                     "pin_auth": {"enabled": True}},
        }  # fmt: skip
        replaced = await client.put(f"/api/services/{service['id']}", json=body)
        assert replaced.status_code == 200, replaced.text

    async def sent_to_login() -> bool:
        await page.goto(f"https://{host}/shared/")
        return urlsplit(page.url).path == LOGIN

    await stack.eventually("the old session refused", sent_to_login, within_s=10)
    await page.fill("#pin", PIN)  # the PIN was kept
    await page.get_by_role("button", name="Sign in with PIN").click()
    await page.wait_for_url(f"https://{host}/shared/", timeout=WAIT_MS)

    # a service with only a PIN offers only the PIN
    pin_only = await publish(stack, "kiosk", {"pin_auth": {"enabled": True, "pin": PIN}})
    await page.goto(f"https://{pin_only}/")
    await shown(page, "#pin")
    assert await page.locator("#password").count() == 0


async def test_header_auth_lets_the_right_key_through_and_nothing_else(stack: Hosts) -> None:
    host = await publish(
        stack, "api", {"header_auths": [{"header": "X-Api-Key", "value": API_KEY}]},
        f"X-Api-Key: {API_KEY}",
    )  # fmt: skip
    status, _, body = await curl(stack, host, "/v1/items", f"X-Api-Key: {API_KEY}")
    assert status == 200, body
    seen = json.loads(body)
    assert seen["raw_path"] == "/v1/items"
    assert header(seen, "x-api-key") == []
    assert header(seen, "x-heron-auth-method") == ["header"]

    for headers in ([f"X-Api-Key: {API_KEY[:-1]}x"], [], ["Accept: text/html"]):
        status, answer_headers, body = await curl(stack, host, "/v1/items", *headers)
        assert status == 401, (headers, body)
        assert "www-authenticate" in answer_headers
        assert b"raw_path" not in body  # nothing from the backend
