"""Who may do what: one table from role to the actions it allows."""

from enum import StrEnum

from heron_core.types import Role


class Action(StrEnum):
    READ_SERVICES = "read_services"
    MANAGE_SERVICES = "manage_services"
    READ_NETWORK = "read_network"  # peers, setup keys, networks, resources, routers
    MANAGE_NETWORK = "manage_network"
    READ_USERS = "read_users"
    MANAGE_USERS = "manage_users"
    MANAGE_ALL_TOKENS = "manage_all_tokens"  # anyone may manage their own
    MANAGE_PROXY_TOKENS = "manage_proxy_tokens"  # edges' tokens: they decide what an edge serves


_READ = frozenset({Action.READ_SERVICES, Action.READ_NETWORK, Action.READ_USERS})
_NETWORK = _READ | {Action.MANAGE_SERVICES, Action.MANAGE_NETWORK}
_ADMIN = _NETWORK | {Action.MANAGE_USERS, Action.MANAGE_ALL_TOKENS, Action.MANAGE_PROXY_TOKENS}

ROLE_ACTIONS: dict[Role, frozenset[Action]] = {
    Role.OWNER: _ADMIN,
    Role.ADMIN: _ADMIN,
    Role.NETWORK_ADMIN: _NETWORK,
    Role.AUDITOR: _READ,
    Role.USER: frozenset(),
}


def allows(role: Role, action: Action) -> bool:
    return action in ROLE_ACTIONS[role]


def may_assign(actor: Role, role: Role) -> bool:
    """Only an owner makes or unmakes owners; admins manage everyone else."""
    return actor is Role.OWNER or (allows(actor, Action.MANAGE_USERS) and role is not Role.OWNER)
