"""Authentication at the edge, piece by piece: cookies, header hygiene, the login redirect, the
session cache and the header-auth verifier (``heron_edge.http.auth``)."""

import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher

from heron_bus.kv import KvChange
from heron_core.auth import AuthMethod, SigningKeyRecord
from heron_core.sessions import SigningKey, new_claims, sign_session, verify_session
from heron_core.types import ServiceMode
from heron_edge.auth_keys import AuthKeyBook
from heron_edge.connector import StreamTarget
from heron_edge.http import auth as auth_module
from heron_edge.http.auth import (
    Admit,
    EdgeAuth,
    HeaderVerifier,
    Refusal,
    SessionCache,
    identity_headers,
    is_navigation,
    login_location,
    session_tokens,
)
from heron_edge.http.headers import request_head, without_cookie
from heron_edge.routes import HttpService, Route, RouteAuth, RouteTarget, http_service
from heron_edge.settings import gateway_target

DOMAIN = "app.example.test"
SERVICE = "svc_1"
VERSION = "v1"
#: cheap argon2id parameters: the verifier reads them from the hash
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def key_record(key: SigningKey, *, expires_in_s: float = 3600) -> SigningKeyRecord:
    now = datetime.now(UTC)
    return key.record(created_at=now, expires_at=now + timedelta(seconds=expires_in_s))


def token(
    key: SigningKey,
    *,
    service: str = SERVICE,
    domain: str = DOMAIN,
    version: str = VERSION,
    lifetime_s: int = 3600,
    now: float | None = None,
    method: AuthMethod = AuthMethod.PASSWORD,
    **extra: object,
) -> bytes:
    claims = new_claims(
        subject="password-user", domain=domain, service_id=service, version=version,
        method=method, lifetime_s=lifetime_s, now=now, **extra,  # type: ignore[arg-type]
    )  # fmt: skip
    return sign_session(claims, key).encode()


def service(
    *, password: bool = True, headers: tuple[tuple[str, str], ...] = (), version: str = VERSION
) -> HttpService:
    target = RouteTarget("t", StreamTarget("100.64.0.2", "", 80), "/", enabled=True)
    auth = RouteAuth(password=password, header_auths=headers, session_version=version)
    return http_service(Route(SERVICE, "acc", DOMAIN, ServiceMode.HTTP, 0, (target,), auth=auth))


# --- cookies and headers


def test_session_tokens_are_found_among_other_cookies_in_every_cookie_header() -> None:
    headers = [b"a=1; heron_session=tok1;b=2", b"x=y", b'heron_session="tok2"', b"heron_sessionx=3"]
    assert session_tokens(headers) == [b"tok1", b"tok2"]
    assert session_tokens([b"other=1"]) == []
    assert session_tokens([b"heron_session="]) == []


def test_the_session_cookie_is_removed_and_the_others_kept() -> None:
    assert without_cookie(b"a=1; heron_session=t; b=2", b"heron_session") == b"a=1; b=2"
    assert without_cookie(b"heron_session=t", b"heron_session") == b""
    assert without_cookie(b"a=1", b"heron_session") == b"a=1"
    assert without_cookie(b"heron_sessionx=1", b"heron_session") == b"heron_sessionx=1"


def _head(**kwargs: object) -> bytes:
    headers = [
        (b"x-heron-user", b"admin@evil"),
        (b"x-heron-groups", b"admins"),
        (b"x-heron-auth-method", b"sso"),
        (b"x-heron-service-id", b"svc_other"),
        (b"cookie", b"a=1; heron_session=secret; b=2"),
        (b"x-api-key", b"k"),
        (b"accept", b"*/*"),
    ]
    return request_head(
        b"GET", b"/", headers, host=b"t", client_ip="1.2.3.4", public_host=DOMAIN.encode(),
        public_port=443, chunked=False, upgrade=None, custom_headers=(),
        **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def test_client_identity_headers_never_reach_an_unprotected_target() -> None:
    head = _head()
    assert b"x-heron-" not in head
    assert b"cookie: a=1; heron_session=secret; b=2\r\n" in head  # unprotected: untouched
    assert b"x-api-key: k\r\n" in head


def test_a_protected_target_gets_no_session_cookie_no_auth_header_and_the_edges_identity() -> None:
    head = _head(
        drop=frozenset({b"x-api-key"}),
        strip_session=True,
        extra=((b"x-heron-auth-method", b"password"),),
    )
    assert b"heron_session" not in head and b"x-api-key" not in head
    assert b"cookie: a=1; b=2\r\n" in head
    assert head.count(b"x-heron-") == 1 and b"x-heron-auth-method: password\r\n" in head


def test_a_cookie_header_left_empty_is_dropped() -> None:
    head = request_head(
        b"GET", b"/", [(b"cookie", b"heron_session=s")], host=b"t", client_ip="1.2.3.4",
        public_host=b"d", public_port=443, chunked=False, upgrade=None, custom_headers=(),
        strip_session=True,
    )  # fmt: skip
    assert b"cookie" not in head


# --- the login redirect


@pytest.mark.parametrize(
    ("target", "location"),
    [
        (b"/", "/.heron/auth/login?rd=/"),
        (b"/a/b?x=1&y=%20z", "/.heron/auth/login?rd=/a/b%3Fx%3D1%26y%3D%2520z"),
        (b"//evil.example/x", "/.heron/auth/login?rd=/"),
        (b"/\\evil", "/.heron/auth/login?rd=/"),
        (b"/a#frag", "/.heron/auth/login?rd=/a%23frag"),
    ],
)
def test_the_login_redirect_carries_the_same_origin_path_and_query(
    target: bytes, location: str
) -> None:
    assert login_location(target) == location


def test_a_navigation_is_a_get_or_head_for_html_or_a_navigate_fetch() -> None:
    assert is_navigation(b"GET", b"text/html,application/xhtml+xml", b"")
    assert is_navigation(b"HEAD", b"", b"navigate")
    assert not is_navigation(b"POST", b"text/html", b"navigate")
    assert not is_navigation(b"GET", b"application/json", b"cors")


# --- sessions


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def cache(key: SigningKey) -> SessionCache:
    sessions = SessionCache()
    sessions.set_keys([key_record(key)])
    return sessions


def check(cache: SessionCache, tok: bytes, version: str = VERSION) -> Admit | str:
    return cache.check(tok, SERVICE, DOMAIN, version, time.time())


def test_a_valid_session_is_admitted_and_verified_once(
    cache: SessionCache, key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok = token(key)
    calls = []
    real = verify_session

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(auth_module, "verify_session", counting)
    for _ in range(3):
        outcome = check(cache, tok)
        assert isinstance(outcome, Admit)
        assert outcome.label == "password"
        assert outcome.extra == ((b"x-heron-auth-method", b"password"),)
    assert len(calls) == 1


def test_refused_sessions_say_why(cache: SessionCache, key: SigningKey) -> None:
    assert check(cache, token(key, now=time.time() - 7200)) == "expired"
    assert check(cache, token(key, service="svc_2")) == "other_service"
    assert check(cache, token(key, domain="other.example.test")) == "other_service"
    assert check(cache, token(key, version="v0")) == "settings_changed"
    assert check(cache, token(SigningKey.generate())) == "unknown_key"
    tampered = bytearray(token(key))
    tampered[-5] = ord("A") if tampered[-5] != ord("A") else ord("B")
    assert check(cache, bytes(tampered)) == "bad_signature"
    assert check(cache, b"not-a-token") == "malformed"


def test_a_cached_session_is_refused_once_the_version_changes_or_it_expires(
    cache: SessionCache, key: SigningKey
) -> None:
    tok = token(key, lifetime_s=10)
    assert isinstance(check(cache, tok), Admit)
    assert check(cache, tok, version="v2") == "settings_changed"
    later = time.time() + 10 + 61
    assert cache.check(tok, SERVICE, DOMAIN, VERSION, later) == "expired"


def test_new_keys_forget_cached_tokens(cache: SessionCache, key: SigningKey) -> None:
    other = SigningKey.generate()
    tok = token(other)
    assert check(cache, tok) == "unknown_key"
    cache.set_keys([key_record(key), key_record(other)])
    assert isinstance(check(cache, tok), Admit)
    cache.set_keys([key_record(key)])  # withdrawn: its sessions end
    assert check(cache, tok) == "unknown_key"


def test_expired_key_records_are_ignored(key: SigningKey) -> None:
    sessions = SessionCache()
    sessions.set_keys([key_record(key, expires_in_s=-1)])
    assert len(sessions.keys) == 0


def test_the_session_cache_is_bounded(key: SigningKey) -> None:
    sessions = SessionCache(size=3)
    sessions.set_keys([key_record(key)])
    for _ in range(5):
        assert isinstance(check(sessions, token(key)), Admit)
    assert len(sessions) == 3


def test_sso_identity_headers_leave_out_unsafe_values() -> None:
    claims = new_claims(
        subject="sub-1", domain=DOMAIN, service_id=SERVICE, version=VERSION,
        method=AuthMethod.SSO, lifetime_s=60, email="ann@example.test",
        groups=["dev", "a,b", "bad\nname", "ops"],
    )  # fmt: skip
    assert identity_headers(claims) == (
        (b"x-heron-auth-method", b"sso"),
        (b"x-heron-user", b"ann@example.test"),
        (b"x-heron-groups", b"dev,ops"),
    )
    bad_user = claims.model_copy(update={"email": "x\r\ny"})
    assert (b"x-heron-user", b"x\r\ny") not in identity_headers(bad_user)


# --- the whole check


async def run(outcome: Admit | Refusal | Awaitable[Admit | Refusal]) -> Admit | Refusal:
    if isinstance(outcome, Admit | Refusal):
        return outcome
    return await outcome


async def test_no_session_redirects_a_browser_and_refuses_a_script() -> None:
    edge = EdgeAuth()
    svc = service()
    html = [(b"accept", b"text/html")]
    browser = await run(edge.check(svc, html, b"GET", b"/x?y=1", "1.2.3.4"))
    assert isinstance(browser, Refusal)
    assert browser.status == 302 and browser.location == "/.heron/auth/login?rd=/x%3Fy%3D1"
    script = await run(edge.check(svc, [], b"GET", b"/x", "1.2.3.4"))
    assert isinstance(script, Refusal) and script.status == 401
    assert any(name == "www-authenticate" for name, _ in script.headers)
    post = await run(edge.check(svc, html, b"POST", b"/x", "1.2.3.4"))
    assert isinstance(post, Refusal) and post.status == 401


async def test_header_auth_right_wrong_missing_and_remembered() -> None:
    hashed = FAST.hash("s3cret")
    edge = EdgeAuth()
    svc = service(password=False, headers=(("x-api-key", hashed),))
    right = await run(edge.check(svc, [(b"x-api-key", b"s3cret")], b"GET", b"/", "1.2.3.4"))
    assert isinstance(right, Admit) and right.label == "header"
    wrong = await run(edge.check(svc, [(b"x-api-key", b"nope")], b"GET", b"/", "1.2.3.4"))
    assert isinstance(wrong, Refusal) and wrong.status == 401
    assert wrong.headers[0][1].startswith('Header realm="app.example.test"')
    missing = await run(edge.check(svc, [(b"accept", b"text/html")], b"GET", b"/", "1.2.3.4"))
    assert isinstance(missing, Refusal) and missing.status == 401  # no login page: no redirect
    assert edge.headers.verifications == 2
    # both answers are remembered: no argon2 run, and no awaiting
    assert isinstance(edge.check(svc, [(b"x-api-key", b"s3cret")], b"GET", b"/", "1.2.3.4"), Admit)
    assert isinstance(edge.check(svc, [(b"x-api-key", b"nope")], b"GET", b"/", "1.2.3.4"), Refusal)
    assert edge.headers.verifications == 2
    edge.close()


async def test_a_wrong_authorization_header_is_refused_with_a_bearer_challenge() -> None:
    edge = EdgeAuth()
    svc = service(headers=(("authorization", FAST.hash("Bearer good")),))
    wrong = await run(edge.check(svc, [(b"authorization", b"Bearer bad")], b"GET", b"/", "1.2.3.4"))
    assert isinstance(wrong, Refusal) and wrong.status == 401
    assert ("www-authenticate", 'Bearer realm="app.example.test"') in wrong.headers
    edge.close()


def test_header_verifications_per_client_are_capped() -> None:
    verifier = HeaderVerifier(client_rate=1.0, client_burst=2.0)
    now = 100.0
    assert verifier.allow("1.2.3.4", now)
    assert verifier.allow("1.2.3.4", now)
    assert not verifier.allow("1.2.3.4", now)
    assert verifier.allow("5.6.7.8", now)  # other addresses are not affected
    assert verifier.allow("1.2.3.4", now + 1.0)


async def test_a_flood_of_new_wrong_values_gets_429() -> None:
    edge = EdgeAuth(headers=HeaderVerifier(client_rate=0.001, client_burst=1.0))
    svc = service(password=False, headers=(("x-api-key", FAST.hash("right")),))
    first = await run(edge.check(svc, [(b"x-api-key", b"w1")], b"GET", b"/", "1.2.3.4"))
    assert isinstance(first, Refusal) and first.status == 401
    second = await run(edge.check(svc, [(b"x-api-key", b"w2")], b"GET", b"/", "1.2.3.4"))
    assert isinstance(second, Refusal) and second.status == 429
    edge.close()


# --- configuration


def test_route_auth_browser_login_and_header_names() -> None:
    svc = service(password=False, headers=(("x-api-key", "h1"), ("x-api-key", "h2")))
    assert svc.auth is not None and not svc.auth.browser_login
    assert svc.auth_headers == {b"x-api-key": ("h1", "h2")}
    assert svc.auth_strip == frozenset({b"x-api-key"})
    open_service = http_service(Route("s", "a", DOMAIN, ServiceMode.HTTP, 0, (), auth=RouteAuth()))
    assert open_service.auth is None


def test_the_gateway_url_becomes_a_direct_target() -> None:
    target = gateway_target("http://127.0.0.1:8081")
    assert (target.stream.host, target.stream.port) == ("127.0.0.1", 8081)
    with pytest.raises(ValueError, match="http"):
        gateway_target("ftp://x")


def test_the_key_book_publishes_current_records_and_refuses_garbage(key: SigningKey) -> None:
    published: list[tuple[SigningKeyRecord, ...]] = []
    book = AuthKeyBook(on_change=published.append)
    book.apply(KvChange(key.kid, key_record(key).encode()))
    book.apply(KvChange("old", key_record(SigningKey.generate(), expires_in_s=-5).encode()))
    book.apply(KvChange("bad", b"{not json"))
    assert [r.kid for r in published[-1]] == [key.kid]
    book.apply(KvChange(key.kid, None))
    assert published[-1] == ()
