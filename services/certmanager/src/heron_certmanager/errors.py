"""The certmanager's exceptions; the acme library's and requests' errors become these once, in
``acme_client``.

HeronError
 └── CertmanagerError
      ├── OrderFailedError     no certificate came of an order; ``reason`` is the CA's words
      │    ├── RateLimitedError    the CA said "too many": ``retry_after`` is when it allows more
      │    └── CaUnreachableError  no answer from the CA (network, TLS, timeout)
      └── LeaseLostError       another replica took the domain's lease while this one worked
"""

from datetime import datetime

from heron_core.errors import HeronError


class CertmanagerError(HeronError):
    """Base of the certmanager's errors."""


class OrderFailedError(CertmanagerError):
    """An order that did not give a certificate; ``reason`` is for people (the API shows it).

    ``permanent``: the CA will not issue for this name whatever we do (e.g. a rejected
    identifier), so no automatic retry; ``retry_after``: the earliest the CA allows one.
    """

    def __init__(
        self, reason: str, *, permanent: bool = False, retry_after: datetime | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after = retry_after


class RateLimitedError(OrderFailedError):
    """The CA's ``rateLimited`` problem; its ``Retry-After`` is honoured."""


class CaUnreachableError(OrderFailedError):
    """The CA did not answer (connection, TLS, timeout); nothing was decided about the name."""


class LeaseLostError(CertmanagerError):
    """The lease on a domain expired or went to another replica mid-order."""
