"""What the edge tells the gateway about a request (``Visit``), from the headers it sets.

The edge removes client-sent ``X-Heron-Service-Id`` and appends the client's address to
``X-Forwarded-For`` last: only the last value is the edge's word. The gateway listens on an
internal address only, so these headers are trusted.
"""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from heron_core.auth import SERVICE_ID_HEADER

#: what counts as a host[:port] the browser used; anything else is not echoed into a URL
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.:[]")


@dataclass(frozen=True)
class Visit:
    service_id: str
    #: the client's address, as the edge saw it
    client: str
    #: ``host[:port]`` the browser used (lowercase), "" when the edge sent none or a bad one
    host: str

    @property
    def hostname(self) -> str:
        """``host`` without its port."""
        if self.host.startswith("["):
            return self.host.partition("]")[0] + "]"
        return self.host.rpartition(":")[0] if ":" in self.host else self.host

    @property
    def origin(self) -> str:
        """The public origin the browser used: always https (the cookie is ``Secure``)."""
        return f"https://{self.host}"


def visit_of(request: Request) -> Visit:
    forwarded_for = request.headers.get("x-forwarded-for", "")
    client = forwarded_for.rsplit(",", 1)[-1].strip()
    if not client and request.client is not None:
        client = request.client.host
    host = request.headers.get("x-forwarded-host", "").strip().lower()
    if not host or len(host) > 300 or not set(host) <= _HOST_CHARS:
        host = ""
    return Visit(
        service_id=request.headers.get(SERVICE_ID_HEADER, "").strip(),
        client=client or "unknown",
        host=host,
    )


VisitDep = Annotated[Visit, Depends(visit_of)]
