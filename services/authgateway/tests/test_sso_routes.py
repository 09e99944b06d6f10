"""The single sign-on routes with a stand-in provider client (the real one's tests run against
a real provider): state and hand-off codes taken once, groups, the return path kept."""

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from heron_authgateway import flows
from heron_authgateway.oidc import Identity
from heron_bus.bucket import Bucket
from heron_bus.connection import Bus
from heron_bus.kv import AUTH_FLOWS, AUTH_KEYS, AUTH_SERVICES
from heron_core.auth import ServiceAuthRecord, SigningKeyRecord
from heron_core.sessions import PublicKeys, verify_session

StartGateway = Callable[..., AbstractAsyncContextManager[FastAPI]]
DOMAIN = "app.example.test"
CALLBACK = "https://auth.example.test:8443/.heron/auth/callback"
SSO = {
    "authgateway_oidc_issuer": "http://idp.example.test",
    "authgateway_oidc_client_id": "heron",
    "authgateway_callback_url": CALLBACK,
}


class FakeProvider:
    """``OidcClient``'s interface; remembers what it was asked."""

    def __init__(self, groups: list[str]) -> None:
        self.groups = groups
        self.finished: list[dict[str, str]] = []

    async def authorization_url(
        self, *, redirect_uri: str, state: str, nonce: str, code_challenge: str
    ) -> str:
        return f"https://idp.example.test/authorize?state={state}&redirect_uri={redirect_uri}"

    async def finish(
        self, *, code: str, redirect_uri: str, code_verifier: str, nonce: str
    ) -> Identity:
        self.finished.append({"code": code, "redirect_uri": redirect_uri, "nonce": nonce})
        return Identity(
            subject="user-1", email="ada@example.test", name="Ada", groups=self.groups, claims={}
        )

    async def aclose(self) -> None:
        return None


def edge(service_id: str = "svc_sso", host: str = f"{DOMAIN}:8443") -> dict[str, str]:
    return {
        "x-heron-service-id": service_id,
        "x-forwarded-for": "203.0.113.5",
        "x-forwarded-host": host,
        "x-forwarded-proto": "https",
    }


async def publish(bus: Bus, groups: list[str]) -> None:
    record = ServiceAuthRecord(
        service_id="svc_sso", account_id="acc", domain=DOMAIN, session_version="s1",
        sso_enabled=True, sso_groups=groups,
    )  # fmt: skip
    await (await Bucket.open(bus, AUTH_SERVICES)).put(record.service_id, record.encode())


def client(app: FastAPI, provider: FakeProvider) -> httpx.AsyncClient:
    app.state.oidc = provider  # the lifespan made a real client; the routes use this one
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


async def start_and_return(http: httpx.AsyncClient, rd: str) -> tuple[httpx.Response, str]:
    """Start SSO on the service's domain, come back at the callback on the auth domain: the
    callback's answer and the ``Cookie`` header of the browser that started it."""
    start = await http.get("/.heron/auth/sso", params={"rd": rd}, headers=edge())
    assert start.status_code == 302
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    back = await http.get(
        "/.heron/auth/callback", params={"code": "c0de", "state": state}, headers=edge("")
    )
    return back, start.headers["set-cookie"].split(";", 1)[0]


async def test_the_whole_round_trip_keeps_the_return_path(
    bus: Bus, start_gateway: StartGateway
) -> None:
    await publish(bus, groups=["staff"])
    provider = FakeProvider(groups=["staff", "x"])
    async with start_gateway(**SSO) as app, client(app, provider) as http:
        back, browser = await start_and_return(http, "/reports?year=2024&q=a%20b")
        handoff = urlsplit(back.headers["location"])
        params, headers = parse_qs(handoff.query), edge() | {"cookie": browser}
        session = await http.get(handoff.path, params=params, headers=headers)
        replayed = await http.get(handoff.path, params=params, headers=headers)

    assert back.status_code == 302
    assert (handoff.scheme, handoff.netloc) == ("https", f"{DOMAIN}:8443")
    assert provider.finished[0]["redirect_uri"] == CALLBACK
    assert session.status_code == 303
    assert session.headers["location"] == "/reports?year=2024&q=a%20b"
    set_cookies = session.headers.get_list("set-cookie")
    token = set_cookies[0].split(";", 1)[0].split("=", 1)[1]
    assert set_cookies[1].startswith("heron_sso=;")  # the binding is spent
    claims = verify_session(token, await published_keys(bus))
    assert (claims.sub, claims.email, claims.groups, claims.amr) == (
        "user-1", "ada@example.test", ["staff", "x"], "sso",
    )  # fmt: skip
    assert replayed.status_code == 400


async def test_a_replayed_state_fails(bus: Bus, start_gateway: StartGateway) -> None:
    await publish(bus, groups=[])
    async with start_gateway(**SSO) as app, client(app, FakeProvider([])) as http:
        start = await http.get("/.heron/auth/sso", headers=edge())
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        params = {"code": "c", "state": state}
        first = await http.get("/.heron/auth/callback", params=params)
        second = await http.get("/.heron/auth/callback", params=params)

    assert first.status_code == 302
    assert second.status_code == 400 and "expired or was already used" in second.text


async def test_users_outside_the_groups_are_told_which_are_needed(
    bus: Bus, start_gateway: StartGateway
) -> None:
    await publish(bus, groups=["admins", "ops"])
    async with start_gateway(**SSO) as app, client(app, FakeProvider(["staff"])) as http:
        refused, _ = await start_and_return(http, "/")

    assert refused.status_code == 403
    assert "admins, ops" in refused.text


async def test_provider_errors_are_shown_escaped(bus: Bus, start_gateway: StartGateway) -> None:
    await publish(bus, groups=[])
    async with start_gateway(**SSO) as app, client(app, FakeProvider([])) as http:
        denied = await http.get(
            "/.heron/auth/callback",
            params={"error": "access_denied", "error_description": "<b>no</b>", "state": "x"},
        )

    assert denied.status_code == 403
    assert "&lt;b&gt;no&lt;/b&gt;" in denied.text and "<b>" not in denied.text


async def test_a_handoff_code_works_only_for_its_service(
    bus: Bus, start_gateway: StartGateway
) -> None:
    await publish(bus, groups=[])
    async with start_gateway(**SSO) as app, client(app, FakeProvider([])) as http:
        back, browser = await start_and_return(http, "/")
        handoff = urlsplit(back.headers["location"])
        elsewhere = await http.get(
            handoff.path, params=parse_qs(handoff.query),
            headers=edge("svc_other") | {"cookie": browser},
        )  # fmt: skip

    assert elsewhere.status_code == 400
    assert "heron_session" not in elsewhere.headers.get("set-cookie", "")


async def test_the_sso_cookie_is_scoped_to_the_gateway_paths(
    bus: Bus, start_gateway: StartGateway
) -> None:
    await publish(bus, groups=[])
    async with start_gateway(**SSO) as app, client(app, FakeProvider([])) as http:
        start = await http.get("/.heron/auth/sso", headers=edge())

    name_value, *attributes = (part.strip() for part in start.headers["set-cookie"].split(";"))
    assert name_value.startswith("heron_sso=") and len(name_value) > len("heron_sso=") + 30
    assert set(attributes) >= {"Path=/.heron/auth/", "HttpOnly", "Secure", "SameSite=Lax"}


async def test_a_login_finished_in_another_browser_gives_no_session(
    bus: Bus, start_gateway: StartGateway
) -> None:
    """Login CSRF: an attacker signs in at the provider as themselves and sends the victim the
    hand-off link (or the callback link). The victim's browser does not hold the attacker's
    ``heron_sso`` cookie, so no session is made — and the code is spent."""
    await publish(bus, groups=[])
    async with start_gateway(**SSO) as app, client(app, FakeProvider([])) as http:
        back, attackers = await start_and_return(http, "/")
        _, victims = await start_and_return(http, "/")  # the victim's own, other login
        handoff = urlsplit(back.headers["location"])
        params = parse_qs(handoff.query)
        without = await http.get(handoff.path, params=params, headers=edge())
        back, attackers = await start_and_return(http, "/")
        handoff = urlsplit(back.headers["location"])
        params = parse_qs(handoff.query)
        other = await http.get(handoff.path, params=params, headers=edge() | {"cookie": victims})
        spent = await http.get(handoff.path, params=params, headers=edge() | {"cookie": attackers})

    for refused in (without, other):
        assert refused.status_code == 400
        assert "not started in this browser" in refused.text
        assert "heron_session" not in refused.headers.get("set-cookie", "")
    assert spent.status_code == 400 and "heron_session" not in spent.headers.get("set-cookie", "")


async def test_sso_on_a_foreign_host_or_without_configuration_is_refused(
    bus: Bus, start_gateway: StartGateway
) -> None:
    await publish(bus, groups=[])
    async with start_gateway(**SSO) as app, client(app, FakeProvider([])) as http:
        foreign = await http.get("/.heron/auth/sso", headers=edge(host="evil.example:8443"))
    async with start_gateway() as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            unconfigured = await http.get("/.heron/auth/sso", headers=edge())

    assert foreign.status_code == 400
    assert unconfigured.status_code == 503


async def published_keys(bus: Bus) -> PublicKeys:
    bucket = await Bucket.open(bus, AUTH_KEYS)
    records = []
    for kid in await bucket.keys():
        entry = await bucket.get(kid)
        if entry is not None and entry.value is not None:
            records.append(SigningKeyRecord.decode(entry.value))
    assert time.time() < min(r.expires_at.timestamp() for r in records)
    return PublicKeys(records)


async def test_too_many_starts_from_one_address_get_429_and_write_nothing(
    bus: Bus, start_gateway: StartGateway
) -> None:
    await publish(bus, groups=[])
    async with start_gateway(**SSO) as app, client(app, FakeProvider([])) as http:
        limit = app.state.gateway.sso_starts.limit
        answers = [
            (await http.get("/.heron/auth/sso", headers=edge())).status_code
            for _ in range(limit + 1)
        ]
        bucket = await Bucket.open(bus, AUTH_FLOWS)
        stored = [key for key in await bucket.keys() if key.startswith("state.")]

    assert answers == [302] * limit + [429]
    assert len(stored) == limit


async def test_a_handoff_code_older_than_its_lifetime_gives_no_session(
    bus: Bus, start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    await publish(bus, groups=[])
    async with start_gateway(**SSO) as app, client(app, FakeProvider([])) as http:
        back, browser = await start_and_return(http, "/")
        monkeypatch.setattr(flows, "HANDOFF_TTL_S", -1.0)  # as if the browser took too long
        handoff = urlsplit(back.headers["location"])
        late = await http.get(
            handoff.path, params=parse_qs(handoff.query), headers=edge() | {"cookie": browser}
        )

    assert late.status_code == 400 and "expired or was already used" in late.text
    assert "heron_session" not in late.headers.get("set-cookie", "")
