"""Authentication at the edge: who may reach a protected HTTP service's targets.

For a service whose ``RouteAuth`` enables any method, ``EdgeAuth.check`` runs once per request,
before the request is routed to a target, in this order (``docs/auth.md``):

1. **Header auths**: a configured header the request carries is verified against its argon2id
   hash. The hash is slow (tens of ms, 19 MiB) and never runs on the event loop: it runs in a
   small thread pool (``HASH_THREADS`` at once, at most ``MAX_PENDING_HASHES`` waiting), at most
   ``CLIENT_HASH_RATE`` per second and client address (a token bucket per address). A value that
   verified is remembered by SHA-256 of (hash, value) — a known value costs a dict lookup — and
   one that failed is remembered ``FAILURE_TTL_S``, so a flood of one wrong value burns no CPU.
   Right: the request goes on (``X-Heron-Auth-Method: header``); present and wrong: 401 at once.
2. **The session cookie** ``heron_session``: verified with the gateway's public keys
   (``verify_session``, about 0.5 ms) once per token, then kept (``SESSION_CACHE_SIZE`` tokens);
   every request checks the cached claims' expiry and ``admits`` (service, domain, session
   version) — a few comparisons. Refused tokens are remembered too (``FAILURE_TTL_S``).
3. Nothing valid: a service with a login page sends a browser navigation (302) to
   ``/.heron/auth/login?rd=<path and query>``; anything else gets 401 with
   ``WWW-Authenticate``.

``EdgeAuth`` is per data plane (one per worker process): the public keys arrive from the
control process, which watches the KV bucket ``auth_keys``.
"""

import asyncio
import base64
import concurrent.futures
import hashlib
import json
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from heron_core.auth import (
    GROUPS_HEADER,
    LOGIN_PATH,
    METHOD_HEADER,
    RETURN_PARAM,
    SESSION_COOKIE,
    USER_HEADER,
    AuthMethod,
    SigningKeyRecord,
    safe_return_path,
)
from heron_core.sessions import (
    CLOCK_SKEW_S,
    PublicKeys,
    SessionClaims,
    SessionError,
    verify_session,
)
from heron_edge.http.pages import page, text
from heron_edge.routes import HttpService, RouteTarget

log = structlog.get_logger(__name__)

#: argon2id verifications at once per worker (each takes ~19 MiB and a core for tens of ms)
HASH_THREADS = 2
#: verifications waiting for a thread; more get 503 at once
MAX_PENDING_HASHES = 64
#: verifications per second one client address may cause (bursts of ``CLIENT_HASH_BURST``)
CLIENT_HASH_RATE = 2.0
CLIENT_HASH_BURST = 10.0
#: client addresses whose token buckets are kept
MAX_CLIENT_BUCKETS = 10_000
#: known-good header values (by digest)
HEADER_CACHE_SIZE = 4096
#: known-wrong header values and refused session tokens are remembered this long, so many
FAILURE_TTL_S = 60.0
FAILURE_CACHE_SIZE = 10_000
#: verified session tokens kept
SESSION_CACHE_SIZE = 10_000
_SESSION_NAME: Final = SESSION_COOKIE.encode() + b"="

Header = tuple[bytes, bytes]


# --- what a check decides


@dataclass(frozen=True, slots=True)
class Admit:
    """The request goes on, with these identity headers added for the target."""

    extra: tuple[Header, ...]
    #: the access log's auth field: the method
    label: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """The edge answers the request itself."""

    status: int
    #: the access log's auth field: why (``no_session``, ``expired``, ``header_wrong``, …)
    reason: str
    title: str = ""
    detail: str = ""
    #: a redirect's target (302)
    location: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def render(self, *, keep_alive: bool, head_only: bool) -> bytes:
        if self.location is not None:
            return text(
                self.status,
                f"Log in at {self.location}\n",
                keep_alive=keep_alive,
                head_only=head_only,
                extra_headers=(("location", self.location), ("cache-control", "no-store")),
            )
        return page(
            self.status, self.title, self.detail,
            keep_alive=keep_alive, head_only=head_only, extra_headers=self.headers,
        )  # fmt: skip


Outcome = Admit | Refusal

HEADER_ADMIT = Admit(((METHOD_HEADER.encode(), AuthMethod.HEADER.value.encode()),), "header")


# --- request parsing helpers


def session_tokens(cookie_values: Iterable[bytes]) -> list[bytes]:
    """The values of every ``heron_session`` cookie in the request's ``Cookie`` header(s)."""
    found = []
    for value in cookie_values:
        if _SESSION_NAME not in value:
            continue
        for pair in value.split(b";"):
            name, sep, cookie = pair.strip().partition(b"=")
            if sep and name == _SESSION_NAME[:-1]:
                cookie = cookie.strip()
                if len(cookie) >= 2 and cookie[:1] == b'"' and cookie[-1:] == b'"':
                    cookie = cookie[1:-1]
                if cookie:
                    found.append(cookie)
    return found


def is_navigation(method: bytes, accept: bytes, fetch_mode: bytes) -> bool:
    """A browser loading a page (which a redirect to the login page helps), not a script."""
    if method not in (b"GET", b"HEAD"):
        return False
    return b"text/html" in accept.lower() or fetch_mode.strip().lower() == b"navigate"


def login_location(target: bytes) -> str:
    """``/.heron/auth/login?rd=<target>``: ``target`` (the request's path and query) percent-
    encoded, or ``/`` when it is not a same-origin path."""
    back = safe_return_path(target.decode("latin-1"))
    return f"{LOGIN_PATH}?{RETURN_PARAM}={quote(back, safe='/')}"


def _quoted_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def header_challenge(domain: str, header: str, presented: bytes = b"") -> str:
    """The ``WWW-Authenticate`` challenge for a header auth."""
    realm = _quoted_string(domain)
    if header == "authorization":
        scheme = "Basic" if presented[:6].lower() == b"basic " else "Bearer"
        return f"{scheme} realm={realm}"
    return f"Header realm={realm}, header={_quoted_string(header)}"


def _challenges(service: HttpService, presented: bytes = b"") -> tuple[tuple[str, str], ...]:
    domain = service.route.domain
    found = []
    if service.auth is not None and service.auth.browser_login:
        login = _quoted_string(LOGIN_PATH)
        found.append(("www-authenticate", f"Session realm={_quoted_string(domain)}, login={login}"))
    for name in service.auth_headers:
        found.append(("www-authenticate", header_challenge(domain, name.decode(), presented)))
    return tuple(found)


def identity_headers(claims: SessionClaims) -> tuple[Header, ...]:
    """What the target is told about a session: the method, and for SSO the user and groups
    (values with control characters are left out; so are group names with a comma)."""
    extra: list[Header] = [(METHOD_HEADER.encode(), claims.amr.value.encode())]
    if claims.amr is AuthMethod.SSO:
        user = claims.user
        if _printable(user):
            extra.append((USER_HEADER.encode(), user.encode()))
        groups = [g for g in claims.groups if _printable(g) and "," not in g]
        if groups:
            extra.append((GROUPS_HEADER.encode(), ",".join(groups).encode()))
    return tuple(extra)


def _printable(value: str) -> bool:
    """Non-empty, no control characters, and sendable in a header (UTF-8 is kept as bytes)."""
    return bool(value) and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)


# --- caches


class _Bounded(dict[bytes, object]):
    """A dict that forgets its oldest entry when it is full."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: bytes, value: object) -> None:
        if key not in self and len(self) >= self.size:
            del self[next(iter(self))]
        self[key] = value


@dataclass(slots=True)
class _Session:
    claims: SessionClaims
    #: after this moment (epoch s) the token is refused: its exp (with skew), or its key's expiry
    until: float
    admit: Admit


@dataclass(slots=True)
class _Failed:
    reason: str
    until: float


class SessionCache:
    """Verified session tokens → their claims; refused tokens → why, for ``FAILURE_TTL_S``."""

    def __init__(self, size: int = SESSION_CACHE_SIZE) -> None:
        self.keys = PublicKeys()
        self._good = _Bounded(size)
        self._bad = _Bounded(size)

    def __len__(self) -> int:
        return len(self._good)

    def set_keys(self, records: Iterable[SigningKeyRecord], now: float | None = None) -> None:
        """The current ``auth_keys`` (expired records are ignored); forgets every cached token,
        so a withdrawn key's sessions end and an unknown key's may now pass."""
        moment = time.time() if now is None else now
        self.keys = PublicKeys(r for r in records if r.expires_at.timestamp() > moment)
        self._good.clear()
        self._bad.clear()

    def check(
        self, token: bytes, service_id: str, domain: str, version: str, now: float
    ) -> Admit | str:
        """An ``Admit`` for a token that opens the service now; else the reason it does not."""
        entry = self._good.get(token)
        if entry is None:
            entry = self._bad.get(token)
            if entry is None or (isinstance(entry, _Failed) and now > entry.until):
                entry = self._verify(token, now)
        if isinstance(entry, _Failed):
            return entry.reason
        assert isinstance(entry, _Session)
        if now > entry.until:
            self._good.pop(token, None)
            return "expired"
        refused = entry.claims.admits(service_id, domain, version)
        return entry.admit if refused is None else refused

    def _verify(self, token: bytes, now: float) -> _Session | _Failed:
        try:
            claims = verify_session(token.decode("ascii"), self.keys, now=now)
        except (SessionError, UnicodeDecodeError) as exc:
            reason = exc.reason if isinstance(exc, SessionError) else "malformed"
            failed = _Failed(reason, now + FAILURE_TTL_S)
            self._bad.put(token, failed)
            return failed
        found = self.keys.get(_kid(token))
        key_expires = found[1] if found is not None else now
        session = _Session(
            claims,
            min(claims.exp + CLOCK_SKEW_S, key_expires),
            Admit(identity_headers(claims), claims.amr.value),
        )
        self._good.put(token, session)
        return session


def _kid(token: bytes) -> str:
    """The ``kid`` of a token ``verify_session`` accepted (so its header is sound)."""
    head = token.partition(b".")[0]
    header = json.loads(base64.urlsafe_b64decode(head + b"=" * (-len(head) % 4)))
    return str(header["kid"])


def _digest(hashed: str, value: bytes) -> bytes:
    return hashlib.sha256(hashed.encode() + b"\0" + value).digest()


class HeaderVerifier:
    """argon2id checks of header values, off the event loop, remembered both ways."""

    def __init__(
        self,
        *,
        threads: int = HASH_THREADS,
        max_pending: int = MAX_PENDING_HASHES,
        client_rate: float = CLIENT_HASH_RATE,
        client_burst: float = CLIENT_HASH_BURST,
    ) -> None:
        self._hasher = PasswordHasher()
        self._threads = threads
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._max_pending = max_pending
        self._rate = client_rate
        self._burst = client_burst
        self.good = _Bounded(HEADER_CACHE_SIZE)
        self.bad = _Bounded(FAILURE_CACHE_SIZE)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._inflight: dict[bytes, asyncio.Future[bool]] = {}
        #: argon2 verifications run (for tests and metrics)
        self.verifications = 0

    def known(self, hashed: str, value: bytes, now: float) -> bool | None:
        """True/False when the answer is remembered; None when it must be computed."""
        digest = _digest(hashed, value)
        if digest in self.good:
            return True
        failed = self.bad.get(digest)
        if isinstance(failed, float):
            if now <= failed:
                return False
            del self.bad[digest]
        return None

    def allow(self, client: str, now: float) -> bool:
        """Take one verification from ``client``'s token bucket."""
        tokens, stamp = self._buckets.get(client, (self._burst, now))
        tokens = min(self._burst, tokens + (now - stamp) * self._rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return False
        if client not in self._buckets and len(self._buckets) >= MAX_CLIENT_BUCKETS:
            del self._buckets[next(iter(self._buckets))]
        self._buckets[client] = (tokens - 1.0, now)
        return True

    @property
    def busy(self) -> bool:
        return len(self._inflight) >= self._max_pending

    def verify(self, hashed: str, value: bytes) -> "asyncio.Future[bool]":
        """The verification's result, computed in the thread pool (one per value at a time)."""
        digest = _digest(hashed, value)
        running = self._inflight.get(digest)
        if running is not None:
            return running
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                self._threads, thread_name_prefix="header-auth"
            )
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._check, hashed, value)
        self._inflight[digest] = future
        self.verifications += 1

        def remember(done: "asyncio.Future[bool]") -> None:
            self._inflight.pop(digest, None)
            if done.cancelled() or done.exception() is not None:
                return
            if done.result():
                self.good.put(digest, True)  # noqa: FBT003
            else:
                self.bad.put(digest, time.monotonic() + FAILURE_TTL_S)

        future.add_done_callback(remember)
        return future

    def _check(self, hashed: str, value: bytes) -> bool:
        try:
            return bool(self._hasher.verify(hashed, value))
        except VerificationError:
            return False
        except InvalidHashError:
            log.warning("a header auth's hash is not an argon2 PHC string; refusing its values")
            return False

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


# --- the whole check


@dataclass
class EdgeAuth:
    """One data plane's authentication state: the gateway to forward to, the keys, caches."""

    #: where ``/.heron/auth/*`` and the auth domain go (a direct connection); None: nowhere
    gateway: RouteTarget | None = None
    #: the cluster's auth domain (lower case); None: none
    auth_domain: str | None = None
    sessions: SessionCache = field(default_factory=SessionCache)
    headers: HeaderVerifier = field(default_factory=HeaderVerifier)

    def set_keys(self, records: Iterable[SigningKeyRecord]) -> None:
        self.sessions.set_keys(records)
        log.info("session keys updated", keys=len(self.sessions.keys))

    def close(self) -> None:
        self.headers.close()

    def check(
        self,
        service: HttpService,
        headers: Sequence[Header],
        method: bytes,
        target: bytes,
        client: str,
    ) -> Outcome | Awaitable[Outcome]:
        """What to do with a request to a protected service (``service.auth`` is set): admit,
        refuse, or — while a header value is being verified — an awaitable of either."""
        auth = service.auth
        assert auth is not None
        wanted = service.auth_headers
        cookies: list[bytes] = []
        presented: list[Header] = []
        accept = fetch_mode = b""
        for name, value in headers:
            if name == b"cookie":
                cookies.append(value)
            elif name in wanted:
                presented.append((name, value))
            elif name == b"accept":
                accept = value
            elif name == b"sec-fetch-mode":
                fetch_mode = value
        if presented:
            return self._check_headers(service, presented, client)
        reason = "no_session"
        if cookies and auth.browser_login:
            route = service.route
            now = time.time()
            for token in session_tokens(cookies):
                outcome = self.sessions.check(
                    token, route.id, route.domain, auth.session_version, now
                )
                if isinstance(outcome, Admit):
                    return outcome
                reason = outcome
        if not auth.browser_login:
            return Refusal(
                401, "no_credentials", "Authentication required",
                f"{service.route.domain} needs an API credential in a request header.",
                headers=_challenges(service),
            )  # fmt: skip
        if is_navigation(method, accept, fetch_mode):
            return Refusal(302, reason, location=login_location(target))
        return Refusal(
            401, reason, "Login required",
            f"{service.route.domain} needs you to log in at {LOGIN_PATH}.",
            headers=_challenges(service),
        )  # fmt: skip

    def _check_headers(
        self, service: HttpService, presented: list[Header], client: str
    ) -> Outcome | Awaitable[Outcome]:
        now = time.monotonic()
        wanted = service.auth_headers
        seen: set[bytes] = set()
        unknown: list[tuple[str, bytes]] = []
        for name, value in presented:
            if name in seen:  # the same credential twice: ambiguous, refused
                return self._header_refusal(service, presented, "header_repeated")
            seen.add(name)
            for hashed in wanted[name]:
                known = self.headers.known(hashed, value, now)
                if known:
                    return HEADER_ADMIT
                if known is None:
                    unknown.append((hashed, value))
        if not unknown:
            return self._header_refusal(service, presented, "header_wrong")
        if not self.headers.allow(client, now):
            return Refusal(
                429, "header_rate_limited", "Too many attempts",
                "Too many credentials were checked for your address; try again in a moment.",
                headers=(("retry-after", "1"),),
            )  # fmt: skip
        if self.headers.busy:
            return Refusal(
                503, "header_busy", "Service busy",
                "Too many credentials are being checked at the moment; try again shortly.",
                headers=(("retry-after", "1"),),
            )  # fmt: skip
        checks = [self.headers.verify(hashed, value) for hashed, value in unknown]
        return self._await_headers(service, presented, checks)

    async def _await_headers(
        self, service: HttpService, presented: list[Header], checks: list["asyncio.Future[bool]"]
    ) -> Outcome:
        for check in asyncio.as_completed(checks):
            if await check:
                return HEADER_ADMIT
        return self._header_refusal(service, presented, "header_wrong")

    def _header_refusal(
        self, service: HttpService, presented: list[Header], reason: str
    ) -> Refusal:
        names = ", ".join(sorted({name.decode("latin-1") for name, _ in presented}))
        return Refusal(
            401, reason, "Wrong credentials",
            f"The credential in {names} is not valid for {service.route.domain}.",
            headers=_challenges(service, presented[0][1]),
        )  # fmt: skip
