"""Management's exception tree; the API maps each class to one problem response (api/problems.py).

HeronError
 └── ManagementError
      ├── AuthenticationError     no or bad API token            → 401
      ├── PermissionDeniedError   the role may not do this       → 403
      ├── NotFoundError           no such object in this account → 404
      ├── ConflictError           a duplicate or a reference     → 409
      └── InvalidRequestError     a body that breaks a rule      → 422 (with per-field errors)
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
