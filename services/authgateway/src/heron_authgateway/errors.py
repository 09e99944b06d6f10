"""The auth gateway's exceptions; ``app`` maps each to a page in one place.

HeronError
 └── AuthGatewayError
      ├── UnknownServiceError   no login-protected service has the request's service id (404)
      ├── NotReadyError         NATS not reached yet, or the services not read yet (503)
      └── AttemptsBusyError     the attempt counters kept changing under us (503)

``heron_bus.BusError`` (NATS away) is shown like ``NotReadyError``: "authentication service
unavailable".
"""

from heron_core.errors import HeronError


class AuthGatewayError(HeronError):
    """Base of the auth gateway's errors."""


class UnknownServiceError(AuthGatewayError):
    """The edge named a service with no browser login (or none at all)."""


class NotReadyError(AuthGatewayError):
    """The gateway cannot answer yet: NATS or the services' records are missing."""


class AttemptsBusyError(AuthGatewayError):
    """A compare-and-set on an attempt counter lost too many races in a row."""
