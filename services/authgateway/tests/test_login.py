"""Password and PIN logins, lockouts and logout, through the app as the edge calls it."""

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

import httpx
from argon2 import PasswordHasher
from fastapi import FastAPI

from heron_bus.bucket import Bucket
from heron_bus.connection import Bus
from heron_bus.kv import AUTH_KEYS, AUTH_SERVICES
from heron_core.auth import SESSION_COOKIE, ServiceAuthRecord, SigningKeyRecord
from heron_core.sessions import PublicKeys, SessionClaims, verify_session

if TYPE_CHECKING:
    from heron_authgateway.gateway import Gateway

PASSWORD = "correct horse battery staple"
PIN = "482913"
# management's parameters (heron_management.secret_hashing); hashed once for the module
_HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1, hash_len=32, salt_len=16)
PASSWORD_HASH = _HASHER.hash(PASSWORD)
PIN_HASH = _HASHER.hash(PIN)
DOMAIN = "app.example.test"
#: the ``start_gateway`` fixture (conftest)
StartGateway = Callable[..., AbstractAsyncContextManager[FastAPI]]


def auth_record(
    service_id: str = "svc_one",
    *,
    password: bool = True,
    pin: bool = True,
    sso: bool = False,
    version: str = "v1",
) -> ServiceAuthRecord:
    return ServiceAuthRecord(
        service_id=service_id,
        account_id="acc_one",
        domain=DOMAIN,
        session_version=version,
        password_hash=PASSWORD_HASH if password else None,
        pin_hash=PIN_HASH if pin else None,
        sso_enabled=sso,
    )


async def publish(bus: Bus, *records: ServiceAuthRecord) -> None:
    bucket = await Bucket.open(bus, AUTH_SERVICES)
    for record in records:
        await bucket.put(record.service_id, record.encode())


async def until_seen(app: FastAPI, record: ServiceAuthRecord) -> None:
    gateway: Gateway = app.state.gateway
    async with asyncio.timeout(5):
        while gateway.registry.get(record.service_id) != record:  # noqa: ASYNC110  # the watch has no hook
            await asyncio.sleep(0.02)


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8081"
    )


def edge(service_id: str = "svc_one", address: str = "203.0.113.7") -> dict[str, str]:
    """The headers the edge sends: its own address for the client comes last."""
    return {
        "x-heron-service-id": service_id,
        "x-forwarded-for": f"198.51.100.99, {address}",
        "x-forwarded-host": f"{DOMAIN}:8443",
        "x-forwarded-proto": "https",
    }


async def published_keys(bus: Bus) -> PublicKeys:
    bucket = await Bucket.open(bus, AUTH_KEYS)
    records = []
    for kid in await bucket.keys():
        entry = await bucket.get(kid)
        assert entry is not None and entry.value is not None
        records.append(SigningKeyRecord.decode(entry.value))
    return PublicKeys(records)


def session_token(response: httpx.Response) -> str:
    cookie = response.headers["set-cookie"]
    name_value = cookie.split(";", 1)[0]
    assert name_value.startswith(f"{SESSION_COOKIE}=")
    return name_value.split("=", 1)[1]


async def try_pin(
    http: httpx.AsyncClient, pin: str, address: str = "203.0.113.7"
) -> httpx.Response:
    return await http.post(
        "/.heron/auth/login",
        data={"method": "pin", "pin": pin, "rd": "/x"},
        headers=edge(address=address),
    )


async def test_login_page_offers_only_the_enabled_methods(
    bus: Bus, start_gateway: StartGateway
) -> None:
    await publish(bus, auth_record(pin=False), auth_record("svc_two", password=False, sso=True))
    async with start_gateway() as app, client(app) as http:
        page = await http.get("/.heron/auth/login", params={"rd": "/a?b=1"}, headers=edge())
        other = await http.get("/.heron/auth/login", headers=edge("svc_two"))

    assert page.status_code == 200
    assert 'name="password"' in page.text and 'name="pin"' not in page.text
    assert "single sign-on" not in page.text
    assert 'value="/a?b=1"' in page.text and '<html lang="en">' in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    assert 'name="pin"' in other.text and 'name="password"' not in other.text
    assert "/.heron/auth/sso?rd=%2F" in other.text


async def test_sso_alone_goes_straight_to_it_and_unknown_services_get_404(
    bus: Bus, start_gateway: StartGateway
) -> None:
    await publish(bus, auth_record(password=False, pin=False, sso=True))
    async with start_gateway() as app, client(app) as http:
        sso_only = await http.get("/.heron/auth/login", params={"rd": "/p?q=1"}, headers=edge())
        unknown = await http.get("/.heron/auth/login", headers=edge("svc_nobody"))
        no_header = await http.get("/.heron/auth/login")

    assert sso_only.status_code == 302
    assert sso_only.headers["location"] == "/.heron/auth/sso?rd=%2Fp%3Fq%3D1"
    assert unknown.status_code == 404 and "text/html" in unknown.headers["content-type"]
    assert no_header.status_code == 404


async def test_password_and_pin_logins_set_a_session_the_edge_accepts(
    bus: Bus, start_gateway: StartGateway
) -> None:
    await publish(bus, auth_record())
    async with start_gateway(authgateway_session_ttl="2h") as app, client(app) as http:
        by_password = await http.post(
            "/.heron/auth/login",
            data={"method": "password", "password": PASSWORD, "rd": "/dash?tab=2"},
            headers=edge(),
        )
        by_pin = await try_pin(http, PIN)

    assert by_password.status_code == 303
    assert by_password.headers["location"] == "/dash?tab=2"
    cookie = by_password.headers["set-cookie"]
    assert cookie.endswith("; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=7200")
    assert "domain=" not in cookie.lower()
    keys = await published_keys(bus)
    claims = verify_session(session_token(by_password), keys)
    assert (claims.sub, claims.aud, claims.svc, claims.ver, claims.amr) == (
        "password-user", DOMAIN, "svc_one", "v1", "password",
    )  # fmt: skip
    assert claims.exp - claims.iat == 7200
    assert by_pin.status_code == 303 and by_pin.headers["location"] == "/x"
    assert verify_session(session_token(by_pin), keys).sub == "pin-user"


async def test_a_wrong_secret_gets_401_and_says_so(bus: Bus, start_gateway: StartGateway) -> None:
    await publish(bus, auth_record())
    async with start_gateway() as app, client(app) as http:
        password = await http.post(
            "/.heron/auth/login",
            data={"method": "password", "password": "guess", "rd": "/"},
            headers=edge(),
        )
        pin = await try_pin(http, "0000")
        not_a_pin = await try_pin(http, "12ab")

    assert password.status_code == 401 and "Wrong password" in password.text
    assert "set-cookie" not in password.headers
    assert pin.status_code == 401 and "Wrong PIN" in pin.text
    assert not_a_pin.status_code == 400 and "4 to 10 digits" in not_a_pin.text


async def test_the_sixth_wrong_try_is_refused_unchecked_across_two_replicas(
    bus: Bus, start_gateway: StartGateway
) -> None:
    await publish(bus, auth_record())
    async with (
        start_gateway() as one,
        start_gateway() as two,
        client(one) as first,
        client(two) as second,
    ):
        statuses = [
            (await try_pin(first if n % 2 else second, "0000")).status_code for n in range(5)
        ]
        sixth = await try_pin(first, "0000")
        right_pin_while_locked = await try_pin(second, PIN)
        elsewhere = await try_pin(first, PIN, address="198.51.100.20")

    assert statuses == [401] * 5
    assert sixth.status_code == 429
    assert 1 <= int(sixth.headers["retry-after"]) <= 60
    assert "Try again in" in sixth.text
    # refused without checking: even the right PIN does not get in while locked
    assert right_pin_while_locked.status_code == 429
    assert "set-cookie" not in right_pin_while_locked.headers
    assert elsewhere.status_code == 303


async def test_a_pin_format_error_is_not_counted(bus: Bus, start_gateway: StartGateway) -> None:
    await publish(bus, auth_record())
    async with start_gateway(authgateway_max_failures=2) as app, client(app) as http:
        for _ in range(4):
            assert (await try_pin(http, "12")).status_code == 400
        assert (await try_pin(http, PIN)).status_code == 303


async def test_a_lockout_ends_and_then_doubles(bus: Bus, start_gateway: StartGateway) -> None:
    await publish(bus, auth_record())
    settings = {"authgateway_max_failures": 2, "authgateway_lockout": "1s"}
    async with start_gateway(**settings) as app, client(app) as http:
        assert [(await try_pin(http, "0000")).status_code for _ in range(2)] == [401, 401]
        assert (await try_pin(http, PIN)).status_code == 429
        await asyncio.sleep(1.1)
        assert [(await try_pin(http, "0000")).status_code for _ in range(2)] == [401, 401]
        again = await try_pin(http, PIN)
        assert again.status_code == 429 and int(again.headers["retry-after"]) == 2
        await asyncio.sleep(2.1)
        assert (await try_pin(http, PIN)).status_code == 303
        # a success forgets the address's record: two failures are allowed again
        assert [(await try_pin(http, "0000")).status_code for _ in range(1)] == [401]


async def test_many_failures_lock_the_whole_service(bus: Bus, start_gateway: StartGateway) -> None:
    await publish(bus, auth_record())
    settings = {"authgateway_service_max_failures": 3, "authgateway_max_failures": 5}
    async with start_gateway(**settings) as app, client(app) as http:
        for n in range(3):
            assert (await try_pin(http, "0000", address=f"192.0.2.{n}")).status_code == 401
        fresh = await try_pin(http, PIN, address="192.0.2.200")

    assert fresh.status_code == 429


async def test_logout_clears_the_cookie(bus: Bus, start_gateway: StartGateway) -> None:
    await publish(bus, auth_record())
    async with start_gateway() as app, client(app) as http:
        by_post = await http.post("/.heron/auth/logout", headers=edge())
        by_get = await http.get("/.heron/auth/logout", headers=edge())

    for response in (by_post, by_get):
        assert response.status_code == 200
        assert response.headers["set-cookie"] == (
            f"{SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=0"
        )
        assert "signed out" in response.text and "/.heron/auth/login" in response.text


async def test_return_paths_stay_on_the_site(bus: Bus, start_gateway: StartGateway) -> None:
    await publish(bus, auth_record())
    async with start_gateway() as app, client(app) as http:
        locations = []
        for rd in ("//evil.example", "https://evil.example/", "/\\evil.example", "/ok?x=1"):
            response = await http.post(
                "/.heron/auth/login",
                data={"method": "password", "password": PASSWORD, "rd": rd},
                headers=edge(),
            )
            locations.append(response.headers["location"])

    assert locations == ["/", "/", "/", "/ok?x=1"]


async def test_a_changed_session_version_gives_sessions_of_the_new_version(
    bus: Bus, start_gateway: StartGateway
) -> None:
    await publish(bus, auth_record(version="v1"))
    async with start_gateway() as app, client(app) as http:
        before = await try_pin(http, PIN)
        changed = auth_record(version="v2")
        await publish(bus, changed)
        await until_seen(app, changed)
        after = await try_pin(http, PIN)

    keys = await published_keys(bus)
    old, new = (verify_session(session_token(r), keys) for r in (before, after))
    assert (old.ver, new.ver) == ("v1", "v2")
    assert isinstance(new, SessionClaims) and new.admits("svc_one", DOMAIN, "v2") is None


async def test_health_and_escaping(bus: Bus, start_gateway: StartGateway) -> None:
    await publish(bus, auth_record())
    async with start_gateway() as app, client(app) as http:
        live = await http.get("/healthz/live")
        ready = await http.get("/healthz/ready")
        page = await http.get(
            "/.heron/auth/login", params={"rd": '/"><script>x</script>'}, headers=edge()
        )

    assert live.status_code == 200 and ready.json()["status"] == "ready"
    assert "<script>" not in page.text and "&lt;script&gt;" in page.text


async def test_nats_away_shows_a_503_page(bus: Bus, start_gateway: StartGateway) -> None:
    await publish(bus, auth_record())
    async with start_gateway() as app, client(app) as http:
        gateway: Gateway = app.state.gateway
        await gateway.backend().bus.close()
        started = time.monotonic()
        response = await try_pin(http, PIN)

    assert response.status_code == 503
    assert "Authentication service unavailable" in response.text
    assert time.monotonic() - started < 5
