"""Browser and machine authentication of HTTP services: the names every party agrees on (a wire
**contract** between management, the auth gateway and the edges).

The edge sends every request under ``AUTH_PATH_PREFIX`` on a service's own domain to the auth
gateway (and every request on the cluster's *auth domain*, where the one OIDC callback lives),
with ``SERVICE_ID_HEADER`` naming the service (client-sent copies removed) and the usual
``X-Forwarded-For``/``X-Forwarded-Host``/``X-Forwarded-Proto``. The gateway answers the login
page, checks passwords and PINs, runs the OIDC flow and sets ``SESSION_COOKIE``: a signed
session (``heron_core.sessions``) the edge verifies on every request with the public keys in
the KV bucket ``auth_keys`` — no call per request.

KV buckets (names in ``heron_bus.subjects``; JSON values below, each with a ``schema_version``):

- ``auth_keys`` (gateway → edges), key = ``kid``: a ``SigningKeyRecord``.
- ``auth_services`` (management → gateway), key = service id: a ``ServiceAuthRecord`` for each
  HTTP service with a password, PIN or SSO enabled; deleted when the service or its last
  browser method goes.
- ``auth_attempts`` (gateway's own): failed password/PIN attempts per (service, client address)
  and per service.
- ``auth_flows`` (gateway's own): OIDC ``state`` and one-time hand-off codes, short-lived.
"""

import base64
import hashlib
from datetime import datetime
from enum import StrEnum
from urllib.parse import urlsplit

from pydantic import Field

from heron_core.kv import KvRecord

#: the session cookie, scoped to the service's domain (``HttpOnly; Secure; SameSite=Lax``)
SESSION_COOKIE = "heron_session"
#: everything under this path on a service's domain belongs to the auth gateway
AUTH_PATH_PREFIX = "/.heron/auth/"
#: GET: the login page (``?rd=<return path>``); POST: a password or PIN form
LOGIN_PATH = "/.heron/auth/login"
#: GET or POST: ends the session (clears the cookie), then shows the login page
LOGOUT_PATH = "/.heron/auth/logout"
#: GET ``?rd=``: starts single sign-on (302 to the identity provider)
SSO_START_PATH = "/.heron/auth/sso"
#: the cluster's one OIDC redirect URI, on the auth domain
SSO_CALLBACK_PATH = "/.heron/auth/callback"
#: GET ``?code=<one-time code>`` on the service's domain: the SSO hand-off that sets the cookie
SESSION_HANDOFF_PATH = "/.heron/auth/session"
#: the query parameter carrying the path (and query) to return to after login
RETURN_PARAM = "rd"

#: edge → gateway: which service the request's domain belongs to
SERVICE_ID_HEADER = "x-heron-service-id"
#: edge → backend, after authentication (client-sent copies are always removed)
USER_HEADER = "x-heron-user"
GROUPS_HEADER = "x-heron-groups"
METHOD_HEADER = "x-heron-auth-method"
#: every header the edge removes from a client's request before it adds its own
IDENTITY_HEADERS = (USER_HEADER, GROUPS_HEADER, METHOD_HEADER, SERVICE_ID_HEADER)

#: the ``iss`` of every session token
SESSION_ISSUER = "heron-authgateway"


class AuthMethod(StrEnum):
    PASSWORD = "password"  # noqa: S105  (a method's name, not a secret)
    PIN = "pin"
    SSO = "sso"
    HEADER = "header"


class SigningKeyRecord(KvRecord):
    """A gateway's public session-signing key (bucket ``auth_keys``, key = ``kid``)."""

    kid: str
    alg: str = "Ed25519"
    #: the raw Ed25519 public key, base64url without padding
    public_key: str
    created_at: datetime
    #: a session signed with this key is refused after this moment, whatever its ``exp``
    expires_at: datetime

    def public_key_bytes(self) -> bytes:
        return base64.urlsafe_b64decode(self.public_key + "=" * (-len(self.public_key) % 4))


class ServiceAuthRecord(KvRecord):
    """What the gateway needs to log a user in to one service (bucket ``auth_services``,
    key = service id). Secrets only as argon2id PHC strings."""

    service_id: str
    account_id: str
    domain: str
    #: changes whenever the service's auth settings or secrets change; sessions carry it
    session_version: str
    password_hash: str | None = None
    pin_hash: str | None = None
    sso_enabled: bool = False
    #: SSO users must be in one of these groups; empty: any user the provider authenticates
    sso_groups: list[str] = Field(default_factory=list)

    @property
    def methods(self) -> list[AuthMethod]:
        """The browser methods enabled, in the order the login page offers them."""
        found = []
        if self.sso_enabled:
            found.append(AuthMethod.SSO)
        if self.password_hash is not None:
            found.append(AuthMethod.PASSWORD)
        if self.pin_hash is not None:
            found.append(AuthMethod.PIN)
        return found


def session_version(parts: object) -> str:
    """A short digest of a service's auth settings (any JSON-able description of them): equal
    settings give equal versions, any change a new one."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


MAX_RETURN_PATH_CHARS = 4096


def safe_return_path(value: str | None) -> str:
    """``value`` when it is a path on the same origin (``/x?y``), else ``/``: never a scheme, a
    host (``//evil``), a backslash browsers read as a slash, or a control character."""
    if not value or len(value) > MAX_RETURN_PATH_CHARS or not value.startswith("/"):
        return "/"
    if value.startswith(("//", "/\\")) or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "/"
    if "\\" in value.split("?", 1)[0]:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value
