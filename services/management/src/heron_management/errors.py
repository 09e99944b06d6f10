"""Management's exception tree; the API maps each class to one problem response (api/problems.py).

HeronError
 └── ManagementError
      ├── AuthenticationError     no or bad API token            → 401
      ├── PermissionDeniedError   the role may not do this       → 403
      ├── NotFoundError           no such object in this account → 404
      ├── ConflictError           a duplicate or a reference     → 409
      │    └── SupersededError    a newer stream took over        (gRPC only: ABORTED)
      ├── InvalidRequestError     a body that breaks a rule      → 422 (with per-field errors)
      ├── UnavailableError        lost too many races, or stopping: retry shortly → 503
      ├── ProtocolError           a stream's messages out of order (gRPC only: FAILED_PRECONDITION)
      │    └── AckTimeoutError    no ack for a batch in time      (gRPC only: DEADLINE_EXCEEDED)
      └── DnsLookupError          DNS did not answer a verification (shown as the custom domain's
                                  ``validation_reason``, never as a response)

gRPC calls map the same classes once, in ``grpc/call_context.py``.
"""

from dataclasses import dataclass

from heron_core.errors import HeronError


class ManagementError(HeronError):
    """Base of management's errors."""


class AuthenticationError(ManagementError):
    """The request carries no valid API token."""


class PermissionDeniedError(ManagementError):
    """The caller's role may not do this."""


class NotFoundError(ManagementError):
    """No such object in the caller's account (another account's objects look the same)."""

    def __init__(self, kind: str, object_id: str) -> None:
        super().__init__(f"{kind} {object_id!r} not found")
        self.kind = kind
        self.object_id = object_id


class ConflictError(ManagementError):
    """The change collides with existing state (a taken domain, a referenced object)."""


class SupersededError(ConflictError):
    """A newer config stream of the same peer or edge instance replaced this one."""


@dataclass(frozen=True)
class FieldProblem:
    """One broken rule: where in the body (as a JSON path of keys and indexes) and why."""

    loc: tuple[str | int, ...]
    message: str


class InvalidRequestError(ManagementError):
    """A well-formed body that breaks one or more of the model's rules."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, p.loc))}: {p.message}" for p in problems))
        self.problems = problems


class UnavailableError(ManagementError):
    """Try again shortly: concurrent changes kept winning, or management is shutting down."""


class ProtocolError(ManagementError):
    """A stream's peer broke the protocol (e.g. its first message was not a Hello)."""


class AckTimeoutError(ProtocolError):
    """An edge did not acknowledge a config batch in time."""


class DnsLookupError(ManagementError):
    """A DNS lookup got no usable answer (timeout, no server, refused); the message says why."""
