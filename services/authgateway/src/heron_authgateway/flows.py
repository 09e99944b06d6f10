"""Single sign-on state in the KV bucket ``auth_flows``, shared by the replicas: the login in
progress (``state.<state>``) and the one-time hand-off code (``code.<code>``).

Both are taken once: read, then deleted with the revision read — of two replicas (or a
replayed URL) racing for one, only one gets it. The bucket's TTL (10 min) drops what nobody
took; a hand-off code is good for ``HANDOFF_TTL_S`` only, checked from its own value.
"""

import re
import secrets
import time
from typing import ClassVar, TypeVar

from pydantic import Field

from heron_bus.bucket import Bucket
from heron_bus.kv import AUTH_FLOWS_TTL_S
from heron_core.kv import KvRecord
from heron_core.sessions import SessionClaims

#: the browser goes from the auth domain back to the service's domain within this
HANDOFF_TTL_S = 60.0
#: random bytes of a ``state`` or a hand-off code
TOKEN_BYTES = 32
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")


class _Stored(KvRecord):
    prefix: ClassVar[str]
    created: float = Field(default_factory=time.time)


_T = TypeVar("_T", bound=_Stored)


class SsoFlow(_Stored):
    """A login sent to the provider, waiting for its answer at the callback."""

    prefix: ClassVar[str] = "state"
    service_id: str
    domain: str
    #: ``https://<host[:port]>`` the browser used: where the hand-off goes back to
    origin: str
    rd: str
    nonce: str
    code_verifier: str
    #: ``binding_digest`` of the ``heron_sso`` cookie set in the browser that started it
    binding: str


class Handoff(_Stored):
    """A login the provider confirmed, to be turned into a cookie on the service's domain."""

    prefix: ClassVar[str] = "code"
    claims: SessionClaims
    rd: str
    #: the flow's ``binding``: only that browser may turn the code into a session
    binding: str


class Flows:
    def __init__(self, bucket: Bucket) -> None:
        self._bucket = bucket

    async def put(self, value: SsoFlow | Handoff) -> str:
        """Store ``value`` under a fresh random token; the token."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        await self._bucket.put(f"{value.prefix}.{token}", value.encode())
        return token

    async def take_flow(self, state: str) -> SsoFlow | None:
        return await self._take(SsoFlow, state, AUTH_FLOWS_TTL_S)

    async def take_handoff(self, code: str) -> Handoff | None:
        return await self._take(Handoff, code, HANDOFF_TTL_S)

    async def _take(self, kind: type[_T], token: str, ttl_s: float) -> _T | None:
        if not _TOKEN.fullmatch(token):
            return None
        key = f"{kind.prefix}.{token}"
        entry = await self._bucket.get(key)
        if entry is None or entry.value is None:
            return None
        if not await self._bucket.delete(key, entry.revision):
            return None  # someone took it first
        try:
            value = kind.decode(entry.value)
        except ValueError:
            return None
        if time.time() - value.created > ttl_s:
            return None
        return value
