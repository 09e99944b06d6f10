"""Small pure pieces: token format, permissions, port sharing."""

import random

from heron_core.types import Role, ServiceMode
from heron_management.domain.api_tokens import (
    TOKEN_CHARS,
    TOKEN_PREFIX,
    generate_token,
    token_hash,
    token_hint,
)
from heron_management.domain.permissions import Action, allows, may_assign
from heron_management.domain.ports import AUTO_PORT_RANGE, may_share_port, pick_free_port


def test_tokens_have_the_documented_shape_and_are_unique() -> None:
    tokens = {generate_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert len(token) == TOKEN_CHARS
        assert token.startswith(TOKEN_PREFIX)
        assert len(token_hash(token)) == 64
        assert token_hint(token).startswith(token[:8])
        assert token[8:] not in token_hint(token)


def test_only_network_admins_and_above_manage_services() -> None:
    managers = {role for role in Role if allows(role, Action.MANAGE_SERVICES)}
    assert managers == {Role.OWNER, Role.ADMIN, Role.NETWORK_ADMIN}
    assert allows(Role.AUDITOR, Action.READ_SERVICES)
    assert not allows(Role.USER, Action.READ_SERVICES)


def test_only_owners_make_owners() -> None:
    assert may_assign(Role.OWNER, Role.OWNER)
    assert not may_assign(Role.ADMIN, Role.OWNER)
    assert may_assign(Role.ADMIN, Role.AUDITOR)
    assert not may_assign(Role.NETWORK_ADMIN, Role.USER)


def test_port_sharing() -> None:
    assert may_share_port(ServiceMode.TLS, ServiceMode.TCP)
    assert may_share_port(ServiceMode.TLS, ServiceMode.TLS)
    assert may_share_port(ServiceMode.UDP, ServiceMode.TCP)
    assert not may_share_port(ServiceMode.TCP, ServiceMode.TCP)
    assert not may_share_port(ServiceMode.UDP, ServiceMode.UDP)


def test_pick_free_port_finds_the_last_free_one() -> None:
    last = AUTO_PORT_RANGE[-1]
    taken = set(AUTO_PORT_RANGE) - {last}
    assert pick_free_port(taken, random.Random(1)) == last
    assert pick_free_port(set(AUTO_PORT_RANGE)) is None
