"""Session tokens: what the auth gateway signs and every edge verifies (a wire **contract**).

A session is a compact JWS (a JWT) signed with Ed25519 — ``alg`` ``Ed25519``, the fully
specified name RFC 9864 gives EdDSA over Ed25519 — and a ``kid`` naming the gateway key in the
KV bucket ``auth_keys``. Its claims bind it to one service (``svc``), that service's domain
(``aud``), the service's auth settings as they were at login (``ver``: a change of password or
settings ends every session) and the method used (``amr``).

``sign_session`` and ``verify_session`` are the only places that know the token format; joserfc
does the JOSE work. ``SessionClaims.admits`` is the per-request check against the routing table.
"""

import base64
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OKPKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from heron_core.auth import SESSION_ISSUER, AuthMethod, SigningKeyRecord

#: the JWS algorithm of every session token
SESSION_ALG = "Ed25519"
#: clocks of the gateway and the edges may differ this much
CLOCK_SKEW_S = 60


class SessionError(Exception):
    """A token that must be refused; ``reason`` is a short word for logs and access records."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class SessionClaims(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    iss: str = SESSION_ISSUER
    #: who: the provider's subject for SSO; ``password-user``/``pin-user`` otherwise
    sub: str
    aud: str  # the service's domain
    svc: str  # the service's id
    ver: str  # the service's session version at login
    amr: AuthMethod
    iat: int
    nbf: int
    exp: int
    jti: str = Field(default_factory=lambda: secrets.token_urlsafe(12))
    email: str | None = None
    name: str | None = None
    groups: list[str] = Field(default_factory=list)

    def admits(self, service_id: str, domain: str, version: str) -> str | None:
        """None when this session opens ``service_id`` at ``domain`` with its current auth
        ``version``; else the reason it does not."""
        if self.svc != service_id or self.aud != domain:
            return "other_service"
        if self.ver != version:
            return "settings_changed"
        return None

    @property
    def user(self) -> str:
        """How the backend is told who this is (``X-Heron-User``)."""
        return self.email or self.sub


def new_claims(
    *,
    subject: str,
    domain: str,
    service_id: str,
    version: str,
    method: AuthMethod,
    lifetime_s: int,
    email: str | None = None,
    name: str | None = None,
    groups: Iterable[str] = (),
    now: float | None = None,
) -> SessionClaims:
    issued = int(time.time() if now is None else now)
    return SessionClaims(
        sub=subject, aud=domain, svc=service_id, ver=version, amr=method,
        iat=issued, nbf=issued, exp=issued + lifetime_s,
        email=email, name=name, groups=list(groups),
    )  # fmt: skip


@dataclass(frozen=True)
class SigningKey:
    """A gateway's private key and its ``kid``."""

    kid: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> "SigningKey":
        return cls(kid=secrets.token_urlsafe(9), private_key=Ed25519PrivateKey.generate())

    def record(self, *, created_at: datetime, expires_at: datetime) -> SigningKeyRecord:
        """What goes to ``auth_keys`` for this key."""
        raw = self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return SigningKeyRecord(
            kid=self.kid, public_key=base64.urlsafe_b64encode(raw).rstrip(b"=").decode(),
            created_at=created_at, expires_at=expires_at,
        )  # fmt: skip


def sign_session(claims: SessionClaims, key: SigningKey) -> str:
    jwk = OKPKey.import_key(key.private_key, parameters={"kid": key.kid})
    header = {"alg": SESSION_ALG, "kid": key.kid, "typ": "JWT"}
    return jwt.encode(
        header, claims.model_dump(mode="json", exclude_none=True), jwk, algorithms=[SESSION_ALG]
    )


class PublicKeys:
    """The verifying side's view of ``auth_keys``: kid → key, with each key's expiry."""

    def __init__(self, records: Iterable[SigningKeyRecord] = ()) -> None:
        self._keys: dict[str, tuple[KeySet, float]] = {}
        for record in records:
            self.add(record)

    def add(self, record: SigningKeyRecord) -> None:
        jwk = OKPKey.import_key(
            {"kty": "OKP", "crv": "Ed25519", "x": record.public_key, "kid": record.kid}
        )
        self._keys[record.kid] = (KeySet([jwk]), record.expires_at.timestamp())

    def remove(self, kid: str) -> None:
        self._keys.pop(kid, None)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, kid: str) -> tuple[KeySet, float] | None:
        return self._keys.get(kid)


def verify_session(token: str, keys: PublicKeys, *, now: float | None = None) -> SessionClaims:
    """The claims of a genuine, current session token; ``SessionError`` otherwise."""
    moment = time.time() if now is None else now
    kid = _kid_of(token)
    found = keys.get(kid)
    if found is None:
        raise SessionError("unknown_key", f"no signing key {kid!r}")
    keyset, key_expires = found
    if moment > key_expires:
        raise SessionError("key_expired", f"the signing key {kid!r} has expired")
    try:
        decoded = jwt.decode(token, keyset, algorithms=[SESSION_ALG])
    except JoseError as exc:
        raise SessionError("bad_signature", str(exc)) from exc
    return check_claims(decoded.claims, now=moment)


def check_claims(raw: Mapping[str, object], *, now: float) -> SessionClaims:
    try:
        claims = SessionClaims.model_validate(raw)
    except ValidationError as exc:
        raise SessionError("malformed", "the claims are not a Heron session") from exc
    if claims.iss != SESSION_ISSUER:
        raise SessionError("wrong_issuer", claims.iss)
    if now > claims.exp + CLOCK_SKEW_S:
        raise SessionError("expired")
    if now < claims.nbf - CLOCK_SKEW_S:
        raise SessionError("not_yet_valid")
    return claims


def _kid_of(token: str) -> str:
    head, sep, _ = token.partition(".")
    if not sep or len(token) > 8192:
        raise SessionError("malformed", "not a compact JWS")
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except ValueError as exc:
        raise SessionError("malformed", "the header is not base64url JSON") from exc
    if not isinstance(header, dict) or header.get("alg") != SESSION_ALG:
        raise SessionError("malformed", "not an Ed25519 session token")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise SessionError("malformed", "no kid")
    return kid
