"""Who is calling: resolved from the API token once per request."""

from dataclasses import dataclass

from heron_core.types import AccountId, Role, TokenId, UserId
from heron_management.domain.permissions import Action, allows
from heron_management.errors import PermissionDeniedError


@dataclass(frozen=True)
class Principal:
    account_id: AccountId
    user_id: UserId
    role: Role
    token_id: TokenId

    def may(self, action: Action) -> bool:
        return allows(self.role, action)

    def require(self, action: Action) -> None:
        if not self.may(action):
            raise PermissionDeniedError(
                f"role {self.role.value!r} may not {action.value.replace('_', ' ')}"
            )
