"""OpenID Connect relying party: the authorization code flow with PKCE (S256), ``state`` and
``nonce`` against one issuer.

``OidcClient.authorization_url`` builds the URL a browser is sent to; ``OidcClient.finish`` turns
the code the provider sent back into an ``Identity``: it exchanges the code (with the PKCE
verifier and the client's secret), checks the ID token (signature against the provider's JWKS,
``iss``, ``aud``/``azp``, ``exp``/``iat``, ``nonce``) and takes the groups from the ID token's
groups claim, else from userinfo.

The discovery document is cached for ``DISCOVERY_TTL_S``; the JWKS is fetched again when an ID
token names a key it lacks (at most once per ``JWKS_MIN_REFRESH_S``), so key rotation at the
provider just works. Every failure is an ``OidcError`` whose ``reason`` is one short word a log
line can carry:

``insecure`` (an http:// issuer or endpoint without ``allow_http``), ``discovery``, ``issuer``
(the discovery document names another issuer), ``jwks``, ``token_exchange``, ``id_token``
(signature, algorithm, audience, expiry, malformed), ``nonce``, ``userinfo``.
"""

import asyncio
import base64
import hashlib
import json
import secrets
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeGuard, cast
from urllib.parse import quote_plus

import httpx
from joserfc import jws
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

#: how long a fetched discovery document is used before it is fetched again
DISCOVERY_TTL_S = 3600.0
#: an unknown ``kid`` fetches the JWKS again, but not more often than this
JWKS_MIN_REFRESH_S = 30.0
#: and so does a JWKS older than this: a key the provider withdrew stops being accepted
JWKS_MAX_AGE_S = 3600.0
#: the timeout of every HTTP request to the provider
HTTP_TIMEOUT_S = 10.0
#: clocks of the provider and the gateway may differ this much
LEEWAY_S = 60
#: the largest response (discovery, JWKS, token, userinfo) read from the provider
MAX_RESPONSE_BYTES = 1 << 20

_ASYMMETRIC_ALGS: dict[str, str] = {
    "RS256": "RSA", "RS384": "RSA", "RS512": "RSA",
    "PS256": "RSA", "PS384": "RSA", "PS512": "RSA",
    "ES256": "EC", "ES384": "EC", "ES512": "EC", "ES256K": "EC",
    "EdDSA": "OKP", "Ed25519": "OKP", "Ed448": "OKP",
}  # fmt: skip
_HMAC_ALGS = frozenset({"HS256", "HS384", "HS512"})

_Key: TypeAlias = RSAKey | ECKey | OKPKey | OctKey


@dataclass(frozen=True)
class Pkce:
    verifier: str
    challenge: str  # S256


def new_pkce() -> Pkce:
    """A fresh PKCE verifier (43 characters of base64url, 256 bits) and its S256 challenge."""
    verifier = secrets.token_urlsafe(32)
    return Pkce(verifier=verifier, challenge=_b64url(hashlib.sha256(verifier.encode()).digest()))


class OidcError(Exception):
    """The login cannot go on; ``reason`` is a short word for logs (see the module's doc)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Identity:
    subject: str
    email: str | None
    name: str | None
    groups: list[str]
    claims: dict[str, Any]


@dataclass(frozen=True)
class _Metadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    token_auth_methods: tuple[str, ...] | None
    id_token_algs: tuple[str, ...] | None


class OidcClient:
    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str,
        *,
        scopes: str = "openid email profile groups",
        groups_claim: str = "groups",
        http: httpx.AsyncClient | None = None,
        allow_http: bool = False,
    ) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self._client_secret = client_secret
        self.scopes = scopes
        self.groups_claim = groups_claim
        self._allow_http = allow_http
        self._check_url(issuer, "issuer")
        self._http = http or httpx.AsyncClient(timeout=HTTP_TIMEOUT_S)
        self._owns_http = http is None
        self._metadata: _Metadata | None = None
        self._metadata_at = 0.0
        self._metadata_lock = asyncio.Lock()
        self._keys: list[_Key] = []
        self._keys_at: float | None = None
        self._keys_lock = asyncio.Lock()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def authorization_url(
        self, *, redirect_uri: str, state: str, nonce: str, code_challenge: str
    ) -> str:
        """Where to send the browser to log in; the provider comes back to ``redirect_uri`` with
        ``code`` and ``state``."""
        metadata = await self._discover()
        return str(
            httpx.URL(metadata.authorization_endpoint).copy_merge_params(
                {
                    "response_type": "code",
                    "client_id": self.client_id,
                    "redirect_uri": redirect_uri,
                    "scope": self.scopes,
                    "state": state,
                    "nonce": nonce,
                    "code_challenge": code_challenge,
                    "code_challenge_method": "S256",
                }
            )
        )

    async def finish(
        self, *, code: str, redirect_uri: str, code_verifier: str, nonce: str
    ) -> Identity:
        """Exchange ``code`` and check what the provider answers: who logged in."""
        metadata = await self._discover()
        tokens = await self._exchange(metadata, code, redirect_uri, code_verifier)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise OidcError("token_exchange", "the token response has no id_token")
        claims = await self._check_id_token(metadata, id_token, nonce)
        access_token = tokens.get("access_token")
        wants_userinfo = self.groups_claim not in claims or "email" not in claims
        if wants_userinfo and metadata.userinfo_endpoint and isinstance(access_token, str):
            userinfo = await self._userinfo(metadata.userinfo_endpoint, access_token)
            if userinfo.get("sub") != claims["sub"]:
                raise OidcError("userinfo", "userinfo names another subject")
            claims = {**userinfo, **claims}
        email = claims.get("email")
        name = claims.get("name")
        return Identity(
            subject=claims["sub"],
            email=email if isinstance(email, str) and email else None,
            name=name if isinstance(name, str) and name else None,
            groups=_groups(claims.get(self.groups_claim)),
            claims=claims,
        )

    # --- discovery and keys ---

    def _check_url(self, url: str, what: str) -> None:
        scheme = httpx.URL(url).scheme
        if scheme == "https" or (scheme == "http" and self._allow_http):
            return
        raise OidcError("insecure", f"the {what} {url!r} is not https")

    async def _discover(self) -> _Metadata:
        if self._metadata is not None and time.monotonic() - self._metadata_at < DISCOVERY_TTL_S:
            return self._metadata
        async with self._metadata_lock:
            if (
                self._metadata is not None
                and time.monotonic() - self._metadata_at < DISCOVERY_TTL_S
            ):
                return self._metadata
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            try:
                document = await self._get_json(url, "discovery")
                metadata = self._parse_metadata(document)
            except OidcError:
                if self._metadata is not None:  # the provider is down: the old document will do
                    self._metadata_at = time.monotonic() - DISCOVERY_TTL_S + JWKS_MIN_REFRESH_S
                    return self._metadata
                raise
            self._metadata, self._metadata_at = metadata, time.monotonic()
            return metadata

    def _parse_metadata(self, document: Mapping[str, Any]) -> _Metadata:
        issuer = document.get("issuer")
        if not isinstance(issuer, str) or issuer.rstrip("/") != self.issuer.rstrip("/"):
            raise OidcError("issuer", f"the discovery document names the issuer {issuer!r}")
        endpoints: dict[str, str] = {}
        for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = document.get(field)
            if not isinstance(value, str) or not value:
                raise OidcError("discovery", f"the discovery document has no {field}")
            self._check_url(value, field)
            endpoints[field] = value
        userinfo = document.get("userinfo_endpoint")
        if isinstance(userinfo, str) and userinfo:
            self._check_url(userinfo, "userinfo_endpoint")
        else:
            userinfo = None
        return _Metadata(
            issuer=issuer,
            userinfo_endpoint=userinfo,
            token_auth_methods=_strings(document.get("token_endpoint_auth_methods_supported")),
            id_token_algs=_strings(document.get("id_token_signing_alg_values_supported")),
            **endpoints,
        )

    async def _signing_keys(self, metadata: _Metadata, kid: str | None) -> list[_Key]:
        """The provider's keys, fetched (again) when none is known yet, none is ``kid``, or
        they are older than ``JWKS_MAX_AGE_S``."""

        def known() -> bool:
            return (
                self._keys_at is not None
                and time.monotonic() - self._keys_at < JWKS_MAX_AGE_S
                and (kid is None or any(key.kid == kid for key in self._keys))
            )

        if known():
            return self._keys
        async with self._keys_lock:
            recently = (
                self._keys_at is not None and time.monotonic() - self._keys_at < JWKS_MIN_REFRESH_S
            )
            if not known() and not recently:
                document = await self._get_json(metadata.jwks_uri, "jwks")
                self._keys = _import_keys(document)
                self._keys_at = time.monotonic()
        return self._keys

    # --- the code exchange and the ID token ---

    async def _exchange(
        self, metadata: _Metadata, code: str, redirect_uri: str, code_verifier: str
    ) -> dict[str, Any]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        headers = {"Accept": "application/json"}
        methods = metadata.token_auth_methods
        if (
            methods is not None
            and "client_secret_basic" not in methods
            and ("client_secret_post" in methods)
        ):
            form |= {"client_id": self.client_id, "client_secret": self._client_secret}
        else:
            # RFC 6749 2.3.1: both are form-urlencoded before they are joined
            pair = f"{quote_plus(self.client_id)}:{quote_plus(self._client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        response = await self._request(
            "POST", metadata.token_endpoint, "token_exchange", data=form, headers=headers
        )
        body = _json_object(response, "token_exchange", require_ok=False)
        if response.status_code != 200:
            error = body.get("error", "")
            description = body.get("error_description", "")
            raise OidcError(
                "token_exchange", f"HTTP {response.status_code} {error}: {description}".strip()
            )
        return body

    async def _check_id_token(self, metadata: _Metadata, token: str, nonce: str) -> dict[str, Any]:
        header = _jose_header(token)
        alg = header.get("alg")
        kid = header.get("kid")
        if not isinstance(alg, str):
            raise OidcError("id_token", "the ID token has no alg")
        if kid is not None and not isinstance(kid, str):
            raise OidcError("id_token", "the ID token's kid is not a string")
        advertised = metadata.id_token_algs
        if advertised is not None and alg not in advertised:
            raise OidcError("id_token", f"the provider does not advertise the alg {alg!r}")
        if alg in _ASYMMETRIC_ALGS:
            keys = await self._signing_keys(metadata, kid)
            candidates: list[_Key] = [
                key
                for key in keys
                if key.key_type == _ASYMMETRIC_ALGS[alg]
                and (kid is None or key.kid == kid)
                and key.get("alg") in (None, alg)
                and key.get("use") in (None, "sig")
            ]
            if not candidates:
                raise OidcError("id_token", f"no key of the provider's JWKS is {kid!r} for {alg}")
        elif alg in _HMAC_ALGS and advertised and not set(advertised) & set(_ASYMMETRIC_ALGS):
            # only a provider that signs with nothing else may use the client secret
            candidates = [OctKey.import_key(self._client_secret.encode())]
        else:
            raise OidcError("id_token", f"the alg {alg!r} is not accepted")
        payload = _verify(token, candidates, alg)
        try:
            claims = json.loads(payload)
        except ValueError as exc:
            raise OidcError("id_token", "the ID token's payload is not JSON") from exc
        if not isinstance(claims, dict):
            raise OidcError("id_token", "the ID token's payload is not an object")
        self._check_claims(metadata, claims, nonce)
        return claims

    def _check_claims(self, metadata: _Metadata, claims: dict[str, Any], nonce: str) -> None:
        if claims.get("iss") != metadata.issuer:
            raise OidcError("id_token", f"the ID token's issuer is {claims.get('iss')!r}")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise OidcError("id_token", "the ID token has no subject")
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or self.client_id not in audiences:
            raise OidcError("id_token", "the ID token is not for this client (aud)")
        azp = claims.get("azp")
        if (len(audiences) > 1 or azp is not None) and azp != self.client_id:
            raise OidcError("id_token", "the ID token was issued to another party (azp)")
        now = time.time()
        expires, issued = claims.get("exp"), claims.get("iat")
        if not _is_number(expires) or not _is_number(issued):
            raise OidcError("id_token", "the ID token lacks exp or iat")
        if now > expires + LEEWAY_S:
            raise OidcError("id_token", "the ID token has expired")
        if issued > now + LEEWAY_S:
            raise OidcError("id_token", "the ID token was issued in the future")
        not_before = claims.get("nbf")
        if _is_number(not_before) and not_before > now + LEEWAY_S:
            raise OidcError("id_token", "the ID token is not yet valid")
        token_nonce = claims.get("nonce")
        if not isinstance(token_nonce, str) or not secrets.compare_digest(
            token_nonce.encode(), nonce.encode()
        ):
            raise OidcError("nonce", "the ID token's nonce is not the one of this login")

    async def _userinfo(self, url: str, access_token: str) -> dict[str, Any]:
        response = await self._request(
            "GET",
            url,
            "userinfo",
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        )
        if response.headers.get("content-type", "").startswith("application/jwt"):
            raise OidcError("userinfo", "signed userinfo responses are not supported")
        return _json_object(response, "userinfo")

    # --- HTTP ---

    async def _request(self, method: str, url: str, reason: str, **kwargs: Any) -> httpx.Response:
        try:
            async with self._http.stream(
                method, url, timeout=HTTP_TIMEOUT_S, follow_redirects=False, **kwargs
            ) as response:
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise OidcError(reason, f"the answer of {url} is too large")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise OidcError(reason, f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=b"".join(chunks),
            request=response.request,
        )

    async def _get_json(self, url: str, reason: str) -> dict[str, Any]:
        response = await self._request("GET", url, reason, headers={"Accept": "application/json"})
        return _json_object(response, reason)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json_object(
    response: httpx.Response, reason: str, *, require_ok: bool = True
) -> dict[str, Any]:
    if require_ok and response.status_code != 200:
        raise OidcError(reason, f"{response.request.url} answered HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError as exc:
        raise OidcError(
            reason, f"{response.request.url} answered HTTP {response.status_code}, not JSON"
        ) from exc
    if not isinstance(body, dict):
        raise OidcError(reason, f"{response.request.url} did not answer a JSON object")
    return cast("dict[str, Any]", body)


def _strings(value: object) -> tuple[str, ...] | None:
    if not isinstance(value, list):
        return None
    return tuple(item for item in value if isinstance(item, str))


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _groups(value: object) -> list[str]:
    """A groups claim as a list: a list of strings, or one string (one group)."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str) and item]
    return []


def _import_keys(document: Mapping[str, Any]) -> list[_Key]:
    """The signing keys of a JWKS; keys of unknown types or for encryption are skipped."""
    raw_keys = document.get("keys")
    if not isinstance(raw_keys, list):
        raise OidcError("jwks", "the JWKS has no keys")
    keys: list[_Key] = []
    importers: dict[str, type[RSAKey] | type[ECKey] | type[OKPKey]] = {
        "RSA": RSAKey, "EC": ECKey, "OKP": OKPKey,
    }  # fmt: skip
    for raw in raw_keys:
        if not isinstance(raw, dict) or raw.get("use") not in (None, "sig"):
            continue
        importer = importers.get(raw.get("kty", ""))
        if importer is None or "d" in raw:  # a private key has no business in a JWKS
            continue
        try:
            keys.append(importer.import_key(raw))
        except (JoseError, ValueError, TypeError):
            continue
    return keys


def _jose_header(token: str) -> dict[str, Any]:
    if token.count(".") != 2 or len(token) > 64 * 1024:
        raise OidcError("id_token", "the ID token is not a compact JWS")
    head = token.partition(".")[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except ValueError as exc:
        raise OidcError("id_token", "the ID token's header is not base64url JSON") from exc
    if not isinstance(header, dict):
        raise OidcError("id_token", "the ID token's header is not an object")
    if "crit" in header:
        raise OidcError("id_token", "the ID token has critical header parameters")
    return header


def _verify(token: str, candidates: list[_Key], alg: str) -> bytes:
    for key in candidates:
        try:
            with warnings.catch_warnings():
                # EdDSA, the name most providers still sign under, is deprecated by RFC 9864
                warnings.simplefilter("ignore", SecurityWarning)
                return jws.deserialize_compact(token, key, algorithms=[alg]).payload
        except (JoseError, ValueError):
            continue
    raise OidcError("id_token", "the ID token's signature does not verify")
